"""The Open Inference Protocol v2 as a real client speaks it: Triton's Python HTTP client at its
default settings (binary tensors in and out) and with JSON tensors, against the inference server
over real HTTP, the served logits compared with the model's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import torch_logits
from tests.integration.serving_server import MODEL


@pytest.fixture(scope="module")
def server_url(served_url: str) -> str:
    return served_url.removeprefix("http://")  # the Triton client takes host:port


@pytest.fixture
def client(server_url: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=server_url) as connection:
        yield connection


def images_input(images: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def test_health_and_metadata_through_the_client(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]
    assert client.get_model_metadata(MODEL, model_version="m1")["versions"] == ["m1"]


@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("binary_input", [True, False], ids=["binary-in", "json-in"])
def test_the_clients_default_request_returns_the_models_logits(
    client: triton.InferenceServerClient,
    served_model: tuple[Path, Classifier],
    batch: int,
    binary_input: bool,
) -> None:
    images = np.random.default_rng(batch).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    # no outputs named: the client asks for every output as binary data
    result = client.infer(MODEL, [images_input(images, binary_input)], request_id=f"req-{batch}")
    np.testing.assert_allclose(result.as_numpy("logits"), torch_logits(served_model[1], images), atol=1e-4)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (batch, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    response = result.get_response()
    assert response["id"] == f"req-{batch}"
    assert response["model_name"] == MODEL
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])


@pytest.mark.parametrize("binary_output", [True, False], ids=["binary-out", "json-out"])
def test_requested_outputs_only_and_in_the_format_asked(
    client: triton.InferenceServerClient, served_model: tuple[Path, Classifier], binary_output: bool
) -> None:
    images = np.random.default_rng(7).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    wanted = [triton.InferRequestedOutput("logits", binary_data=binary_output)]
    result = client.infer(MODEL, [images_input(images, binary=False)], outputs=wanted, model_version="m1")
    np.testing.assert_allclose(result.as_numpy("logits"), torch_logits(served_model[1], images), atol=1e-4)
    assert result.as_numpy("probabilities") is None
    [output] = result.get_response()["outputs"]
    assert ("data" in output) is not binary_output


@pytest.mark.parametrize(
    ("request_input", "outputs", "message"),
    [
        (triton.InferInput("images", [1, 32, 32, 3], "FP32"), None, "datatype 'FP32', expected 'UINT8'"),
        (
            triton.InferInput("images", [1, 28, 28, 3], "UINT8"),
            None,
            "shape [1, 28, 28, 3], expected [N, 32, 32, 3]",
        ),
        (triton.InferInput("pixels", [1, 32, 32, 3], "UINT8"), None, "unknown input 'pixels'"),
        (
            triton.InferInput("images", [1, 32, 32, 3], "UINT8"),
            [triton.InferRequestedOutput("embeddings")],
            "unknown output 'embeddings'",
        ),
    ],
    ids=["wrong-datatype", "wrong-shape", "unknown-input", "unknown-output"],
)
def test_bad_requests_reach_the_client_as_the_servers_message(
    client: triton.InferenceServerClient,
    request_input: triton.InferInput,
    outputs: list[triton.InferRequestedOutput] | None,
    message: str,
) -> None:
    shape = request_input.shape()
    dtype = np.float32 if request_input.datatype() == "FP32" else np.uint8
    request_input.set_data_from_numpy(np.zeros(shape, dtype=dtype))
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [request_input], outputs=outputs)
    assert error.value.status() == "400"
    assert message in error.value.message()


def test_an_unknown_model_is_the_servers_404(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as error:
        client.infer("resnet", [images_input(np.zeros((1, 32, 32, 3), np.uint8))])
    assert error.value.status() == "404"
    assert "unknown model 'resnet'" in error.value.message()
    assert not client.is_model_ready("resnet")


def test_the_benchmarks_requests_get_one_answer_on_every_route(server_url: str, tmp_path: Path) -> None:
    """bench/serving_throughput.py times /predict, and the v2 route with JSON and with binary
    tensors: each of its request bodies is valid and answered with the same logits."""
    from bench.serving_throughput import Body, first_prediction, oip_bodies

    picture = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    predict = Body(tmp_path / "predict.json")
    predict.path.write_text(json.dumps({"images": [picture.tolist()]}))
    v2_json, v2_binary = oip_bodies(tmp_path, picture, "images")
    url = f"http://{server_url}"
    expected = first_prediction(f"{url}/predict", predict)
    for body in (v2_json, v2_binary):
        np.testing.assert_allclose(
            first_prediction(f"{url}/v2/models/{MODEL}/infer", body), expected, atol=1e-6
        )
    assert v2_binary.headers()["Inference-Header-Content-Length"] == str(v2_binary.header_length)
