# The two commands of the README's quick start, and the steps they share.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast pytest-fast lint lit pytest bench clean aot-check aot-test

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

# The torch that .venv was made with, recorded as a stamp named by a hash of it: a
# different TORCH (or TORCH_VERSION) on a later `make` reinstalls, and `make -n`
# shows that without running anything.
TORCH_SPEC := $(if $(strip $(TORCH)),$(strip $(TORCH)),torch==$(TORCH_VERSION) (default))
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)

$(TORCH_STAMP):
	@mkdir -p $(VENV) && rm -f $(VENV)/.torch-* && printf '%s\n' '$(TORCH_SPEC)' > $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
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

# lint first: a finding fails in seconds, before ten minutes of tests.
test: lint pytest lit aot-test

# The edit-run loop, about 2.5 minutes on 2 cores: lint, then side by side the
# tests not marked slow (tests/conftest.py's SLOW_FILES, SLOW_TESTS and
# FAST_CASES leave out whole tools and other frameworks, fresh processes, big
# shapes, many compiles, and all but one case of each heavily parametrized
# test) and lit (about 1.5 minutes on its own), each one's output shown whole
# when it ends. `make test` runs them all.
test-fast: lint
	@$(MAKE) --no-print-directory -j2 --output-sync=target pytest-fast lit

pytest-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m 'not slow' tests

# ruff, configured in pyproject.toml ([tool.ruff]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

pytest: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

lit: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/lit -sv tests/lit

bench: $(STAMP)
	$(VENV)/bin/python tools/bench.py

# Compiling for TPUs and NVIDIA GPUs without them (README: "Compiled ahead of
# time for TPUs and GPUs"), in a venv of its own: the compilers (libtpu, the
# CUDA plugin, nvcc, nvJitLink; about 2 GB) are nothing the main install needs.
# They are pinned to the jax in use, .venv's (else pyproject's lowest): a
# plugin built for another jax does not load. JAX_VERSION=... overrides it.
# AOT_ARGS are tools/aot_check.py's flags, e.g. AOT_ARGS='--targets tpu-v5e,h100'.
AOT_VENV := .venv-aot
AOT_STAMP := $(AOT_VENV)/.installed
JAX_VERSION ?=
AOT_ARGS ?=

$(AOT_STAMP): pyproject.toml $(wildcard $(STAMP))
	@v='$(JAX_VERSION)'; \
	if [ -z "$$v" ] && [ -x $(VENV)/bin/python ]; then \
	  v=$$($(VENV)/bin/python -c 'import importlib.metadata as m; print(m.version("jax"))'); fi; \
	if [ -z "$$v" ]; then v=$$(sed -n 's/.*"jax>=\([0-9.]*\).*/\1/p' pyproject.toml); fi; \
	echo "$(AOT_VENV): jax $$v with libtpu and the CUDA 12 plugin"; \
	set -e; $(PYTHON) -m venv $(AOT_VENV); \
	$(AOT_VENV)/bin/pip install --quiet --upgrade pip; \
	$(AOT_VENV)/bin/pip install --quiet -e . "jax[tpu]==$$v" "jaxlib==$$v" \
	  "jax-cuda12-plugin==$$v" "jax-cuda12-pjrt==$$v" nvidia-cuda-nvcc-cu12 \
	  nvidia-nvjitlink-cu12 pytest; \
	echo "$$v" > $(AOT_STAMP)

aot-check: $(AOT_STAMP)
	JAX_PLATFORMS=cpu $(AOT_VENV)/bin/python tools/aot_check.py $(AOT_ARGS)

# The slice of the matrix `make test` runs (tests/aot: its own conftest, not
# tests/conftest.py, whose test extras .venv-aot does not have); the whole
# matrix is `-m slow` there, or `make aot-check`.
aot-test: $(AOT_STAMP)
	JAX_PLATFORMS=cpu $(AOT_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  --confcutdir=tests/aot -m 'not slow' tests/aot

clean:
	rm -rf $(VENV) $(AOT_VENV) tests/lit/Output
