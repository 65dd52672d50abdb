"""What the system test asks of a running inference server, as plain HTTP.

Each check returns its failures (empty when the server did what it must); the
system test step logs and fails on them.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from PIL import Image

JSON_TIMEOUT_S = 60


@dataclass
class Findings:
    failures: list[str] = field(default_factory=list)

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)


def predict_logits(url: str, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for `images` via POST /predict in batches of `batch_size`."""
    rows: list[list[float]] = []
    with requests.Session() as session:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            response = session.post(f"{url}/predict", json={"images": batch.tolist()}, timeout=JSON_TIMEOUT_S)
            response.raise_for_status()
            rows.extend(p["logits"] for p in response.json()["predictions"])
    return np.asarray(rows, dtype=np.float32)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def binary_infer(url: str, images: np.ndarray) -> np.ndarray | None:
    """The logits of an Open Inference Protocol request in binary tensor data both ways, written
    out by hand from the extension's document (not with the server's own code); None if refused."""
    raw = np.ascontiguousarray(images, dtype=np.uint8).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "images", "shape": list(images.shape), "datatype": "UINT8",
                 "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    answer = requests.post(
        url,
        data=header + raw,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
        timeout=30,
    )
    length = answer.headers.get("Inference-Header-Content-Length")
    if answer.status_code != 200 or length is None:
        return None
    [output] = json.loads(answer.content[: int(length)])["outputs"]
    data = answer.content[int(length) : int(length) + output["parameters"]["binary_data_size"]]
    return np.frombuffer(data, dtype="<f4").reshape(output["shape"])


def check_endpoints(url: str, images: np.ndarray, expected_logits: np.ndarray, tolerance: float) -> Findings:
    """Every route answers as documented, and all prediction routes agree with the reference."""
    found = Findings()
    get = requests.get
    found.expect(get(f"{url}/health", timeout=10).status_code == 200, "/health is not 200")
    found.expect(get(f"{url}/v2/health/live", timeout=10).json() == {"live": True}, "/v2/health/live")
    found.expect(get(f"{url}/v2/health/ready", timeout=10).json() == {"ready": True}, "/v2/health/ready")
    metadata = get(f"{url}/metadata", timeout=10).json()
    name = metadata.get("model_name", "")
    model = get(f"{url}/v2/models/{name}", timeout=10)
    found.expect(model.status_code == 200, f"/v2/models/{name} answered {model.status_code}")

    one = images[:2]
    tensor = {"name": "images", "shape": list(one.shape), "datatype": "UINT8", "data": one.ravel().tolist()}
    infer = requests.post(
        f"{url}/v2/models/{name}/infer", json={"id": "probe", "inputs": [tensor]}, timeout=30
    )
    if infer.status_code != 200:
        found.failures.append(f"v2 infer answered {infer.status_code}: {infer.text[:200]}")
    else:
        body = infer.json()
        logits = next((o for o in body["outputs"] if o["name"] == "logits"), None)
        found.expect(body.get("id") == "probe", "v2 infer did not echo the request id")
        served = np.reshape(logits["data"], logits["shape"]) if logits else None
        found.expect(
            served is not None and np.allclose(served, expected_logits[:2], atol=tolerance),
            "v2 infer logits differ from the reference",
        )
    served = binary_infer(f"{url}/v2/models/{name}/infer", one)
    found.expect(
        served is not None and np.allclose(served, expected_logits[:2], atol=tolerance),
        "v2 infer with binary tensors (Triton's clients' default) is refused or differs from the reference",
    )
    base64_batch = {"images": [base64.b64encode(png(image)).decode() for image in one]}
    encoded = requests.post(f"{url}/predict", json=base64_batch, timeout=30)
    found.expect(
        encoded.status_code == 200
        and np.allclose(
            [p["logits"] for p in encoded.json()["predictions"]], expected_logits[:2], atol=tolerance
        ),
        "base64 PNGs of the reference images are not classified like the arrays",
    )
    upload = requests.post(
        f"{url}/predict/image", files={"file": ("probe.png", png(one[0]), "image/png")}, timeout=30
    )
    found.expect(
        upload.status_code == 200
        and np.allclose(upload.json()["logits"], expected_logits[0], atol=tolerance),
        f"/predict/image of a reference image: {upload.status_code} or logits differ",
    )
    metrics = get(f"{url}/metrics", timeout=10)
    found.expect(
        metrics.status_code == 200 and "http_requests_total" in metrics.text,
        "/metrics lacks http_requests_total",
    )
    return found


