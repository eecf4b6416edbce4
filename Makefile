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
# One pid file per port: a second server needs PORT alone (its gRPC port is PORT+81).
export GUNICORN_PIDFILE ?= $(CURDIR)/.gunicorn-$(PORT).pid
export HOST PORT

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets and the variables they take
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}' \
		| sed -e 's|$$(HOST)|$(HOST)|g' -e 's|$$(PORT)|$(PORT)|g' -e 's|$$(MODEL_DIR)|$(MODEL_DIR)|g'
	@echo "Variables (make serve PORT=8001 ...), with their values now:"
	@echo "  PORT=$(PORT)  HOST=$(HOST)  gRPC on PORT+81 (GRPC_PORT)  GUNICORN_PIDFILE=$(GUNICORN_PIDFILE)"
	@echo "  MODEL_DIR=$(MODEL_DIR)  MODEL_REPOSITORY=$(MODEL_REPOSITORY)  (every setting: docs/configuration.md)"

# The docs pages' JavaScript and CSS, served by the app itself so /redoc and
# /swagger-ui work offline; fetched from npm packages, never committed.
DOCS_ASSETS := app/static/docs

$(DOCS_ASSETS)/VERSIONS: tools/fetch-docs-assets.sh
	@command -v npm >/dev/null || { echo "npm is needed to fetch the docs pages' assets"; exit 1; }
	tools/fetch-docs-assets.sh $(DOCS_ASSETS)

.PHONY: docs-assets
docs-assets: $(DOCS_ASSETS)/VERSIONS ## Fetch ReDoc and Swagger UI from npm into app/static/docs

$(BIN)/.installed: pyproject.toml
	@echo "==> creating $(VENV) (once)"
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "==> installing the server, TensorFlow for training and the dev tools (a few minutes the first time)"
	@# setuptools' box about editable installs is a UserWarning: not news to this checkout.
	@PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[train,dev,registry,s3]'
	@echo "==> installed"
	@touch $@

# An MLflow tracking server for the registry tests and `make mlflow`, in a venv of
# its own: the full mlflow package pins gunicorn<27, which this server outgrew.
MLFLOW_VENV := .venv-mlflow
MLFLOW_VERSION := 3.17.2

$(MLFLOW_VENV)/.installed:
	test -d $(MLFLOW_VENV) || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet 'mlflow==$(MLFLOW_VERSION)'
	touch $@

# An S3 API server (moto's) for the object-store tests, in a venv of its own: its
# server pulls in dozens of packages the served venv has no use for.
S3_VENV := .venv-s3
MOTO_VERSION := 5.2.5

