# The two commands of the README's quick start, and the steps they share.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lit pytest bench clean

# The test extra needs torch, whose default wheel on PyPI pulls ~5 GB of CUDA
# libraries. So torch $(TORCH_VERSION), CPU build, goes in first, and the extra's
# range then installs nothing more: a wheel pip finds without an index (its
# find-links: these machines carry one on disk) if there is one, else from
# PyTorch's own CPU wheel index. TORCH overrides both with pip arguments of your
# own, e.g. TORCH='torch==2.14.1 --index-url $(TORCH_CPU_INDEX)', or TORCH=torch
# for PyPI's default (CUDA) wheel.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH ?=
PIP := $(VENV)/bin/pip

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
ifeq ($(strip $(TORCH)),)
	@if $(PIP) install --quiet --no-index --no-deps 'torch==$(TORCH_VERSION)' 2>/dev/null; then \
	  echo "torch $(TORCH_VERSION): a local wheel"; \
	  $(PIP) install --quiet 'torch==$(TORCH_VERSION)'; \
	else \
	  echo "torch $(TORCH_VERSION): no local wheel; the CPU build from $(TORCH_CPU_INDEX)"; \
	  $(PIP) install --quiet 'torch==$(TORCH_VERSION)' --index-url $(TORCH_CPU_INDEX); \
	fi
else
	$(PIP) install --quiet $(TORCH)
endif
	$(PIP) install --quiet -e '.[test,tools]'
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
