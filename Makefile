# One-command entry points.  `make test` is what CI runs (.ci/run).
#   make venv         create .venv and install the pinned environment (reruns when pyproject.toml changes)
#   make test         run the test suite
#   make reproduce    regenerate every figure and table (profile cpu) into figures/cpu and reports/cpu,
#                     two notebooks at once (--lanes 2, one thread each)
#   make verify       regenerate every cpu output into a scratch folder and compare it with the committed one
#   make tiny         the same with the seconds-long tiny profile (figures/tiny, reports/tiny)
#   make notebooks    re-execute the committed notebooks in place (their tiny outputs, checked by nbval)
#   make clean-cache  delete the config-keyed artifact cache (models, samples, features)
#
# torch is installed first and on its own so that pip settles on the CPU wheel
# before anything else pulls a torch in.  Where the default index serves the
# CUDA build (plain PyPI on Linux), ask for the CPU one explicitly:
#   make venv TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX_URL ?=
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
CACHE_DIR ?= $(or $(PROVLIB_CACHE_DIR),.cache)

.PHONY: venv test reproduce verify tiny notebooks clean-cache

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0
	$(PIP) install -e ".[test]"
	touch $@

test: venv
	$(PY) -m pytest

reproduce: venv
	$(PY) -m provlib.batch --profile cpu --lanes 2

verify: venv
	$(PY) -m provlib.check --profile cpu --lanes 2

tiny: venv
	$(PY) -m provlib.batch --profile tiny

notebooks: venv
	$(PY) scripts/refresh_notebooks.py

clean-cache:
	rm -rf -- "$(CACHE_DIR)"
