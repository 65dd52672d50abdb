"""The inference server, in-process with TestClient, on a real exported model."""

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cifar_pipeline import images as image_codec
from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import export_onnx, torch_logits
from cifar_pipeline.serving.app import Settings, create_app

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
    settings = Settings(model_dir=model_dir[0], max_batch=8, max_body_bytes=300_000, model_name="cifar")
    with TestClient(create_app(settings=settings)) as test_client:
        yield test_client


def png_bytes(size: tuple[int, int] = (64, 48), mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode).save(buffer, format="PNG")
    return buffer.getvalue()


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
        ({"images": np.zeros((1, 32, 32, 3), dtype=bool).tolist()}, 422, "integers"),
        ({"images": [[[[0, 0, 0]] * 32] * 31]}, 422, "got [31, 32, 3]"),
        (
            {"images": [np.zeros((32, 32, 3), dtype=int).tolist(), base64.b64encode(b"x").decode()]},
            422,
            "mixes",
        ),
        ({"images": ["not base64!"]}, 422, "base64"),
        ({"images": [base64.b64encode(b"GIF89a not a png").decode()]}, 415, "PNG"),
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


def test_predict_accepts_base64_png_of_any_size_resized_like_training(
    client: TestClient, model_dir: tuple[Path, Classifier]
) -> None:
    files = [png_bytes((64, 48), seed=1), png_bytes((20, 20), "L", seed=2)]
    response = client.post("/predict", json={"images": [base64.b64encode(f).decode() for f in files]})
    assert response.status_code == 200, response.text
    expected = torch_logits(model_dir[1], np.stack([image_codec.decode(f) for f in files]))
    np.testing.assert_allclose([p["logits"] for p in response.json()["predictions"]], expected, atol=1e-4)


def test_predict_image_upload(client: TestClient, model_dir: tuple[Path, Classifier]) -> None:
    data = png_bytes((100, 80), "RGBA", seed=3)
    response = client.post("/predict/image", files={"file": ("cat.png", data, "image/png")})
    assert response.status_code == 200, response.text
    expected = torch_logits(model_dir[1], image_codec.decode(data)[None])[0]
    np.testing.assert_allclose(response.json()["logits"], expected, atol=1e-4)
    assert response.json()["label"] == NAMES[int(expected.argmax())]


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ({"file": ("notes.txt", b"hello, not an image", "text/plain")}, 415, "notes.txt"),
        ({"file": ("empty.png", b"", "image/png")}, 422, "empty"),
        ({"other": ("cat.png", png_bytes(), "image/png")}, 422, "file"),
    ],
)
def test_bad_upload_gets_4xx_and_server_keeps_answering(
    client: TestClient, files: dict, status: int, message: str
) -> None:
    response = client.post("/predict/image", files=files)
    assert response.status_code == status
    assert message in json.dumps(response.json())
    assert (
        client.post("/predict/image", files={"file": ("ok.png", png_bytes(), "image/png")}).status_code == 200
    )


