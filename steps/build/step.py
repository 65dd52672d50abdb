"""build: the inference image (ONNX Runtime + FastAPI, no torch) with the train run's model.

Tag: <image_repo>:<model run ID>-<build run ID prefix>, so no build overwrites the
image of another model or another build. With --registry HOST[:PORT][/PATH] the image is
also pushed as <registry>/<image_repo>:<same tag>, and the registry's digest recorded.
Artifacts: image/image.json (tag, ID, size, labels, pushed reference); the tag, ID and
size are also run tags/params for the UI.

A failed push fails the run and removes the image it built: the system test never sees
an image that was meant to be in a registry and is not.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from docker import DockerClient
from docker.models.images import Image

from cifar_pipeline import docker_utils, names
from cifar_pipeline.cli import run_main
from cifar_pipeline.image_build import assemble_context
from cifar_pipeline.tracking import BUILD, TRAIN, download, lineage, require_step_run, step_run

log = logging.getLogger(__name__)
DEFAULT_BASE_IMAGE = "python:3.11-slim"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-run-id", required=True)
    parser.add_argument("--image-repo", default="cifar-classifier")
    parser.add_argument("--base-image", default=DEFAULT_BASE_IMAGE)
    parser.add_argument("--wheelhouse", default=os.environ.get("SERVE_WHEELHOUSE", ""))
    parser.add_argument("--registry", default="", help="push here too, e.g. 127.0.0.1:5000 (empty: no push)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model_run = require_step_run(args.model_run_id, TRAIN)
    upstream = {"model_run_id": args.model_run_id, **lineage(model_run)}
    with step_run(BUILD, upstream) as run, tempfile.TemporaryDirectory(prefix="build-") as work:
        work_dir = Path(work)
        model_dir = download(args.model_run_id, "onnx", work_dir / "download")
        context = assemble_context(work_dir / "context", model_dir, Path(args.wheelhouse))
        version = f"{args.model_run_id}-{run.info.run_id[:8]}"
        tag = f"{args.image_repo}:{version}"
        labels = {
            "org.opencontainers.image.title": "cifar-classifier",
            "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "org.opencontainers.image.revision": model_run.data.tags.get("mlflow.source.git.commit", ""),
            "org.opencontainers.image.base.name": args.base_image,
            "cifar-pipeline.model-run-id": args.model_run_id,
            "cifar-pipeline.data-run-id": upstream.get("data_run_id", ""),
            "cifar-pipeline.build-run-id": run.info.run_id,
        }
        client = docker_utils.connect()
        started = time.monotonic()
        image = docker_utils.build_image(
            client, context, tag, buildargs={"BASE_IMAGE": args.base_image}, labels=labels
        )
        seconds = time.monotonic() - started
        size = int(image.attrs["Size"])
        info: dict[str, Any] = {"tag": tag, "image_id": image.id, "size_bytes": size, "labels": labels}
        if args.registry:
            info["pushed"] = push(client, image, f"{args.registry.rstrip('/')}/{args.image_repo}", version)
        mlflow.set_tags({names.IMAGE_REF_TAG: tag, names.IMAGE_ID_TAG: image.id})
        if args.registry:
            mlflow.set_tag("image.pushed", info["pushed"])
        mlflow.log_params({"image_tag": tag, "base_image": args.base_image})
        mlflow.log_metrics({"image_size_mb": size / 1e6, "build_seconds": seconds})
        mlflow.log_dict(info, "image/image.json")
        log.info("built %s (%s, %.0f MB) in %.0fs", tag, image.short_id, size / 1e6, seconds)
        log.info("labels: %s", labels)


def push(client: DockerClient, image: Image, repository: str, version: str) -> str:
    """Push; return repository:version@digest. On failure remove the image built, then fail."""
    log.info("pushing %s:%s", repository, version)
    try:
        digest = docker_utils.push_image(client, image, repository, version)
    except docker_utils.ImagePushError:
        client.images.remove(image.id, force=True)
        raise
    reference = f"{repository}:{version}@{digest}"
    log.info("pushed %s", reference)
    return reference


if __name__ == "__main__":
    run_main(BUILD, main)
