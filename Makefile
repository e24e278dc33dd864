# TaskRouter: `make synth` and `make test` each set up a fresh machine first (venv, npm, bundle).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
LAMBDA_SOURCES := $(shell find lambdas -name '*.py' -not -path '*/__pycache__/*')

.PHONY: help setup bundle synth test local clean browser

help:
	@echo "make synth  - set up, then synthesize the dev and prod stages to cdk.out/ (offline)"
	@echo "make test   - set up, then run every test"
	@echo "make local  - set up, then serve the API on http://127.0.0.1:\$${PORT:-8080} (README: Running locally)"
	@echo "make bundle - build the Lambda asset into build/lambda"
	@echo "make clean  - remove build outputs (keeps .venv and node_modules)"

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

# The review tool's browser test drives Debian's Chromium (Playwright cannot download its own here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

build/lambda.stamp: $(VENV)/.installed pyproject.toml requirements.lock infra/lambda_code.py $(LAMBDA_SOURCES)
	$(PY) -m infra.lambda_code
	touch $@

bundle: build/lambda.stamp

synth: setup bundle
	rm -rf cdk.out
	npx cdk synth --quiet
	$(PY) -m infra.nag cdk.out/validation-report.json

test: setup bundle browser
	$(PY) -m pytest

local: setup
	$(PY) -m taskrouter.local.server

clean:
	rm -rf cdk.out build .pytest_cache
