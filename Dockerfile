# The step images: one stage per step, each with only what that step needs.
#
#   common       the base image plus what every step needs (requirements/common.txt:
#                mlflow-skinny, the tracking client), one layer that all the step images share
#   <step>-env   common plus the step's own pinned dependencies (its environment)
#   <step>       <step>-env plus the project's code: what `mlflow run steps/<step>` runs
#
# Only train-env has torch. The orchestrator (cifar_pipeline/orchestrator/running/step_images.py, or
# `make images`) builds them: it passes each step's pinned requirements as a build
# argument (<STEP>_REQUIREMENTS, resolved from requirements/<step>.txt and the one
# pinned set, requirements/pins.txt). A build argument, not a copied file, so that
# bumping one step's pin rebuilds only that step's environment: the other stages'
# layers, and so their identities, stay as they were.
#
# Base image: the official Python image by default; pass --build-arg BASE_IMAGE=...
# where no registry is reachable (any Debian/Ubuntu-like image with python3 + venv).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS common
# HOME=/tmp: steps may run as the host user's uid, which has no home directory here.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    HOME=/tmp
RUN python3 -m venv /opt/venv
WORKDIR /app

# Package source: PyPI by default. A mirror or a local wheelhouse is configured with
# pip's own settings, passed as build args (each stage that installs declares them);
# build args do not persist in the image.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ARG COMMON_REQUIREMENTS
RUN test -n "$COMMON_REQUIREMENTS" || { echo "COMMON_REQUIREMENTS is empty: build with make images" >&2; exit 1; } \
 && pip install --no-cache-dir --disable-pip-version-check $COMMON_REQUIREMENTS

FROM common AS fetch-env
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ARG FETCH_REQUIREMENTS
RUN test -n "$FETCH_REQUIREMENTS" || { echo "FETCH_REQUIREMENTS is empty: build with make images" >&2; exit 1; } \
 && pip install --no-cache-dir --disable-pip-version-check $FETCH_REQUIREMENTS

FROM fetch-env AS fetch
COPY cifar_pipeline/ cifar_pipeline/
COPY steps/__init__.py steps/
COPY steps/fetch/ steps/fetch/

FROM common AS train-env
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ARG TRAIN_REQUIREMENTS
RUN test -n "$TRAIN_REQUIREMENTS" || { echo "TRAIN_REQUIREMENTS is empty: build with make images" >&2; exit 1; } \
 && pip install --no-cache-dir --disable-pip-version-check $TRAIN_REQUIREMENTS

FROM train-env AS train
COPY cifar_pipeline/ cifar_pipeline/
COPY steps/__init__.py steps/
COPY steps/train/ steps/train/

FROM common AS build-env
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ARG BUILD_REQUIREMENTS
# The inference image installs offline from these wheels (requirements/serve.txt):
# the serving dependencies are exactly the pinned versions.
ARG SERVE_REQUIREMENTS
ENV SERVE_WHEELHOUSE=/opt/wheelhouse/serve
RUN test -n "$BUILD_REQUIREMENTS" -a -n "$SERVE_REQUIREMENTS" \
    || { echo "BUILD_REQUIREMENTS/SERVE_REQUIREMENTS are empty: build with make images" >&2; exit 1; } \
 && pip install --no-cache-dir --disable-pip-version-check $BUILD_REQUIREMENTS \
 && pip download --no-cache-dir --disable-pip-version-check -d "$SERVE_WHEELHOUSE" $SERVE_REQUIREMENTS

FROM build-env AS build
COPY requirements/ requirements/
COPY cifar_pipeline/ cifar_pipeline/
COPY steps/__init__.py steps/
COPY steps/build/ steps/build/

FROM common AS systemtest-env
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ARG SYSTEMTEST_REQUIREMENTS
RUN test -n "$SYSTEMTEST_REQUIREMENTS" || { echo "SYSTEMTEST_REQUIREMENTS is empty: build with make images" >&2; exit 1; } \
 && pip install --no-cache-dir --disable-pip-version-check $SYSTEMTEST_REQUIREMENTS

FROM systemtest-env AS systemtest
COPY cifar_pipeline/ cifar_pipeline/
COPY steps/__init__.py steps/
COPY steps/systemtest/ steps/systemtest/

FROM common AS promote-env
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ARG PROMOTE_REQUIREMENTS
RUN test -n "$PROMOTE_REQUIREMENTS" || { echo "PROMOTE_REQUIREMENTS is empty: build with make images" >&2; exit 1; } \
 && pip install --no-cache-dir --disable-pip-version-check $PROMOTE_REQUIREMENTS

FROM promote-env AS promote
COPY cifar_pipeline/ cifar_pipeline/
COPY steps/__init__.py steps/
COPY steps/promote/ steps/promote/
