# One command per thing a newcomer does. Every target sets up .venv itself when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# One worker per core (at most 4), a test file per worker at a time: a file's module fixtures are set up once.
PARALLEL ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: test test-fast test-deploy lint demo dev notebook bench bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## make test: set up .venv, then ruff and the whole test suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q $(PARALLEL) -m "not deploy"

## make test-fast: ruff and the fast tier only (no servers, no subprocesses, no Dagster runs), well under a minute
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q $(PARALLEL) -m "not integration and not deploy"

## make test-deploy: install and start a Docker engine if none runs (root, Debian), build deploy/'s images, start the
## stack and exercise it end to end (heymilo_pipeline_tests/test_deploy.py); removes what it made, stops what it started
test-deploy: $(STAMP)
	deploy/local/docker-host.sh up; status=$$?; \
	if [ $$status = 0 ]; then \
		$(BIN)/pytest -q -s --durations=0 -m deploy heymilo_pipeline_tests/test_deploy.py; status=$$?; \
	fi; \
	deploy/local/docker-host.sh down; exit $$status

## make lint: ruff only (fast)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make demo: set up .venv, run the pipeline on the embedded simulator, print a report (data/ holds the result)
demo: $(STAMP)
	$(BIN)/python -m heymilo_pipeline.demo

## make dev: the simulator plus the Dagster UI and daemon on http://127.0.0.1:3000 (Ctrl-C stops both)
dev: $(STAMP)
	$(BIN)/python -m heymilo_pipeline.dev

## make notebook: JupyterLab on the analyst notebook over data/ (run make demo first); the notebook extra
notebook: $(STAMP)
	$(BIN)/pip install --quiet -e '.[notebook]'
	DAGSTER_HOME=$(CURDIR)/data/dagster_home $(BIN)/jupyter lab notebooks/candidates_overview.ipynb \
		$(if $(filter 0,$(shell id -u)),--allow-root)

## make bench: every benchmark (requests, rate limit, local processing, dlt, Dagster, interview results), ~2 h (1 h 15 of it the results at the real 150/min); rewrites bench/RESULTS.md
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run.py

## make bench-quick: the same harness on tiny sizes, without dlt, the real-limit runs and the two hosts (a smoke test)
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick
