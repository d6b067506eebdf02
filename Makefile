# Two commands on a fresh machine:  `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out
# make demo DATA=path/to/raw uses your own radiographs (class folders) instead of phantoms, in a folder
# of its own (named after DATA's name and full path): another DATA never reuses another input's store.
DATA ?=
# Extra pytest options for make test, e.g. PYTEST_ARGS="-x -k checkpoint".
PYTEST_ARGS ?=
# make test runs the suite in this many processes (pytest-xdist; 0: in one process). By default one more than
# the cores: while a process waits on a child, a socket or a timer, the others keep every core busy.
TEST_PROCESSES ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
PARALLEL = -n $(TEST_PROCESSES) --dist loadgroup
# With DATA: a regular expression whose first group is each file's source (hospital, archive), e.g.
# DEMO_SOURCES='^[^/]+/([a-z]+)_' for names like covid/ieee_1.png; without it the audit cannot probe or
# hold out a source.
DEMO_SOURCES ?=
# With DATA: a regular expression whose first group is each file's patient id (e.g. '(person[0-9]+)_'), and/or
# a label file (CSV path,label[,patient_id][,source] or COVIDx) instead of class folders.
DEMO_PATIENTS ?=
DEMO_LABELS ?=
DEMO_DIR ?= $(OUT)/demo$(if $(DATA),-$(notdir $(abspath $(DATA)))-$(shell printf '%s' '$(abspath $(DATA))' | cksum | cut -d' ' -f1))
DEMO_PER_CLASS ?= 60
DEMO_SIZE ?= 64
# Extra `phasefeat convert` options, e.g. DEMO_CONVERT="--features-at 64" (features at the stored size).
DEMO_CONVERT ?=
DEMO_TRAIN ?= --width 0.125 --epochs 15 --patience 5 --learning-rate 0.0003 --batch-size 8 --repeats 2
# The audit's occlusion curve at 2 sizes (0.6: the lung edges show; 0.9: no lung) keeps the demo short.
DEMO_AUDIT ?= --audit --occlude-fractions 0.6,0.9
SITES := '^[^/]+/(site[a-z])_'
DEMO_SOURCE_ARGS = $(if $(DATA),$(if $(DEMO_SOURCES),--source-pattern '$(DEMO_SOURCES)'),--source-pattern $(SITES))
DEMO_ID_ARGS = $(if $(DEMO_PATIENTS),--patient-pattern '$(DEMO_PATIENTS)') $(if $(DEMO_LABELS),--labels '$(DEMO_LABELS)')

.DEFAULT_GOAL := help
.PHONY: help install demo test test-phantoms lint bench gpu-check mutate clean distclean

## help: list the targets (this text)
help:
	@echo "make targets:"
	@sed -n 's/^## /  /p' $(MAKEFILE_LIST)

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
	$(BIN)/python -m pip install --quiet -e '.[test,train,torch,jax]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-train

## install: create .venv with everything the commands, tests and benchmarks need (no tests run)
install: $(VENV)/.installed-test

