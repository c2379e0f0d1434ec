# Two entry points on a fresh machine (see README):
#   make repro   — install into .venv, then run the whole DVC pipeline on the embedded default
#   make test    — install into .venv, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
# torch's OpenMP threads spin while idle; on a small shared CPU (2 cores, a Prefect server and
# Dask workers beside the job) spinning makes every op 10-50x slower. PASSIVE makes them sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup repro test lint bench clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $(STAGE)

# The suite runs on TEST_WORKERS pytest-xdist processes, a test file per process at a time (a
# file's module-scoped Prefect server is started once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	for b in bench/bench_*.py; do PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; done