$(S3_VENV)/.installed:
	test -d $(S3_VENV) || $(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/python -m pip install --quiet 'moto[server]==$(MOTO_VERSION)'
	touch $@

.PHONY: install
install: $(BIN)/.installed $(DOCS_ASSETS)/VERSIONS ## Create .venv and install the project with its dev tools

.PHONY: train
train: install ## Train a new model version into $(MODEL_DIR)
	$(BIN)/python -m training --name $(MODEL_NAME) --output-dir $(MODEL_ROOT)

.PHONY: compile
compile: install ## Write the serving artifact for an existing version: make compile VERSION_DIR=models/linear/1
	@test -n "$(VERSION_DIR)" || { echo "usage: make compile VERSION_DIR=<model dir>/<version>"; exit 2; }
	$(BIN)/python -m training compile $(VERSION_DIR)

.PHONY: train-register
train-register: install ## Train, log to MLflow and register (MLFLOW_TRACKING_URI; ALIAS=production moves that alias)
	$(BIN)/python -m training --name $(MODEL_NAME) --output-dir $(MODEL_ROOT) --register $(if $(ALIAS),--alias $(ALIAS))

.PHONY: mlflow
mlflow: $(MLFLOW_VENV)/.installed ## Run an MLflow tracking server and registry on 127.0.0.1:5000 (SQLite, local artifacts)
	mkdir -p mlflow-data
	exec $(MLFLOW_VENV)/bin/mlflow server --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///mlflow-data/mlflow.db \
		--artifacts-destination mlflow-data/artifacts --serve-artifacts --workers 1

.PHONY: model
model: install ## Train the default model only if $(MODEL_DIR) has no version yet
	@if ls -d $(MODEL_DIR)/[0-9]* >/dev/null 2>&1; then \
		echo "model found in $(MODEL_DIR)"; \
	else \
		$(MAKE) --no-print-directory train; \
	fi

.PHONY: serve
serve: model ## Serve on $(HOST):$(PORT) with Gunicorn (set-up included)
	exec $(if $(and $(MODEL_REPOSITORY),$(filter file,$(origin MODEL_DIR))),env -u MODEL_DIR) $(BIN)/python -m app.serve

.PHONY: reload
reload: ## Move every worker of `make serve` to the newest model version, with no failed request
	@pid=$$(cat $(GUNICORN_PIDFILE) 2>/dev/null); \
	if [ -z "$$pid" ] || ! cat /proc/$$pid/cmdline 2>/dev/null | tr '\0' '\n' | grep -qxE '(.*/)?gunicorn|gunicorn: master.*'; then \
		echo "no server is running (no live Gunicorn at the pid in $(GUNICORN_PIDFILE))"; exit 1; \
	fi; \
	kill -HUP $$pid && echo "reloading Gunicorn master $$pid"

.PHONY: test
test: install $(MLFLOW_VENV)/.installed $(S3_VENV)/.installed ## Run the whole test suite (set-up included)
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

.PHONY: lint
lint: install ## Check style with ruff, and that imports follow the layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

.PHONY: format
format: install ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: grpc-stubs
grpc-stubs: install ## Regenerate app/grpc/open_inference_pb2.py from its .proto
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. app/grpc/open_inference.proto

.PHONY: kserve-schemas
kserve-schemas: install ## Re-vendor KServe's CRD schemas: make kserve-schemas KSERVE_TAG=v0.20.0
	$(BIN)/python tools/vendor-kserve-schemas.py $(or $(KSERVE_TAG),v0.20.0)

# The docs tools, installed again only when pyproject.toml changes.
$(BIN)/.docs-installed: $(BIN)/.installed
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[train,dev,registry,s3,docs]'
	@touch $@

.PHONY: docs
docs: install $(BIN)/.docs-installed ## Build the documentation site into site/ (MkDocs, offline, strict: broken links fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

.PHONY: openapi
openapi: install ## Regenerate openapi.yaml from the app
	FLASK_APP=wsgi:app $(BIN)/flask openapi write --format=yaml openapi.yaml

.PHONY: bench
bench: model ## Benchmark the real server with wrk and h2load: benchmarks/*results.md (speed-results.md: the speed table)
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { echo "wrk or h2load missing: installing Debian's packages"; \
		(apt-get update -qq && apt-get install -y -qq wrk nghttp2-client) || { echo "cannot install wrk and h2load; install them and rerun"; exit 1; }; }
	$(BIN)/python -m pip install --quiet -e '.[train,dev,bench]'
	$(BIN)/python -m benchmarks.bench
	$(BIN)/python -m benchmarks.image
	$(BIN)/python -m benchmarks.slow_clients
	$(BIN)/python -m benchmarks.grpc
	$(BIN)/python -m benchmarks.repository
	$(BIN)/python -m benchmarks.speed
	$(BIN)/python -m benchmarks.shadow

.PHONY: loadtest
loadtest: model ## Locust load test against a fresh server; report in reports/, fails on errors or slow p95
	$(BIN)/python -m pip install --quiet -e '.[train,dev,load]'
	$(BIN)/python -m tests.load.run

.PHONY: lint-deploy
lint-deploy: install ## Check Dockerfile, compose file, CI workflow and Kubernetes manifests statically
	$(BIN)/python -m pip install --quiet -e '.[train,dev,deploy]'
	$(BIN)/hadolint Dockerfile
	$(BIN)/actionlint .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/kubernetes-validate --strict deploy/k8s/deployment.yaml deploy/k8s/service.yaml deploy/k8s/hpa.yaml
	$(BIN)/python tools/check-kserve.py
	@command -v promtool >/dev/null || { echo "promtool missing: installing Debian's prometheus package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	promtool check config deploy/prometheus/prometheus.yml
	cd deploy/prometheus && promtool test rules rules_test.yml

# The Docker image. BASES=official builds from the official Python and Node
# images (what users get); BASES=local from stand-ins that
# tools/build-base-images.sh makes from Debian's packages, for machines that
# reach no container registry (CI here).
IMAGE ?= model-server:1.0.0
BASES ?= official
LOCAL_BASES := --build-arg PYTHON_IMAGE=model-server-base/python:3.11 \
	--build-arg NODE_IMAGE=model-server-base/node:18
ifeq ($(BASES),local)
export PROMETHEUS_IMAGE ?= model-server-base/prometheus
endif

.PHONY: image
image: ## Build the Docker image $(IMAGE) (BASES=local: from Debian-made stand-in bases)
	tools/with-docker.sh $(MAKE) --no-print-directory image-build

.PHONY: image-build
image-build: ## Build the image with the Docker engine already running
	$(if $(filter local,$(BASES)),tools/build-base-images.sh)
	DOCKER_BUILDKIT=0 docker build $(if $(filter local,$(BASES)),$(LOCAL_BASES)) -t $(IMAGE) .

.PHONY: image-test
image-test: install ## Build the image and check it as a user would: docker run and stop, docker compose up
	$(BIN)/python -m pip install --quiet -e '.[train,dev,image]'
	tools/with-docker.sh $(MAKE) --no-print-directory image-build image-checks

.PHONY: image-checks
image-checks: ## Check the built image and the compose file (Docker engine running)
	IMAGE=$(IMAGE) $(BIN)/python -m pytest -p no:cacheprovider -s tests/image

.PHONY: browser
browser: ## Install Debian's chromium for the docs-page tests (needs root)
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

.PHONY: all
all: lint lint-deploy test image-test ## What CI runs: lint, deploy-file checks, the test suite, the image