## demo: phantoms with a planted site shortcut (or DATA=...) -> convert -> preview -> CXR/ENH x CCE/SCCE
##       comparison with the shortcut audit -> report (about 5 min on 2 CPU cores after the install)
demo: $(VENV)/.installed-train
	@set -e; raw="$(DATA)"; set -- $(DEMO_SOURCE_ARGS) $(DEMO_ID_ARGS); \
	if [ -n "$$raw" ] && [ ! -d "$$raw" ]; then echo "make demo: DATA=$$raw is not a folder" >&2; exit 2; fi; \
	if [ -z "$$raw" ]; then echo "make demo: 180 phantoms; it took 8.8 min after the install on a quiet 2-core VM" \
	  "(benchmarks/results/setup-cpu.json); more where other work shares the machine; a rerun reuses what is done"; \
	else echo "make demo: $$(find "$$raw" -type f ! -path '*/masks/*' ! -name '.*' | wc -l | tr -d ' ') files in" \
	  "$$raw; the conversion's bar estimates its time once the first images are done, the grid after its first" \
	  "run (the first image and the first epoch include start-up)"; fi; \
	mkdir -p "$(DEMO_DIR)"; \
	if [ -z "$$raw" ]; then raw="$(DEMO_DIR)/raw"; \
	  $(BIN)/phasefeat demo-data "$$raw" --per-class $(DEMO_PER_CLASS) --seed 0 --shortcut; fi; \
	$(if $(DATA),$(if $(DEMO_SOURCES),,echo "note: no sources recorded for $$raw (set DEMO_SOURCES='REGEX', e.g."\
	  "'^[^/]+/([a-z]+)_'): the audit can black out the lungs but cannot probe or hold out a source";)) \
	echo "make demo: input $$raw, everything in $(DEMO_DIR)/"; \
	if [ -f "$(DEMO_DIR)/enh.h5" ]; then echo "reusing $(DEMO_DIR)/enh.h5 (delete it to convert again)"; \
	else $(BIN)/phasefeat convert "$$raw" "$(DEMO_DIR)/enh.h5" --size $(DEMO_SIZE) "$$@" $(DEMO_CONVERT); fi; \
	$(BIN)/phasefeat preview "$(DEMO_DIR)/enh.h5" -o "$(DEMO_DIR)/preview.png" --per-class 2; \
	$(BIN)/phasefeat inspect "$(DEMO_DIR)/enh.h5" --html "$(DEMO_DIR)/card.html" > /dev/null; \
	$(BIN)/trainer compare --store "$(DEMO_DIR)/enh.h5" $(DEMO_TRAIN) $(DEMO_AUDIT) --out "$(DEMO_DIR)/results"; \
	echo; echo "Done. Look at:"; \
	if [ -z "$(DATA)" ]; then echo "  $(DEMO_DIR)/raw/                   the synthetic phantoms (README.txt says what they are)"; fi; \
	echo "  $(DEMO_DIR)/enh.h5               the store (phasefeat inspect $(DEMO_DIR)/enh.h5)"; \
	echo "  $(DEMO_DIR)/card.html            the store card: look at the data before the results (a browser)"; \
	echo "  $(DEMO_DIR)/preview.png          samples of each class: CXR, the three ENH maps, composite"; \
	echo "  $(DEMO_DIR)/results/report.md    tables, paired comparisons, bit identity, shortcut audit"; \
	echo "  $(DEMO_DIR)/results/report.html  the same report with its figures, for a browser"; \
	echo "  $(DEMO_DIR)/results/*.png        learning curves, confusion matrices, per-seed losses, ROC"; \
	echo "  $(DEMO_DIR)/results/runs.csv, results.json, split.json; audit/audit.md, audit.json; runs/"

## test: lint, then the whole test suite (GPU tests are skipped without a GPU; installs TensorFlow CPU,
##       torch CPU, MONAI and JAX CPU)
# Both pytest steps always run (test_torch.py in a process of its own: torch's Triton and TensorFlow cannot
# share one); the target fails if either failed. The first runs in TEST_PROCESSES processes (pytest-xdist):
# tests that share a changed fixture or a module's fixture stay in one process (tests/conftest.py).
test: $(VENV)/.installed-test
	$(BIN)/ruff check phasefeat trainer benchmarks tests docs
	@failed=""; \
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS) --ignore=tests/test_torch.py || failed="$$failed main"; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/test_torch.py || failed="$$failed test_torch.py"; \
	if [ -n "$$failed" ]; then echo "make test: failed:$$failed" >&2; exit 1; fi

## test-phantoms: the tests whose data switch on ../shared/data/cxr-real, run as in a clone without it
##                (generated phantoms instead of the shared radiographs; CI runs both ways)
test-phantoms: $(VENV)/.installed-test
	@failed=""; export PHASEFEAT_CXR_REAL="$(CURDIR)/.no-shared-radiographs"; \
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS) -m real_data --ignore=tests/test_torch.py || failed="$$failed main"; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m real_data tests/test_torch.py || failed="$$failed test_torch.py"; \
	if [ -n "$$failed" ]; then echo "make test-phantoms: failed:$$failed" >&2; exit 1; fi

## lint: style checks only
lint: $(VENV)/.installed-test
	$(BIN)/ruff check phasefeat trainer benchmarks tests docs

## bench: CPU (and, with a GPU, CuPy) feature-extraction throughput
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_features.py

## gpu-check: on a machine with an NVIDIA GPU, everything that needs one (tests, benchmarks, a VGG16
##            epoch, the 12-run grid; ~8 min budget on an H100/H200); records in benchmarks/results/
gpu-check: $(BIN)/python
	$(BIN)/python benchmarks/gpu_check.py

## mutate: mutation testing of the numeric modules (cosmic-ray; slow, not in CI; docs/testing.md)
mutate: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	$(BIN)/python tests/mutation.py $(MODULES)

## clean: delete what the demo wrote (OUT, default out/) and the tool caches; keeps .venv
clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache

## distclean: clean, and delete .venv too (several GB; the next make installs again)
distclean: clean
	rm -rf $(VENV)
