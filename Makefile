# The two commands: `make demo` and `make test`. Everything else is a step they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv system-deps stack down demo test test-fast lint bench clean

help:
	@echo "make demo       set up everything: Kafka, Redis, tenants, collector, history, live traffic, warehouse load"
	@echo "make test       set up what tests need and run the whole suite (lint included)"
	@echo "make test-fast  the suite without the slow end-to-end tests"
	@echo "make bench      run the benchmarks; results in bench/results/latest.json"
	@echo "make lint       ruff, ruff format --check, mypy"
	@echo "make down       stop the collector and the local Kafka and Redis"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

stack: venv system-deps
	$(BIN)/analytics stack up

down: venv
	@bash scripts/collector.sh stop
	$(BIN)/analytics stack down

demo: stack
	@for t in 1 2 3; do \
	  $(BIN)/analytics tenants create tenant_$$t --write-key tenant_$$t --read-key demo_read_tenant_$$t --if-missing; \
	done
	$(BIN)/analytics generate --to kafka --days 3 --events-per-day 20000 --seed 7
	@bash scripts/collector.sh start
	$(BIN)/analytics generate --to http://127.0.0.1:8080 --rate 200 --duration 30 --seed 8
	$(BIN)/analytics loader --idle-exit 5
	@echo
	@$(BIN)/analytics stack status
	@echo "collector: http://127.0.0.1:8080 (Segment /v1/batch, PostHog /batch/; API docs at /docs), log in .state/logs/collector.log"
	@echo "tenants tenant_1..3: write key = tenant id; events on tracking.events, dead letters on tracking.events_dlq;"
	@echo "warehouse (DuckLake: SQLite catalog + Parquet) in .state/warehouse, raw_events loaded exactly once;"
	@echo "ground truth of each generator run in .state/truth/<seed>.json. Everything keeps running: make down stops it."

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy analytics_core analytics_cli stack generator tenants collector schema_registry loaders bench

test: venv system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: venv system-deps
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: stack
	$(BIN)/python -m bench

clean: down
	rm -rf .state
