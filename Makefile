# Every target installs what it needs on a fresh Debian/Ubuntu machine, and is safe to run again.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help system-deps deps test unit integration lint run demo reset chaos fleet
help:
	@echo "make demo   roll out 12 plants x 300 sensors through the real functions on a fresh local stack"
	@echo "make test   unit + integration tests (starts what the tests need)"
	@echo "make chaos  the reference rollout on a bad day (faults, host killed, a hub stopped); CHAOS_ARGS for a size"
	@echo "make run    start the local stack in the foreground (Ctrl-C stops it; HUBS_PER_REGION=N for more hubs)"
	@echo "make fleet  with the stack running: simulated sensors that stay online (FACILITY, TYPE, COUNT)"
	@echo "make lint   ruff"
	@echo "make reset  delete the local stack's state (.local/, local.settings.json)"
	@echo "operator CLI: .venv/bin/onboarding --help (explain, preview, certs, alerts, health, hubs, capacity,"
	@echo "              templates, overrides, partners)"

deps: $(VENV)/.installed node_modules/.installed system-deps

# unixODBC and the SQLite3 ODBC driver: pyodbc's local stand-in for Azure SQL.
system-deps:
	@if ! odbcinst -q -d -n SQLite3 >/dev/null 2>&1; then \
		echo "installing unixodbc and libsqliteodbc (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq unixodbc libsqliteodbc >/dev/null; \
	fi
	@odbcinst -q -d -n SQLite3 >/dev/null || { echo "SQLite3 ODBC driver not registered"; exit 1; }

# The venv: the pip requirements, then this project itself, editable and without dependencies (requirements*.txt
# are the dependencies), which puts the operator CLI on .venv/bin/onboarding. pip fetches setuptools for the build
# from PyPI; its warning that folders named like the packages shadow them is the flat layout working as intended.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q --no-deps -e .
	@rm -rf sensor_onboarding.egg-info  # the build's leftover; the installed metadata lives in .venv
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: deps
	$(PY) -m pytest

unit: deps
	$(PY) -m pytest tests/unit tests/contract tests/cli tests/infra

integration: deps
	$(PY) -m pytest -m integration

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

run: deps
	$(PY) -m local.stack run $(if $(HUBS_PER_REGION),--hubs-per-region $(HUBS_PER_REGION))

demo: deps
	$(PY) -m local.demo

# The reference rollout under the bad-day fault profile, the Functions host killed and one hub stopped (issue 16).
# CI: make chaos CHAOS_ARGS="--facilities 2 --per-facility 20"
chaos: deps
	$(PY) -m local.chaos $(CHAOS_ARGS)

reset:
	rm -rf .local local.settings.json

fleet: deps
	$(PY) -m local.fleet run --facility $(or $(FACILITY),FAC03) --type $(or $(TYPE),temp) --count $(or $(COUNT),20)
