# Two entry points: `make demo` (set up, generate the demo cohort, run the workflow) and
# `make test` (set up, lint, run the test suite). Both create .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= all
DEMO_DIR ?= demo_data
DEMO_PATIENTS ?= 36
DEMO_SPACING ?= 2
DEMO_SEED ?= 0
# Share of demo patients generated without one sequence (T1c, FLAIR, T1w, T2w in turn).
DEMO_MISSING ?= 0.15
PYTEST_ARGS ?=
# A one-patient sheet of empty files: enough for Snakemake to parse, lint and draw the DAG.
PLACEHOLDER_SHEET := tests/data/placeholder/samples.tsv

.PHONY: setup demo demo-cv test lint rulegraph clean

setup: $(STAMP)

$(STAMP): envs/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r envs/requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(DEMO_DIR)/samples.tsv: $(STAMP)
	$(PY) -m glioma.demo --out $(DEMO_DIR) --patients $(DEMO_PATIENTS) \
		--spacing $(DEMO_SPACING) --seed $(DEMO_SEED) --missing $(DEMO_MISSING)

# The demo's settings (config/demo.yaml) are layered on top of config.yaml's real-cohort ones;
# DEMO_SEED seeds both the generated cohort and the workflow (split, training, bootstrap).
DEMO_CONFIG ?= config/demo.yaml

demo: $(DEMO_DIR)/samples.tsv
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(DEMO_CONFIG) \
		--config samples=$(DEMO_DIR)/samples.tsv seed=$(DEMO_SEED)
	$(PY) -m glioma.model.summary results/metrics/metrics.json

# The demo with 5-fold cross-validation: out-of-fold predictions, a fold ensemble for the test
# patients, per-fold figures.
demo-cv: DEMO_CONFIG := config/demo.yaml config/demo_cv.yaml
demo-cv: demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile rules/
	$(VENV)/bin/snakemake --lint --config samples=$(PLACEHOLDER_SHEET)
	$(VENV)/bin/snakemake --lint --config samples=$(PLACEHOLDER_SHEET) 'preprocess={jobs: patient}'

test: lint
	HF_HUB_OFFLINE=1 PYTHONUTF8=1 $(PY) -m pytest $(PYTEST_ARGS)

# The README's rule graph picture (needs Graphviz's `dot`), drawn with one rule per
# preprocessing step (preprocess.jobs: step) to show every step.
rulegraph: $(STAMP)
	$(VENV)/bin/snakemake --rulegraph --config samples=$(PLACEHOLDER_SHEET) 'preprocess={jobs: step}' \
		| tee docs/rulegraph.dot | dot -Tsvg > docs/rulegraph.svg

clean:
	rm -rf results logs .snakemake $(DEMO_DIR)