def test_malformed_json_and_oversized_body(client: TestClient) -> None:
    malformed = client.post("/predict", content=b'{"images": [', headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["detail"]
    big = client.post("/predict", content=b"0" * 300_001, headers={"content-type": "application/json"})
    assert big.status_code == 413
    assert "300000 bytes" in big.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(40):
            yield b" " * 10_000

    streamed = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.get("/ready").status_code == 200


def oip_request(images: np.ndarray, **extra: object) -> dict:
    tensor = {
        "name": "images",
        "shape": list(images.shape),
        "datatype": "UINT8",
        "data": images.ravel().tolist(),
    }
    return {"inputs": [tensor], **extra}


def test_open_inference_protocol_round_trip(client: TestClient, model_dir: tuple[Path, Classifier]) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/cifar").json()
    assert meta["inputs"][0] == {
        "name": meta["inputs"][0]["name"],
        "datatype": "UINT8",
        "shape": [-1, 32, 32, 3],
    }
    assert meta["outputs"][0]["shape"] == [-1, 10]
    assert client.get("/v2/models/cifar/ready").json()["ready"] is True

    images = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    response = client.post("/v2/models/cifar/infer", json=oip_request(images, id="req-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1"
    assert body["model_name"] == "cifar"
    logits = next(o for o in body["outputs"] if o["name"] == "logits")
    assert logits["datatype"] == "FP32"
    assert logits["shape"] == [2, 10]
    np.testing.assert_allclose(
        np.reshape(logits["data"], (2, 10)), torch_logits(model_dir[1], images), atol=1e-4
    )


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"inputs": []}, 400, "exactly one tensor"),
        (
            {"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": [0]}]},
            400,
            "expected 'UINT8'",
        ),
        (
            {"inputs": [{"name": "images", "shape": [1, 28, 28, 3], "datatype": "UINT8", "data": [0]}]},
            400,
            "expected [N, 32, 32, 3]",
        ),
        (
            {"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": [0]}]},
            400,
            "needs 3072",
        ),
        ({"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "UINT8"}]}, 400, "no 'data'"),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 32, 32, 3], "datatype": "UINT8"}]},
            400,
            "unknown input",
        ),
        (
            {
                "inputs": [
                    {"name": "images", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": [0] * 3072}
                ],
                "outputs": [{"name": "embeddings"}],
            },
            400,
            "unknown output 'embeddings'",
        ),
        (
            {"inputs": [{"name": "images", "shape": [9, 32, 32, 3], "datatype": "UINT8", "data": [0]}]},
            413,
            "limit of 8",
        ),
    ],
)
def test_open_inference_protocol_bad_requests_get_its_error_body(
    client: TestClient, payload: dict, status: int, message: str
) -> None:
    response = client.post("/v2/models/cifar/infer", json=payload)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_unknown_model_name_is_404_with_the_protocols_error_body(client: TestClient) -> None:
    response = client.post("/v2/models/resnet/infer", json=oip_request(np.zeros((1, 32, 32, 3), np.uint8)))
    assert response.status_code == 404
    assert "'cifar'" in response.json()["error"]
    assert client.get("/v2/models/cifar/versions/m2/ready").json() == {
        "error": "model 'cifar' has no version 'm2'; it has 'm1'"
    }
    assert client.get("/v2/no/such/route").json() == {"error": "Not Found"}
    assert client.get("/no/such/route").json() == {"detail": "Not Found"}  # FastAPI's own, off the protocol


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from the Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_count_requests_errors_and_latency(client: TestClient) -> None:
    image = np.zeros((1, 32, 32, 3), dtype=int).tolist()
    for _ in range(3):
        assert client.post("/predict", json={"images": image}).status_code == 200
    assert client.post("/predict", json={"images": []}).status_code == 422
    text = client.get("/metrics").text
    assert metric(text, "http_requests_total", route="/predict", status="200") == 3
    assert metric(text, "http_request_errors_total", route="/predict", status="422") == 1
    assert metric(text, "http_request_duration_seconds_count", route="/predict") == 4
    assert metric(text, "predicted_images_total") == 3


def test_ready_is_503_until_the_model_is_loaded(model_dir: tuple[Path, Classifier]) -> None:
    app = create_app(settings=Settings(model_dir=model_dir[0]))
    client = TestClient(app)  # not entered: the lifespan (model load) has not run
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert client.get("/v2/health/ready").status_code == 503


def test_slow_inference_times_out_with_504(
    model_dir: tuple[Path, Classifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    settings = Settings(model_dir=model_dir[0], timeout_s=0.2, threads=1)
    with TestClient(create_app(settings=settings)) as client:
        monkeypatch.setattr("onnxruntime.InferenceSession.run", lambda *args, **kwargs: release.wait(5))
        response = client.post("/predict", json={"images": np.zeros((1, 32, 32, 3), dtype=int).tolist()})
        release.set()
    assert response.status_code == 504
    assert "0.2 s" in response.json()["detail"]