def bad_requests(max_body_bytes: int) -> dict[str, Callable[[str], requests.Response]]:
    """Requests a client may get wrong; each must be answered 4xx with a message."""
    zeros = np.zeros((1, 32, 32, 3), dtype=int)
    json_headers = {"content-type": "application/json"}
    return {
        "malformed JSON": lambda u: requests.post(f"{u}/predict", data=b'{"images": [', headers=json_headers),
        "wrong shape": lambda u: requests.post(
            f"{u}/predict", json={"images": np.zeros((1, 28, 28, 3), int).tolist()}
        ),
        "wrong dtype": lambda u: requests.post(f"{u}/predict", json={"images": (zeros + 0.5).tolist()}),
        "out of range": lambda u: requests.post(f"{u}/predict", json={"images": (zeros + 256).tolist()}),
        "empty batch": lambda u: requests.post(f"{u}/predict", json={"images": []}),
        "oversized body": lambda u: requests.post(
            f"{u}/predict", data=b" " * (max_body_bytes + 1), headers=json_headers
        ),
        "non-image upload": lambda u: requests.post(
            f"{u}/predict/image", files={"file": ("notes.txt", b"not an image", "text/plain")}
        ),
        "v2 wrong datatype": lambda u: requests.post(
            f"{u}/v2/models/{model_name(u)}/infer",
            json={"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": [0]}]},
        ),
        "v2 unknown model": lambda u: requests.post(
            f"{u}/v2/models/no-such-model/infer",
            json={"inputs": [{"name": "images", "shape": [1], "datatype": "UINT8", "data": [0]}]},
        ),
    }


def model_name(url: str) -> str:
    return str(requests.get(f"{url}/metadata", timeout=10).json()["model_name"])


def check_bad_inputs(url: str, max_body_bytes: int) -> Findings:
    found = Findings()
    for problem, send in bad_requests(max_body_bytes).items():
        response = send(url)
        is_json = response.headers.get("content-type", "").startswith("application/json")
        # the Open Inference Protocol's error object on its routes, FastAPI's elsewhere
        key = "error" if problem.startswith("v2 ") else "detail"
        detail = response.json().get(key) if is_json else None
        found.expect(
            400 <= response.status_code < 500 and bool(detail),
            f"{problem}: answered {response.status_code} {response.text[:200]!r}; expected 4xx + message",
        )
        found.expect(
            requests.get(f"{url}/ready", timeout=10).status_code == 200, f"not ready after {problem}"
        )
    return found


def load_test(url: str, images: np.ndarray, concurrency: int, requests_per_worker: int) -> dict[str, float]:
    """Batch-1 requests from `concurrency` clients at once: latency percentiles and requests/s."""
    payloads = [{"images": images[i % len(images)][None].tolist()} for i in range(requests_per_worker)]

    def client(_: int) -> list[float]:
        timings = []
        with requests.Session() as session:
            for payload in payloads:
                started = time.perf_counter()
                session.post(f"{url}/predict", json=payload, timeout=30).raise_for_status()
                timings.append(time.perf_counter() - started)
        return timings

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        timings = [t for worker in pool.map(client, range(concurrency)) for t in worker]
    seconds = time.perf_counter() - started
    p50, p95, p99 = np.percentile(np.asarray(timings) * 1000, [50, 95, 99])
    prefix = f"c{concurrency}_"
    return {
        f"{prefix}latency_p50_ms": float(p50),
        f"{prefix}latency_p95_ms": float(p95),
        f"{prefix}latency_p99_ms": float(p99),
        f"{prefix}requests_per_second": len(timings) / seconds,
    }


def metadata(url: str) -> dict[str, Any]:
    response = requests.get(f"{url}/metadata", timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result
