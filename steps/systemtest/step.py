"""systemtest: run the built image and prove it serves the model that was trained.

Starts the image on a free loopback port, waits (bounded) for /ready, then checks that
the served predictions on the held-out reference subset equal the training run's
(top-1 agreement and max logit difference), measures accuracy on the whole test split
with batched requests, checks every endpoint (the Open Inference Protocol round trip,
base64 PNGs and file uploads included) and that bad inputs get a 4xx with a message
while the server keeps answering, and measures batch-1 latency at concurrency 1 and N.
The container is removed whatever happens; its logs are attached to the run. On
success the train run is tagged blessed; the promote step decides whether it becomes
the champion.

Artifacts: systemtest/report.json, systemtest/container.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from cifar_pipeline import docker_utils, names, probes
from cifar_pipeline.cli import parse_int, run_main
from cifar_pipeline.dataset import read_dataset
from cifar_pipeline.tracking import (
    BUILD,
    SYSTEMTEST,
    download,
    lineage,
    require_step_run,
    step_run,
)

log = logging.getLogger(__name__)


class SystemTestFailed(RuntimeError):
    """The image answered, but not with the trained model's predictions."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-run-id", required=True)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--min-agreement", type=float, default=1.0)
    parser.add_argument("--max-logit-diff", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=parse_int, default=256)
    parser.add_argument("--latency-requests", type=parse_int, default=50, help="requests per client")
    parser.add_argument("--concurrency", type=parse_int, default=8, help="clients of the throughput test")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_server(
    url: str,
    reference_images: np.ndarray,
    reference_logits: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[str]]:
    """Parity, accuracy, every endpoint, bad inputs, latency and throughput; returns report + failures."""
    served = probes.predict_logits(url, reference_images, args.batch_size)
    agreement = float((served.argmax(1) == reference_logits.argmax(1)).mean())
    max_diff = float(np.abs(served - reference_logits).max())
    test_logits = probes.predict_logits(url, test_images, args.batch_size)
    accuracy = float((test_logits.argmax(1) == test_labels).mean())
    metadata = probes.metadata(url)
    endpoints = probes.check_endpoints(url, reference_images, reference_logits, args.max_logit_diff)
    bad_inputs = probes.check_bad_inputs(url, int(metadata["limits"]["max_body_bytes"]))
    report = {
        "reference_images": len(reference_images),
        "top1_agreement": agreement,
        "max_logit_diff": max_diff,
        "test_images": len(test_images),
        "test_accuracy": accuracy,
        "served_model_run_id": metadata.get("model_run_id"),
        **probes.load_test(url, test_images, 1, args.latency_requests),
        **probes.load_test(url, test_images, args.concurrency, args.latency_requests),
    }
    failures = endpoints.failures + bad_inputs.failures
    if agreement < args.min_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < {args.min_agreement}")
    if max_diff > args.max_logit_diff:
        failures.append(f"max logit diff {max_diff:.2e} > {args.max_logit_diff:.0e}")
    return report, failures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    image_run = require_step_run(args.image_run_id, BUILD)
    upstream = {"image_run_id": args.image_run_id, **lineage(image_run)}
    with step_run(SYSTEMTEST, upstream) as run, tempfile.TemporaryDirectory(prefix="systest-") as work:
        work_dir = Path(work)
        model_run_id, data_run_id = upstream["model_run_id"], upstream["data_run_id"]
        image = json.loads(download(args.image_run_id, "image/image.json", work_dir).read_text())
        dataset = read_dataset(download(data_run_id, "data", work_dir))
        reference = np.load(download(model_run_id, "reference/predictions.npz", work_dir))
        reference_images = dataset.test.images[reference["indices"]]

        client = docker_utils.connect()
        name = f"cifar-systemtest-{run.info.run_id[:8]}-{uuid.uuid4().hex[:6]}"
        with docker_utils.serving_container(client, image["tag"], name) as (container, url):
            try:
                ready_seconds = docker_utils.wait_until_ready(container, f"{url}/ready", args.ready_timeout)
                report, failures = check_server(
                    url, reference_images, reference["logits"], dataset.test.images, dataset.test.labels, args
                )
            finally:
                mlflow.log_text(container.logs().decode(errors="replace"), "systemtest/container.log")
        report.update(image_tag=image["tag"], ready_seconds=ready_seconds, model_run_id=model_run_id)
        if report["served_model_run_id"] != model_run_id:
            failures.append(f"image serves model {report['served_model_run_id']}, expected {model_run_id}")
        mlflow.log_dict({**report, "failures": failures}, "systemtest/report.json")
        mlflow.log_metrics({k: v for k, v in report.items() if isinstance(v, float)})
        log.info("system test: %s", json.dumps(report))
        mlflow.set_tag(names.SYSTEMTEST_PASSED_TAG, str(not failures).lower())
        if failures:
            raise SystemTestFailed("the image failed its system test: " + "; ".join(failures))
        MlflowClient().set_tag(model_run_id, names.BLESSED_TAG, "true")


if __name__ == "__main__":
    run_main(SYSTEMTEST, main)
