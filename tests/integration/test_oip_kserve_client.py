"""The Open Inference Protocol v2 as KServe's own Python client speaks it (InferenceRESTClient,
protocol "v2"), at its defaults (binary tensor data) and with JSON tensors, against the inference
server over real HTTP: a second client, written apart from Triton's, that must agree with it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from unittest import mock

import httpx
import numpy as np
import pytest

from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import torch_logits
from tests.integration.serving_server import MODEL

# kserve parses sys.argv as it is imported (its model server's flags): pytest's own would end
# the collection (`pytest --co` reads as an abbreviation of its --configure_logging).
with mock.patch.object(sys, "argv", sys.argv[:1]):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput


@pytest.fixture(scope="module")
def server_url(served_url: str) -> str:
    return served_url


def call(coroutine_of: object) -> object:
    """Run one client call: a new client per call, closed after it (its own event loop)."""

    async def run() -> object:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            return await coroutine_of(client)
        finally:
            await client.close()

    return asyncio.run(run())


def request(images: np.ndarray, binary: bool, **extra: object) -> InferRequest:
    tensor = InferInput(name="images", shape=list(images.shape), datatype="UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    return InferRequest(model_name=MODEL, infer_inputs=[tensor], **extra)


def test_health_and_metadata_through_the_client(server_url: str) -> None:
    assert call(lambda c: c.is_server_live(server_url))
    assert call(lambda c: c.is_server_ready(server_url))
    assert call(lambda c: c.is_model_ready(server_url, MODEL))


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_inference_returns_the_models_logits(
    server_url: str, served_model: tuple[Path, Classifier], batch: int, binary: bool
) -> None:
    images = np.random.default_rng(batch + 10).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    response = call(
        lambda c: c.infer(server_url, request(images, binary, request_id=f"k-{batch}"), model_name=MODEL)
    )
    logits = response.get_output_by_name("logits").as_numpy()
    np.testing.assert_allclose(logits, torch_logits(served_model[1], images), atol=1e-4)
    assert response.id == f"k-{batch}"
    probabilities = response.get_output_by_name("probabilities").as_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_requested_outputs_only(server_url: str, served_model: tuple[Path, Classifier]) -> None:
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    wanted = [RequestedOutput("probabilities", {"binary_data": True})]
    response = call(
        lambda c: c.infer(server_url, request(images, True, request_outputs=wanted), model_name=MODEL)
    )
    assert [output.name for output in response.outputs] == ["probabilities"]


@pytest.mark.parametrize(
    ("datatype", "shape", "message"),
    [
        ("FP32", [1, 32, 32, 3], "datatype 'FP32', expected 'UINT8'"),
        ("UINT8", [1, 16, 16, 3], "shape [1, 16, 16, 3], expected [N, 32, 32, 3]"),
    ],
)
def test_bad_requests_reach_the_client_as_the_servers_message(
    server_url: str, datatype: str, shape: list[int], message: str
) -> None:
    tensor = InferInput(name="images", shape=shape, datatype=datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float32 if datatype == "FP32" else np.uint8))
    with pytest.raises(httpx.HTTPStatusError) as error:
        call(lambda c: c.infer(server_url, InferRequest(MODEL, [tensor]), model_name=MODEL))
    assert error.value.response.status_code == 400
    assert message in str(error.value)


def test_an_unknown_model_is_the_servers_404(server_url: str) -> None:
    images = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(httpx.HTTPStatusError) as error:
        call(lambda c: c.infer(server_url, request(images, True), model_name="resnet"))
    assert error.value.response.status_code == 404
    assert "unknown model 'resnet'" in str(error.value)
