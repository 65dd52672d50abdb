"""The system test's checks against a real HTTP server (uvicorn in a thread): a faithful
model passes them all; a model exported with the wrong normalisation fails parity."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import export_onnx, torch_logits
from steps.systemtest.step import check_server
from tests.integration.serving_server import serving

pytestmark = pytest.mark.slow

NAMES = [f"c{i}" for i in range(10)]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def exported(directory: Path, model: Classifier) -> Path:
    export_onnx(model, directory / "model.onnx")
    (directory / "metadata.json").write_text(json.dumps({"model_run_id": "m1", "class_names": NAMES}))
    return directory


@pytest.fixture(scope="module")
def trained() -> Classifier:
    torch.manual_seed(0)
    model = Classifier(10, MEAN, STD).eval()
    with torch.no_grad():  # untrained logits are ~0.01; give them a trained model's scale (~5)
        model.net[-1].weight.mul_(150)
    return model


ARGS = argparse.Namespace(
    batch_size=64, min_agreement=1.0, max_logit_diff=1e-3, latency_requests=5, concurrency=4
)


def test_faithful_image_passes_every_check(trained: Classifier, tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 10, 40)
    reference = torch_logits(trained, images[:16])
    with serving(exported(tmp_path, trained), max_batch=512, max_body_bytes=2_000_000) as url:
        report, failures = check_server(url, images[:16], reference, images, labels, ARGS)
    assert failures == []
    assert report["top1_agreement"] == 1.0
    assert report["max_logit_diff"] < 1e-3
    assert report["c4_requests_per_second"] > 0
    assert report["c1_latency_p50_ms"] <= report["c1_latency_p99_ms"]


def test_wrong_normalisation_fails_parity(trained: Classifier, tmp_path: Path) -> None:
    skewed = Classifier(10, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()  # ImageNet's statistics
    skewed.net.load_state_dict(trained.net.state_dict())  # same weights, other preprocessing
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    reference = torch_logits(trained, images[:16])
    with serving(exported(tmp_path, skewed), max_batch=512, max_body_bytes=2_000_000) as url:
        _, failures = check_server(url, images[:16], reference, images, np.zeros(40, int), ARGS)
    assert any(f.startswith("max logit diff") for f in failures), failures
    assert any("v2 infer logits differ" in f for f in failures), failures
