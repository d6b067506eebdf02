# Two commands on a fresh machine:  `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,train]'
	touch $@ $(VENV)/.installed

## demo: enhance a generated radiograph-like phantom and write a figure of its three maps
demo: $(VENV)/.installed
	$(BIN)/phasefeat enhance --output $(OUT)/enh-demo.png

## test: lint, then the whole test suite (GPU tests are skipped without a GPU; installs TensorFlow CPU)
test: $(VENV)/.installed-test
	$(BIN)/ruff check phasefeat trainer benchmarks tests
	$(BIN)/python -m pytest

## lint: style checks only
lint: $(VENV)/.installed-test
	$(BIN)/ruff check phasefeat trainer benchmarks tests

## bench: CPU (and, with a GPU, CuPy) feature-extraction throughput
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_features.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
