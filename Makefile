# The two commands: `make demo` and `make test`. Everything else is a step they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# The suite's modules run on this many pytest-xdist workers (a module stays on one: its fixtures build once).
TEST_WORKERS ?= 2
PYTEST_XDIST := -n $(TEST_WORKERS) --dist loadfile

.PHONY: help venv system-deps stack down demo test test-fast lint bench clean stats-bundle

help:
	@echo "make demo       set up everything: Kafka, Redis, tenants, collector, realtime, history, loader, warehouse, query API, Dagster, live traffic"
	@echo "make test       set up what tests need and run the whole suite (lint included)"
	@echo "make test-fast  the suite without the slow end-to-end tests"
	@echo "make bench      run the benchmarks; results in bench/results/latest.json"
	@echo "make lint       ruff, ruff format --check, mypy, import contracts (lint-imports), sqlfluff, the stats bundle"
	@echo "make stats-bundle  regenerate dbt_project/functions/experiment_analyze.py (BigQuery's experiment statistics)"
	@echo "make down       stop the demo's services (traffic, Dagster, API, loader, realtime, collector) and Kafka and Redis"

GBSTATS := gbstats==0.8.0

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# A test-only reference (see pyproject.toml's dev extras): without its numpy<2 and pandas<2 pins.
	$(BIN)/pip install -q --no-deps '$(GBSTATS)'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

stack: venv system-deps
	$(BIN)/analytics stack up

# `make demo` starts collector, realtime, loader (continuous), api, dagster and traffic (scripts/service.sh).
# The loader and every dbt build share the warehouse's writer lock (analytics_core/writer_lock.py): a
# build holds it from start to end and the loader's commits wait (it keeps reading Kafka meanwhile), so
# neither loses a commit to the SQLite catalog. Dagster's minute job finds the loader in its group and
# waits for it to catch up instead of loading itself (docs/ORCHESTRATION.md). `make down` stops them all.
DEMO_DAYS ?= 30
# One seed per history length: the generator's event ids follow from the seed, and two histories of one
# seed would send the same ids with other times (the staging keeps the first copy of an id).
DEMO_SEED = $(shell echo $$((1000 + $(DEMO_DAYS))))

down: venv
	@for s in traffic dagster api loader realtime collector; do bash scripts/service.sh stop $$s; done
	$(BIN)/analytics stack down

# The settings the demo's recipe needs, as shell variables (ANALYTICS_* environment and .env apply).
DEMO_SETTINGS = eval "$$($(BIN)/analytics settings | grep -E '^ANALYTICS_(STATE_DIR|WAREHOUSE_PATH|COLLECTOR_PORT|API_PORT|DAGSTER_PORT)=')"

demo: stack
	@for t in 1 2 3; do \
	  $(BIN)/analytics tenants create tenant_$$t --write-key tenant_$$t --read-key demo_read_tenant_$$t --if-missing; \
	done
	@# History once per state folder (a second `make demo` finds it in Kafka and the warehouse already).
	@$(DEMO_SETTINGS); marker=$$ANALYTICS_STATE_DIR/demo/history-$(DEMO_SEED)-$(DEMO_DAYS)d; \
	if [ ! -f $$marker ]; then \
	  echo "backfilling $(DEMO_DAYS) days of history into tracking.events"; \
	  $(BIN)/analytics generate --to kafka --days $(DEMO_DAYS) --events-per-day 20000 --seed $(DEMO_SEED) && \
	  mkdir -p $$(dirname $$marker) && touch $$marker; \
	fi
	@bash scripts/service.sh start collector
	@bash scripts/service.sh start realtime
	@# The history first, at full speed (no build waits on the writer lock yet), then the loader for good.
	$(BIN)/analytics loader --idle-exit 5
	@bash scripts/service.sh start loader
	$(BIN)/analytics dbt build --exclude-resource-type unit_test
	@bash scripts/service.sh start api
	@bash scripts/service.sh start dagster
	@bash scripts/service.sh start traffic
	@echo
	@$(BIN)/analytics stack status
	@$(DEMO_SETTINGS); logs=$$ANALYTICS_STATE_DIR/logs; \
	echo "dashboard:  http://127.0.0.1:$$ANALYTICS_API_PORT/  (read key: demo_read_tenant_1)"; \
	echo "collector:  http://127.0.0.1:$$ANALYTICS_COLLECTOR_PORT (Segment, PostHog, Mixpanel, Amplitude, Snowplow; docs at /docs), log $$logs/collector.log"; \
	echo "query API:  http://127.0.0.1:$$ANALYTICS_API_PORT/docs  (read key of tenant_1: demo_read_tenant_1), e.g."; \
	echo "  curl -N -H 'Authorization: Bearer demo_read_tenant_1' http://127.0.0.1:$$ANALYTICS_API_PORT/api/v1/live"; \
	echo "Dagster UI: http://127.0.0.1:$$ANALYTICS_DAGSTER_PORT (minute and hourly rollup schedules on)"; \
	echo "tenants tenant_1..3: write key = tenant id, read key = demo_read_<tenant id>; events on tracking.events,"; \
	echo "dead letters on tracking.events_dlq; warehouse (DuckLake) in $$ANALYTICS_WAREHOUSE_PATH, loaded continuously by the"; \
	echo "loader (every 2 s; log $$logs/loader.log) and rolled up every minute by Dagster;"; \
	echo "live traffic from the generator keeps flowing ($${DEMO_RATE:-20} events/s, log $$logs/traffic.log)."; \
	echo "Everything keeps running: make down stops it all."

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy analytics_core analytics_cli stack generator tenants collector schema_registry loaders realtime api bench orchestration
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m analytics_core.dbt sqlfluff lint models tests
	$(BIN)/python -m analytics_core.stats.bundle --check

# BigQuery's experiment_analyze function is analytics_core/stats in one file (docs/EXPERIMENTS.md).
stats-bundle: venv
	$(BIN)/python -m analytics_core.stats.bundle

test: venv system-deps lint
	$(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

test-fast: venv system-deps
	$(BIN)/pytest $(PYTEST_XDIST) -m "not slow" $(PYTEST_ARGS)

bench: stack
	$(BIN)/python -m bench

clean: down
	rm -rf .state

# Dagster UI + daemon (schedules run) for the orchestration code location; see docs/ORCHESTRATION.md.
# DAGSTER_HOME is .state/dagster with a copy of ./dagster.yaml (Dagster keeps a few files in its
# home); the storage paths in dagster.yaml are relative to the working directory, the repo root.
.PHONY: dagster
dagster: venv
	@mkdir -p .state/dagster && cp --remove-destination dagster.yaml .state/dagster/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.state/dagster $(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 \
	  -p $$($(BIN)/python -c 'from analytics_core.settings import get_settings; print(get_settings().dagster_port)')
