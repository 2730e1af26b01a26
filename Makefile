# ecgedge developer targets. `make demo` and `make test` install into $(VENV) themselves (the README's two commands).
# Data and weights: ../shared next to the checkout when it exists (as on CI), else whatever
# ECGEDGE_DATA / ECGEDGE_WEIGHTS say, else ~/.cache/ecgedge.

SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
ECGEDGE := $(VENV)/bin/ecgedge
SHARED := $(abspath ../shared)

ifneq ($(wildcard $(SHARED)/data/physionet),)
export ECGEDGE_DATA ?= $(SHARED)/data/physionet
endif
ifneq ($(wildcard $(SHARED)/weights/imagenet),)
export ECGEDGE_WEIGHTS ?= $(SHARED)/weights/imagenet
endif
export MPLBACKEND ?= Agg
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-all demo bench clean

$(PYTHON):
	python3 -m venv $(VENV)

# Installed once per change of pyproject.toml; `make demo` and `make test` do it themselves.
$(VENV)/.installed: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The default suite: everything but the minutes-long tests marked slow.
test: install
	$(PYTHON) -m pytest -m "not slow" -q

test-all: install
	$(PYTHON) -m pytest -q

# The main job: data -> train -> convert -> device eval -> report, into runs/demo.
demo: install
	$(ECGEDGE) pipeline --task multidb-rhythm5 --out runs/demo

# Benchmarks are run on purpose, not as tests; pass options with BENCH_ARGS="...".
bench: install
	$(ECGEDGE) bench $(BENCH_ARGS)

clean:
	rm -rf build dist .pytest_cache .hypothesis runs/demo
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
