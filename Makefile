# `make run` serves the app, `make test` runs lint, type checks and every test. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_INSTALL := npm ci --omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run: $(BIN)/python requirements.txt
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test: $(VENV)/.run requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	$(NPM_INSTALL)
	touch $@

run: $(VENV)/.run node_modules/.installed
	$(BIN)/uvicorn notes_app:app --host 127.0.0.1 --port 8000

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: lint node_modules/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) node_modules

bench: $(VENV)/.test node_modules/.installed
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.run
