"""The server's OpenAPI document tells the truth: a schema-driven fuzzer (Schemathesis) sends
every operation requests generated from the document, valid and invalid, to the real server
over HTTP, and checks each answer against it: no 5xx, every status code, content type, header
and body as declared, invalid requests refused, undeclared methods answered 405 with `Allow`.

One check is left out: that every schema-valid request is accepted. A JSON schema cannot say
that a string is a decodable PNG, or that a tensor's data holds as many values as its shape
needs, so the fuzzer's "valid" requests include such ones; the server refuses them, with a
4xx that names the problem, and the document declares those 4xx.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(served_url: str) -> str:
    return served_url


def test_every_operation_keeps_to_the_document(server: str, tmp_path: Path) -> None:
    """Schemathesis's own command, every phase (examples, coverage, fuzzing, stateful), a fixed
    seed so that a failure here is reproducible with the command it prints."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{server}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "40", "--seed", "20261202", "--no-color",
        "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
    ]  # fmt: skip
    # in tmp_path: the fuzzer keeps its cache there, not in the checkout
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    sys.stdout.write(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated, result.stdout[-2000:]
    assert int(generated.group(1)) > 300, "the fuzzer sent too few requests to mean much"
    assert generated.group(1) == generated.group(2)
    assert re.search(r"Tested: 15\b", result.stdout), "not every operation was tested"


def test_the_document_covers_every_route(server: str) -> None:
    document = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert set(document["paths"]) == {
        "/health", "/ready", "/metadata", "/predict", "/predict/image", "/metrics", "/v2",
        "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}", "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
    }  # fmt: skip
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert {"200", "400", "404", "413", "503", "504"} <= set(infer["responses"])
    assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "requestBody" in document["paths"]["/predict"]["post"]
