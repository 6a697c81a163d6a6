# The two set-up commands of the README: `make run` and `make test`.
# Both work on a fresh Debian or Ubuntu machine as root.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := /var/lib/somvad/.system-deps

.PHONY: run test lint typecheck unit integration asterisk-up asterisk-down \
	system-deps venv bench clean

run: venv system-deps
	$(BIN)/somvad run

test: venv system-deps lint typecheck
	$(BIN)/python -m tests.support.asterisk up
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit

integration: venv system-deps
	$(BIN)/python -m tests.support.asterisk up
	$(BIN)/pytest tests/integration

asterisk-up: venv system-deps
	$(BIN)/somvad asterisk up

asterisk-down: venv
	$(BIN)/somvad asterisk down

bench: venv
	$(BIN)/python -m bench.api

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# Swagger UI for /docs comes from npm; without npm, /docs says so.
	-command -v npm >/dev/null && \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/npm \
			swagger-ui-dist@5 && \
		rm -rf $(VENV)/swagger-ui && \
		cp -r $(VENV)/npm/node_modules/swagger-ui-dist $(VENV)/swagger-ui
	touch $@

# debootstrap builds the Asterisk root when no system Asterisk is installed;
# sip-tester (SIPp) drives load and carrier simulations.
system-deps: $(SYSTEM_STAMP)

$(SYSTEM_STAMP):
	@if ! command -v debootstrap >/dev/null || ! command -v sipp >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap sip-tester; \
	fi
	mkdir -p $(dir $@) && touch $@

clean:
	rm -rf $(VENV) build *.egg-info
