"""The inference app under uvicorn on a loopback port, as the inference image runs it, for
the tests that need a real HTTP server (real protocol clients, the schema-driven fuzzer)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import uvicorn

from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import export_onnx
from cifar_pipeline.processes import free_port
from cifar_pipeline.serving.app import Settings, create_app

MODEL = "cifar"
NAMES = [f"c{i}" for i in range(10)]


def exported_model(directory: Path) -> Classifier:
    """A small untrained classifier, exported as the build step serves it; returned for its logits."""
    torch.manual_seed(0)
    classifier = Classifier(10, [0.5] * 3, [0.25] * 3).eval()
    export_onnx(classifier, directory / "model.onnx")
    (directory / "metadata.json").write_text(json.dumps({"model_run_id": "m1", "class_names": NAMES}))
    return classifier


@contextmanager
def serving(model_dir: Path, **settings: Any) -> Iterator[str]:
    """The server's base URL (`http://127.0.0.1:<port>`) while it runs; `settings` override
    the defaults here (model name MODEL, batches of up to 16)."""
    port = free_port()
    app = create_app(Settings(**{"model_dir": model_dir, "max_batch": 16, "model_name": MODEL, **settings}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("the inference server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
