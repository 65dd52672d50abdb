"""The inference server, in-process with TestClient, on a real exported model."""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import export_onnx, torch_logits
from cifar_pipeline.serving.app import create_app

NAMES = [f"c{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Classifier]:
    torch.manual_seed(0)
    model = Classifier(10, [0.5] * 3, [0.25] * 3).eval()
    directory = tmp_path_factory.mktemp("model")
    export_onnx(model, directory / "model.onnx")
    (directory / "metadata.json").write_text(json.dumps({"model_run_id": "m1", "class_names": NAMES}))
    return directory, model


@pytest.fixture
def client(model_dir: tuple[Path, Classifier]) -> Iterator[TestClient]:
    with TestClient(create_app(model_dir[0], max_batch=8)) as test_client:
        yield test_client


def test_health_ready_metadata(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "alive"}
    assert client.get("/ready").status_code == 200
    meta = client.get("/metadata").json()
    assert meta["model_run_id"] == "m1"
    assert meta["class_names"] == NAMES
    assert meta["input"]["shape"] == [-1, 32, 32, 3]


def test_predict_matches_pytorch(client: TestClient, model_dir: tuple[Path, Classifier]) -> None:
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    response = client.post("/predict", json={"images": images.tolist()})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = torch_logits(model_dir[1], images)
    np.testing.assert_allclose([p["logits"] for p in predictions], expected, atol=1e-4)
    assert [p["class_id"] for p in predictions] == expected.argmax(1).tolist()
    assert predictions[0]["label"] == NAMES[predictions[0]["class_id"]]
    assert sum(predictions[0]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"images": []}, 422, "empty"),
        ({"images": np.zeros((1, 28, 28, 3), dtype=int).tolist()}, 422, "shape [32, 32, 3]"),
        ({"images": np.full((1, 32, 32, 3), 0.5).tolist()}, 422, "integers"),
        ({"images": np.full((1, 32, 32, 3), 300).tolist()}, 422, "0-255"),
        ({"images": np.zeros((9, 32, 32, 3), dtype=int).tolist()}, 413, "limit of 8"),
        ({"pixels": []}, 422, "images"),
    ],
)
def test_bad_input_gets_4xx_and_server_keeps_answering(
    client: TestClient, payload: dict, status: int, message: str
) -> None:
    response = client.post("/predict", json=payload)
    assert response.status_code == status
    assert message in json.dumps(response.json())
    assert client.get("/ready").status_code == 200
