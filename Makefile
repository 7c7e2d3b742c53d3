# `make run` serves the app, `make test` runs lint, type checks and every test. Both set up what they need.
# Another Python: `make test PYTHON=python3.13 VENV=.venv-3.13` (each Python needs a virtualenv of its own).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
NPM_INSTALL := npm ci --omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error
# Swagger UI and ReDoc from npm make the docs pages work offline; without npm they load from the CDN, as FastAPI's
# do. CI has npm, and fails without it.
DOCS_FILES := $(if $(or $(shell command -v npm),$(CI)),node_modules/.installed,no-npm)

.PHONY: run test lint bench callgrind soak clean drift no-npm

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

no-npm:
	@echo "npm not found: /docs and /redoc will load Swagger UI and ReDoc from their CDN (install npm to serve them offline)"

run: $(VENV)/.run $(DOCS_FILES)
	$(BIN)/uvicorn notes_app:app --host $(HOST) --port $(PORT)

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: lint $(DOCS_FILES)
	$(BIN)/python -m pytest

clean:
	rm -rf .venv .venv-* node_modules

# The differential suite and the OpenAPI comparison against the newest FastAPI, Starlette, Pydantic and
# SQLAlchemy on PyPI, in a virtualenv of their own: run it when any of them has a new release.
DRIFT := .venv-drift
drift: node_modules/.installed
	rm -rf $(DRIFT)
	$(PYTHON) -m venv $(DRIFT)
	$(DRIFT)/bin/python -m pip install --quiet --upgrade pip
	$(DRIFT)/bin/python -m pip install --quiet -r requirements-test.txt
	$(DRIFT)/bin/python -m pip install --quiet --upgrade fastapi starlette pydantic SQLAlchemy
	$(DRIFT)/bin/python -m pip list | grep -iE '^(fastapi|starlette|pydantic|pydantic.core|sqlalchemy) '
	$(DRIFT)/bin/python -m pytest -p no:cacheprovider -q -rf --tb=short -o verbosity_assertions=2 \
		tests/test_differential.py tests/test_openapi.py tests/test_crud_example.py tests/test_docs.py

bench: $(VENV)/.test node_modules/.installed
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.run

# Instructions per request of the CRUD example against the yardstick, counted by callgrind (valgrind): steady figures.
callgrind: $(VENV)/.test
	@command -v valgrind >/dev/null || { echo "make callgrind needs valgrind: apt-get install valgrind"; exit 1; }
	$(BIN)/python -m bench.callgrind

# The fault loops too long for every run: the slow-client tests with the client at work for a minute, 300 stalled
# readers on SQLite and 30,000 POSTs past one stalled reader; 1,000 keyed POSTs (and 1,000 plain) through stalls; ten
# failovers of each URL form.
soak: $(VENV)/.test
	SLOW_CLIENT_SECONDS=60 STALLED_ON_SQLITE=300 WAL_POSTS=30000 POSTS_THROUGH_STALLS=2000 FAILOVER_RUNS=10 \
		$(BIN)/python -m pytest -p no:cacheprovider tests/test_slow_clients.py \
		tests/test_idempotency.py::test_retries_through_stalls_store_each_note_once \
		"tests/test_cluster.py::test_a_failover_loses_no_acknowledged_note"
