"""The two models as the inference image serves them: a train run's ONNX file, checked
against the digest the run recorded, run with ONNX Runtime; and whether two models can be
compared fairly on the candidate's test split."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.checksums import file_digest
from cifar_pipeline.onnx_inference import onnx_logits
from cifar_pipeline.tracking import FETCH, UpstreamError, download, lineage, require_step_run
from cifar_pipeline.validation.statistics import image_hashes

log = logging.getLogger(__name__)

MODEL_FILE, METADATA_FILE = "onnx/model.onnx", "onnx/metadata.json"


class ModelUnavailable(ValueError):
    """A model to compare cannot be loaded; the message names it (run or registry version)."""


@dataclass(frozen=True)
class ServedModel:
    label: str  # "candidate (train run …)" or "champion cifar-classifier version 3"
    run_id: str
    path: Path
    metadata: dict[str, Any]
    digest: str  # "sha256:<hex>" of the ONNX file

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("class_names", []))

    @property
    def data_run_id(self) -> str:
        return str(self.metadata.get("data_run_id", ""))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted classes with ONNX Runtime, as the inference image computes them."""
        try:
            logits = onnx_logits(self.path, images)
        except Exception as exc:  # ONNX Runtime's errors have no common base beyond this
            raise ModelUnavailable(f"{self.label}: ONNX Runtime cannot run {MODEL_FILE}: {exc}") from exc
        return logits.argmax(axis=1)


def load_served_model(
    client: MlflowClient, run_id: str, label: str, work_dir: Path, expected_digest: str = ""
) -> ServedModel:
    """Download a train run's ONNX model and metadata; refuse one whose bytes differ from its digest."""
    if not run_id:
        raise ModelUnavailable(f"{label}: it records no source run to load its model from")
    try:
        recorded = client.get_run(run_id).data.tags.get(names.MODEL_DIGEST_TAG, "")
        folder = download(run_id, "onnx", work_dir / run_id)
    except (MlflowException, OSError) as exc:
        raise ModelUnavailable(f"{label}: the artifacts of its run {run_id} cannot be read: {exc}") from exc
    path, metadata_path = folder / Path(MODEL_FILE).name, folder / Path(METADATA_FILE).name
    if not path.is_file() or not metadata_path.is_file():
        raise ModelUnavailable(f"{label}: its run {run_id} has no {MODEL_FILE} and {METADATA_FILE}")
    digest = "sha256:" + file_digest(path)
    for expected in {expected_digest, recorded} - {""}:
        if expected.startswith("sha256:") and expected != digest:
            raise ModelUnavailable(f"{label}: {MODEL_FILE} of run {run_id} is {digest}, expected {expected}")
    try:
        metadata = json.loads(metadata_path.read_text())
    except ValueError as exc:
        raise ModelUnavailable(f"{label}: {METADATA_FILE} of run {run_id} is not JSON: {exc}") from exc
    return ServedModel(label, run_id, path, metadata, digest)


def seen_in_training(test_images: np.ndarray, train_images: np.ndarray) -> int:
    """How many of `test_images` are byte-identical to an image of the training set (the
    same image identity as the fetch step's leakage check)."""
    trained = set(image_hashes(train_images))
    return sum(digest in trained for digest in image_hashes(test_images))


def why_not_comparable(
    candidate: ServedModel,
    champion: ServedModel,
    test_images: np.ndarray,
    candidate_data_digest: str,
    client: MlflowClient,
    work_dir: Path,
) -> str:
    """Why the champion cannot be judged on the candidate's test split; "" when it can.

    Other classes or another input make the accuracies incomparable. A champion trained on
    other data may have seen some of the candidate's test images in training, which would
    flatter it: its training images are checked, and if they cannot be read it is not compared.
    """
    if champion.class_names != candidate.class_names:
        return (
            f"{champion.label} was trained on classes {champion.class_names}, "
            f"the candidate on {candidate.class_names}"
        )
    if champion.metadata.get("input") != candidate.metadata.get("input"):
        inputs = champion.metadata.get("input"), candidate.metadata.get("input")
        return f"{champion.label} takes input {inputs[0]}, the candidate {inputs[1]}"
    data_run_id = champion.data_run_id or lineage(client.get_run(champion.run_id)).get("data_run_id", "")
    try:
        data_run = require_step_run(data_run_id, FETCH, client)
    except UpstreamError as exc:
        return f"{champion.label}'s training data cannot be read ({exc}), so it may have seen the test images"
    if data_run.data.tags.get(names.DATA_DIGEST_TAG) == candidate_data_digest:
        return ""
    train_images = np.load(download(data_run_id, "data/train_images.npy", work_dir / "champion-data"))
    seen = seen_in_training(test_images, train_images)
    if seen:
        return (
            f"{champion.label} was trained on {seen} of the candidate's {len(test_images)} test images "
            f"(its data {data_run.data.tags.get(names.DATA_DIGEST_TAG, '?')[:19]}, the candidate's "
            f"{candidate_data_digest[:19]})"
        )
    return ""
