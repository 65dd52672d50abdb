# Two commands do all the set-up: `make demo` and `make test`.
# Both create the virtualenv, make sure a Docker engine runs, pick or make a base
# image, and resolve the pinned wheels that the images install from.

PYTHON ?= python3
VENV ?= .venv
STATE := .build
WHEELHOUSE := $(CURDIR)/.wheelhouse
DEMO_EPOCHS ?= 4

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
IMAGE_ENV = PIPELINE_BASE_IMAGE=$$(cat $(STATE)/base-image) PIPELINE_WHEELHOUSE=$(WHEELHOUSE)

.PHONY: setup venv engine base-image wheelhouse registry demo test lint ui clean

setup: venv engine base-image wheelhouse

venv: $(VENV)/.installed
$(VENV)/.installed: requirements/*.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements/dev.txt
	touch $@

engine:
	scripts/ensure_docker_engine.sh

base-image: engine
	@mkdir -p $(STATE)
	scripts/ensure_base_image.sh > $(STATE)/base-image
	@echo "base image: $$(cat $(STATE)/base-image)"

# A registry on 127.0.0.1 for the test of the build step's push (-P registry=...).
registry: engine
	@mkdir -p $(STATE)
	scripts/ensure_local_registry.sh > $(STATE)/registry

# The images install exactly these wheels (requirements/pins.txt), resolved by the
# host's pip: this also works where containers cannot reach a package index.
wheelhouse: $(WHEELHOUSE)/.complete
$(WHEELHOUSE)/.complete: requirements/*.txt | venv
	$(VENV)/bin/pip download --quiet -d $(WHEELHOUSE) -r requirements/step.txt -r requirements/serve.txt
	touch $@

demo: setup
	$(IMAGE_ENV) mlflow run . --env-manager local -P source=digits -P epochs=$(DEMO_EPOCHS)

test: setup registry
	$(IMAGE_ENV) PIPELINE_TEST_REGISTRY=$$(cat $(STATE)/registry) pytest

lint: venv
	ruff check .
	ruff format --check .
	mypy

ui: venv
	mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf $(STATE) outputs multirun .pytest_cache .mypy_cache .ruff_cache
