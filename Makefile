# The two commands of the README: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segdeep-installed
# UTF-8 I/O even where the environment sets no locale (CI)
export PYTHONUTF8 := 1

.PHONY: demo test test-pythonqt lint venv clean mutation

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build on these machines; a bare `torch` would pull GBs of CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segdeep demo --output demo_output

# The main suite, then the PythonQt lane: the Slicer module's Qt tests inside the real PythonQt
# (installs its apt runtime packages when missing; skips only when ../shared/tools/pythonqt is absent).
test: $(STAMP)
	$(PY) -m pytest -q Testing
	Testing/SegDeep/pythonqt_lane.sh

test-pythonqt: $(STAMP)
	Testing/SegDeep/pythonqt_lane.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check SegDeepLib SegDeep Testing benchmarks

# Mutation check of the core (not part of `make test`; run before a release). Scope: the functions
# in Testing/mutation_summary.py; MUTANTS narrows it (e.g. MUTANTS='SegDeepLib.io.layout*').
# Results accumulate in mutants/ (a rerun only runs what changed). See Testing/README.md.
MUTMUT := $(VENV)/bin/mutmut
SEGDEEP_SHARED_DATA ?= $(abspath ..)/shared/data
MUTANTS ?= 'SegDeepLib.metrics.overlap*' 'SegDeepLib.metrics.surface*' \
	'SegDeepLib.losses.overlap*' 'SegDeepLib.losses.base*' 'SegDeepLib.io.layout*' \
	'SegDeepLib.inference.sliding_window*' 'SegDeepLib.training.checkpoint*' \
	'SegDeepLib.crf.crfrnn.xǁCRFRNNǁ_mean_field__mutmut_*' \
	'SegDeepLib.crf.crfrnn.x__mean_field_inplace__mutmut_*' \
	'SegDeepLib.crf.crfrnn.x__leading_probabilities*' 'SegDeepLib.crf.crfrnn.x__add_coupled__mutmut_*'

mutation: $(STAMP)
	$(PY) -m pip install --quiet mutmut==3.8.1
	SEGDEEP_SHARED_DATA=$(SEGDEEP_SHARED_DATA) nice -n 15 $(MUTMUT) run --max-children 2 $(MUTANTS)
	$(PY) Testing/mutation_summary.py mutants

clean:
	rm -rf $(VENV) demo_output .pytest_cache mutants
