# Two commands do all the set-up: `make demo` and `make test`.
# Both make sure a Docker engine runs, pick or make a base image, and resolve the
# pinned wheels that the step images install from (served to image builds over
# loopback HTTP). `make demo` installs on the host only what the orchestrator needs;
# `make test` (and `make lint`) add every step's dependencies and the test tools.

PYTHON ?= python3
VENV ?= .venv
STATE := .build
WHEELHOUSE := $(CURDIR)/.wheelhouse
WHEELHOUSE_PORT ?= 38457
DEMO_EPOCHS ?= 4

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
IMAGE_ENV = PIPELINE_BASE_IMAGE=$$(cat $(STATE)/base-image) PIPELINE_PIP_FIND_LINKS=$$(cat $(STATE)/wheelhouse-url)

.PHONY: setup venv dev-venv ray-venv engine base-image wheelhouse wheelhouse-server registry images demo test test-fast lint ui clean

setup: venv engine base-image wheelhouse-server

# The orchestrator's environment only (requirements/orchestrator.txt): no torch on the host.
venv: $(VENV)/.orchestrator
$(VENV)/.orchestrator: requirements/orchestrator.txt requirements/pins.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements/orchestrator.txt
	# The project itself, for its default-experiment entry point (its deps are the line above);
	# setuptools' warning about editable flat layouts is noise here.
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install --quiet --no-deps --editable .
	touch $@

# Tests and linters import every step's code: all the steps' requirements, and the tools.
dev-venv: $(VENV)/.dev
$(VENV)/.dev: requirements/*.txt | venv
	$(VENV)/bin/pip install --quiet -r requirements/dev.txt
	# KServe's client, without the dependencies it declares for its server (see the file)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements/kserve-client.txt
	touch $@

# Ray's Jobs API client beside the orchestrator, for `mlflow run <step> --backend ray`
# (docs/ray.md). The test environment (dev-venv) has it already.
ray-venv: $(VENV)/.ray
$(VENV)/.ray: requirements/ray.txt requirements/pins.txt | venv
	$(VENV)/bin/pip install --quiet -r requirements/ray.txt
	touch $@

engine:
	scripts/ensure_docker_engine.sh

base-image: engine
	@mkdir -p $(STATE)
	scripts/ensure_base_image.sh > $(STATE)/base-image
	@echo "base image: $$(cat $(STATE)/base-image)"

# The images install exactly these wheels (requirements/pins.txt), resolved by the
# host's pip: this also works where containers cannot reach a package index.
wheelhouse: $(WHEELHOUSE)/.complete
$(WHEELHOUSE)/.complete: requirements/*.txt | venv
	$(VENV)/bin/pip download --quiet -d $(WHEELHOUSE) $(foreach r,fetch train build systemtest promote serve,-r requirements/$(r).txt)
	touch $@

# One long-lived server for the wheelhouse, shared by every pipeline and image build.
wheelhouse-server: wheelhouse
	@mkdir -p $(STATE)
	scripts/ensure_wheelhouse_server.sh $(WHEELHOUSE) $(WHEELHOUSE_PORT) > $(STATE)/wheelhouse-url

# The test suite's own registry on 127.0.0.1 for the build step's push (-P registry=...):
# its own port and storage in this checkout, apart from any registry of the user's.
# After the base image: both may apt-get install, and apt takes one lock.
TEST_REGISTRY ?= 127.0.0.1:5055
registry: engine | base-image
	@mkdir -p $(STATE)
	LOCAL_REGISTRY=$(TEST_REGISTRY) LOCAL_REGISTRY_STORAGE=$(CURDIR)/$(STATE)/test-registry \
	  scripts/ensure_local_registry.sh > $(STATE)/registry

# Every step image, tagged cifar-pipeline-<step>:latest, for running a step alone
# (`mlflow run steps/<step>`). The pipeline builds what it needs by itself.
images:
	@$(MAKE) --no-print-directory -j4 setup
	python -m cifar_pipeline.orchestrator.running.step_images --tag-latest \
	  --base-image $$(cat $(STATE)/base-image) --find-links $$(cat $(STATE)/wheelhouse-url)

# The set-up's parts run side by side (the venv and the wheelhouse download beside the
# engine and the base image): a fresh machine waits for the slowest, not for their sum.
demo:
	@$(MAKE) --no-print-directory -j4 setup
	$(IMAGE_ENV) mlflow run . --env-manager local -P source=digits -P epochs=$(DEMO_EPOCHS)

test:
	@$(MAKE) --no-print-directory -j4 setup dev-venv registry
	$(IMAGE_ENV) PIPELINE_TEST_REGISTRY=$$(cat $(STATE)/registry) pytest

# The unit tests alone (tests/unit): no Docker engine, base image or wheelhouse; about a minute.
test-fast: dev-venv
	pytest tests/unit

lint: dev-venv
	ruff check .
	ruff format --check .
	mypy
	mkdocs build --strict --quiet

# MLflow 3's UI opens in its GenAI mode (traces, prompts); the pipelines' runs are under
# "Model training", which ?workflowType=machine_learning selects.
UI_PORT ?= 5000
ui: venv
	@python -m cifar_pipeline.orchestrator.experiment --tracking-uri sqlite:///mlflow.db --port $(UI_PORT)
	mlflow ui --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlruns --port $(UI_PORT)

clean:
	rm -rf $(STATE) outputs multirun .pytest_cache .mypy_cache .ruff_cache
