# The two commands of the README: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segdeep-installed
# UTF-8 I/O even where the environment sets no locale (CI)
export PYTHONUTF8 := 1

.PHONY: demo test test-pythonqt lint venv clean

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

clean:
	rm -rf $(VENV) demo_output .pytest_cache
