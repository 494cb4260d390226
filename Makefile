# The two commands that matter: `make run` and `make test`. Everything else supports them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.11 or newer, preferring 3.12 (the Lambda runtime).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.11 python3; do \
	if $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo $$p; break; fi; done)
VENV := .venv
DEPLOY_VENV := .venv-deploy
BIN := $(VENV)/bin
export PYTHONPATH := layers/sendwell:.
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help run test unit fast lint typecheck template build pytest bench system-deps clean

help:
	@echo "make run    - run sendwell locally (embedded AWS, local API on http://127.0.0.1:3000, demo)"
	@echo "make test   - lint, type-check, template checks, sam build, and the test suite"
	@echo "make unit   - the unit tests (tests/unit: no AWS, no servers; seconds)"
	@echo "make fast   - every test but the browser and Dovecot ones (needs no system packages)"
	@echo "make bench  - benchmarks (figures as ratios measured in one run)"

$(BIN)/.installed: requirements-dev.txt layers/deps/requirements.txt
	@test -n "$(PYTHON)" || { echo "sendwell needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

$(DEPLOY_VENV)/bin/.installed: requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet -r requirements-deploy.txt
	@touch $@

# Dovecot (a real IMAP server) and Chromium (a real browser) for the tests, from Debian packages.
system-deps:
	@bash local/install-system-deps.sh

run: $(BIN)/.installed
	$(BIN)/python -m local.run $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: $(BIN)/.installed
	$(BIN)/mypy layers/sendwell/sendwell
	$(BIN)/mypy functions/*/*.py local bench

template: $(DEPLOY_VENV)/bin/.installed
	$(DEPLOY_VENV)/bin/cfn-lint template.yaml
	$(DEPLOY_VENV)/bin/sam validate --lint --template template.yaml

# `sam build` needs python3.12 (the functions' runtime); pyenv-managed interpreters count too.
build: $(DEPLOY_VENV)/bin/.installed
	@if python3.12 --version >/dev/null 2>&1; then \
		$(DEPLOY_VENV)/bin/sam build --template template.yaml; \
	elif command -v pyenv >/dev/null && pyenv versions --bare | grep -q '^3\.12'; then \
		PYENV_VERSION=$$(pyenv versions --bare | grep '^3\.12' | tail -1) $(DEPLOY_VENV)/bin/sam build --template template.yaml; \
	else \
		echo "sam build skipped: python3.12 (the Lambda runtime) is not on PATH"; \
	fi

pytest: $(BIN)/.installed system-deps
	$(BIN)/python -m pytest

# The tiers (tests/unit, tests/service, tests/e2e): the unit tier alone, or all but what needs Dovecot
# or Chromium, so neither needs `system-deps`.
unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit

fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not browser and not dovecot"

test: lint typecheck template build pytest

bench: $(BIN)/.installed  # Dovecot is installed by the IMAP server itself when missing
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@echo "== bench/cost_model.py"; $(BIN)/python bench/cost_model.py

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache test-artifacts
