# The model server's tasks. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL_NAME ?= linear
MODEL_ROOT ?= models
export MODEL_DIR ?= $(MODEL_ROOT)/$(MODEL_NAME)
export GUNICORN_PIDFILE ?= $(CURDIR)/.gunicorn.pid
export HOST PORT

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install
install: $(BIN)/.installed ## Create .venv and install the project with its dev tools

.PHONY: train
train: install ## Train a new model version into $(MODEL_DIR)
	$(BIN)/python -m training --name $(MODEL_NAME) --output-dir $(MODEL_ROOT)

.PHONY: model
model: install ## Train the default model only if $(MODEL_DIR) has no version yet
	@if ls -d $(MODEL_DIR)/[0-9]* >/dev/null 2>&1; then \
		echo "model found in $(MODEL_DIR)"; \
	else \
		$(MAKE) --no-print-directory train; \
	fi

.PHONY: serve
serve: model ## Serve on $(HOST):$(PORT) with Gunicorn (set-up included)
	exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

.PHONY: reload
reload: ## Move every worker of `make serve` to the newest model version, with no failed request
	kill -HUP $$(cat $(GUNICORN_PIDFILE))

.PHONY: test
test: install ## Run the whole test suite (set-up included)
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

.PHONY: lint
lint: install ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: install ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: openapi
openapi: install ## Regenerate openapi.yaml from the app
	FLASK_APP=wsgi:app $(BIN)/flask openapi write --format=yaml openapi.yaml

.PHONY: bench
bench: model ## Benchmark the real server with wrk; writes benchmarks/results.md and .png
	@command -v wrk >/dev/null || { echo "wrk missing: installing Debian's package"; \
		(apt-get update -qq && apt-get install -y -qq wrk) || { echo "cannot install wrk; install it and rerun"; exit 1; }; }
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.bench

.PHONY: all
all: lint test ## What CI runs: lint and the whole test suite
