# Two commands on a fresh machine:  `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out
# make demo DATA=path/to/raw uses your own radiographs (class folders) instead of phantoms.
DATA ?=
DEMO_DIR ?= $(OUT)/demo
DEMO_PER_CLASS ?= 100
DEMO_SIZE ?= 128
# Extra `phasefeat convert` options, e.g. DEMO_CONVERT="--features-at 128" (features at the stored size).
DEMO_CONVERT ?=
DEMO_TRAIN ?= --width 0.125 --epochs 30 --patience 8 --learning-rate 0.0001 --batch-size 16 --repeats 3

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-train: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,train]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-train

## demo: phantoms (or DATA=...) -> convert -> preview -> CXR/ENH x CCE/SCCE comparison -> report
demo: $(VENV)/.installed-train
	@set -e; raw="$(DATA)"; mkdir -p "$(DEMO_DIR)"; \
	if [ -z "$$raw" ]; then raw="$(DEMO_DIR)/raw"; \
	  $(BIN)/phasefeat demo-data "$$raw" --per-class $(DEMO_PER_CLASS) --seed 0; fi; \
	if [ -f "$(DEMO_DIR)/enh.h5" ]; then echo "reusing $(DEMO_DIR)/enh.h5 (delete it to convert again)"; \
	else $(BIN)/phasefeat convert "$$raw" "$(DEMO_DIR)/enh.h5" --size $(DEMO_SIZE) $(DEMO_CONVERT); fi; \
	$(BIN)/phasefeat enhance --output "$(DEMO_DIR)/enh-phantom.png" --backend auto; \
	$(BIN)/phasefeat preview "$(DEMO_DIR)/enh.h5" -o "$(DEMO_DIR)/preview.png" --per-class 2; \
	$(BIN)/trainer compare --store "$(DEMO_DIR)/enh.h5" $(DEMO_TRAIN) --out "$(DEMO_DIR)/results"; \
	echo; echo "Done. Look at:"; \
	echo "  $(DEMO_DIR)/preview.png          samples of each class: CXR, LwPA, LPE, ELEA, composite"; \
	echo "  $(DEMO_DIR)/results/report.md    tables, paired comparisons, bit-identity finding"; \
	echo "  $(DEMO_DIR)/results/*.png        learning curves, confusion matrices, per-seed losses"

## test: lint, then the whole test suite (GPU tests are skipped without a GPU; installs TensorFlow CPU)
test: $(VENV)/.installed-test
	$(BIN)/ruff check phasefeat trainer benchmarks tests docs
	$(BIN)/python -m pytest

## lint: style checks only
lint: $(VENV)/.installed-test
	$(BIN)/ruff check phasefeat trainer benchmarks tests docs

## bench: CPU (and, with a GPU, CuPy) feature-extraction throughput
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_features.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
