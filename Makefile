# Two commands matter: `make paper-figures` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCALE ?= quick
SEEDS ?= 0
JOBS ?= auto
OUT ?= runs
CITYSCAPES ?=
VOC ?=
FIGURES ?=
ONLY ?=
FROM_RECORD ?=

.PHONY: venv test test-heavy test-all bench gpu-check paper-figures lab clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name selftrain --display-name "selftrain (.venv)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# Tests in two tiers, one pytest worker per core (pytest-xdist). `make test`: everything but the
# `heavy` tests (minutes of CPU each: R101 at the paper's sizes, paper-figures on real layouts),
# which `make test-heavy` runs; CI runs both. The 25 slowest tests are printed at the end and kept
# in build/test-durations.txt (build/test-heavy-durations.txt).
TEST_WORKERS ?= auto
PYTEST = $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25
test: $(STAMP)
	@mkdir -p build
	$(PYTEST) -m "not heavy" tests | tee build/test-report.txt; status=$${PIPESTATUS[0]}; \
		sed -n '/slowest .* durations/,/^$$/p' build/test-report.txt > build/test-durations.txt; exit $$status

test-heavy: $(STAMP)
	@mkdir -p build
	$(PYTEST) -m heavy tests | tee build/test-heavy-report.txt; status=$${PIPESTATUS[0]}; \
		sed -n '/slowest .* durations/,/^$$/p' build/test-heavy-report.txt > build/test-heavy-durations.txt; exit $$status

test-all: test test-heavy

bench: $(STAMP)
	$(PY) -m selftrain_lib bench --out build/bench

# a lent GPU, under 8 minutes: bench, both paper presets on data of the real sizes, the pseudo-mask pass
GPU_CHECK_OUT ?= build/gpu_check
gpu-check: $(STAMP)
	PY=$(PY) bash tools/gpu_check.sh $(GPU_CHECK_OUT)

paper-figures: $(STAMP)
	$(PY) -m selftrain_lib.paper_figures --scale $(SCALE) --seeds "$(SEEDS)" $(if $(FIGURES),--figures $(FIGURES)) --build build/notebooks --out $(OUT) --jobs $(JOBS) \
		$(if $(ONLY),--only $(ONLY)) $(if $(FROM_RECORD),--from-record) \
		--data $(if $(CITYSCAPES),cityscapes=$(CITYSCAPES)) $(if $(VOC),voc=$(VOC))

# JupyterLab at the repository root (README, figures and docs beside the notebooks), with the
# project's kernel; notebooks are generated: keep their outputs out of git (Kernel > Restart and
# Clear Outputs before a commit, or `python tools/make_notebooks.py`)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=. notebooks/explore.ipynb

clean-runs:
	rm -rf runs build
