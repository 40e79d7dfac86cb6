# Two commands matter: `make paper-figures` and `make test`. Both create .venv when missing.
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
FIGURES ?= figures
ONLY ?=

.PHONY: venv test bench gpu-check paper-figures lab clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name selftrain --display-name "selftrain (.venv)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m selftrain_lib bench --out build/bench

# a lent GPU, under 8 minutes: bench, both paper presets on data of the real sizes, the pseudo-mask pass
GPU_CHECK_OUT ?= build/gpu_check
gpu-check: $(STAMP)
	PY=$(PY) bash tools/gpu_check.sh $(GPU_CHECK_OUT)

paper-figures: $(STAMP)
	$(PY) -m selftrain_lib.paper_figures --scale $(SCALE) --seeds "$(SEEDS)" --figures $(FIGURES) --build build/notebooks --out $(OUT) --jobs $(JOBS) \
		$(if $(ONLY),--only $(ONLY)) \
		--data $(if $(CITYSCAPES),cityscapes=$(CITYSCAPES)) $(if $(VOC),voc=$(VOC))

# JupyterLab at the repository root (README, figures and docs beside the notebooks), with the
# project's kernel; notebooks are generated: keep their outputs out of git (Kernel > Restart and
# Clear Outputs before a commit, or `python tools/make_notebooks.py`)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=. notebooks/explore.ipynb

clean-runs:
	rm -rf runs build
