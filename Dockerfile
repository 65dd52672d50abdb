# The step image: every pipeline step (fetch, train, build, system test) runs in a
# container of it. MLflow runs it as-is (no --build-image), so the code lives in it.
#
# Base image: the official Python image by default; pass --build-arg BASE_IMAGE=...
# where no registry is reachable (any Debian/Ubuntu-like image with python3 + venv).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Package source: PyPI by default. A mirror or a local wheelhouse is configured with
# pip's own settings, passed as build args; build args do not persist in the image.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST

# HOME=/tmp: steps may run as the host user's uid (so files in a local MLflow store
# stay the user's), which has no home directory in the image.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    HOME=/tmp \
    SERVE_WHEELHOUSE=/opt/wheelhouse/serve

RUN python3 -m venv /opt/venv
WORKDIR /app

# Dependencies first, code last: a code change rebuilds only the last layers.
COPY requirements/ requirements/
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements/step.txt \
 && pip download --no-cache-dir --disable-pip-version-check -d "$SERVE_WHEELHOUSE" -r requirements/serve.txt

COPY cifar_pipeline/ cifar_pipeline/
COPY steps/ steps/
