# The two commands of the README's quick start, and the steps they share.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lit pytest bench clean

# The test extra needs torch; its default wheel pulls ~5 GB of CUDA libraries.
# These machines carry a CPU build of 2.13.0 that pip takes from disk: install
# it first, and the extra's range then installs nothing more. Elsewhere, point
# TORCH at a CPU wheel or index (e.g. TORCH='torch --index-url URL').
TORCH ?= torch==2.13.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH)
	$(VENV)/bin/pip install --quiet -e '.[test,tools]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python tools/demo.py

test: pytest lit

pytest: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

lit: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/lit -sv tests/lit

bench: $(STAMP)
	$(VENV)/bin/python tools/bench.py

clean:
	rm -rf $(VENV) tests/lit/Output
