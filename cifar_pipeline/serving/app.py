"""HTTP inference server for the exported ONNX classifier.

The ONNX graph takes raw uint8 images (N, 32, 32, 3) and does its own normalisation,
so this server does no preprocessing of its own: what it serves is exactly what
training exported.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
IMAGE_SHAPE = (32, 32, 3)
DEFAULT_MAX_BATCH = 512


class PredictRequest(BaseModel):
    # Nested lists rather than a typed 4-D list: pydantic would validate ~3k ints per
    # image one by one; numpy checks shape and range in one pass instead.
    images: list[Any] = Field(description="Batch of images, each 32x32x3 uint8 (HWC, RGB).")


class Prediction(BaseModel):
    class_id: int
    label: str
    probabilities: list[float]
    logits: list[float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


@dataclass
class LoadedModel:
    session: ort.InferenceSession
    input_name: str
    metadata: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    def logits(self, images: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {self.input_name: images})
        return np.asarray(outputs[0], dtype=np.float32)


def load_model(model_dir: Path) -> LoadedModel:
    options = ort.SessionOptions()
    # Size intra-op threads to the CPUs this container may use, not the host's.
    options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)))
    session = ort.InferenceSession(
        str(model_dir / MODEL_FILE), sess_options=options, providers=["CPUExecutionProvider"]
    )
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    return LoadedModel(session=session, input_name=session.get_inputs()[0].name, metadata=metadata)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def images_from_json(images: list[Any], max_batch: int) -> np.ndarray:
    """Turn a JSON batch into a uint8 array, or raise HTTP 422 naming what is wrong."""
    if not images:
        raise HTTPException(status_code=422, detail="'images' is empty: send at least one image")
    if len(images) > max_batch:
        raise HTTPException(
            status_code=413, detail=f"batch of {len(images)} images exceeds the limit of {max_batch}"
        )
    try:
        array = np.asarray(images)
    except ValueError as exc:  # ragged nesting
        raise HTTPException(status_code=422, detail=f"'images' is not a regular array: {exc}") from exc
    if array.shape[1:] != IMAGE_SHAPE:
        raise HTTPException(
            status_code=422,
            detail=f"each image must have shape {list(IMAGE_SHAPE)} (HWC), got {list(array.shape[1:])}",
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise HTTPException(status_code=422, detail=f"pixels must be integers 0-255, got {array.dtype}")
    if array.min() < 0 or array.max() > 255:
        raise HTTPException(status_code=422, detail="pixels must be in the range 0-255")
    return array.astype(np.uint8)


def create_app(model_dir: Path | None = None, max_batch: int | None = None) -> FastAPI:
    resolved_dir = model_dir or Path(os.environ.get("MODEL_DIR", "/srv/model"))
    limit = max_batch or int(os.environ.get("MAX_BATCH", DEFAULT_MAX_BATCH))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        app.state.model = load_model(resolved_dir)
        # Warm-up: the first ONNX Runtime call allocates its arenas; do it before /ready says yes.
        app.state.model.logits(np.zeros((1, *IMAGE_SHAPE), dtype=np.uint8))
        app.state.ready = True
        log.info("model loaded from %s", resolved_dir)
        yield
        app.state.ready = False

    app = FastAPI(title="CIFAR classifier", lifespan=lifespan)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    def ready(request: Request) -> dict[str, str]:
        if not getattr(request.app.state, "ready", False):
            raise HTTPException(status_code=503, detail="model not loaded yet")
        return {"status": "ready"}

    @app.get("/metadata")
    def metadata(request: Request) -> dict[str, Any]:
        model: LoadedModel = request.app.state.model
        return {
            **model.metadata,
            "input": {"name": model.input_name, "shape": [-1, *IMAGE_SHAPE], "dtype": "uint8"},
            "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
        }

    # A plain `def` route: FastAPI runs it in its threadpool, so blocking inference
    # does not stall the event loop.
    @app.post("/predict")
    def predict(body: PredictRequest, request: Request) -> PredictResponse:
        model: LoadedModel = request.app.state.model
        images = images_from_json(body.images, limit)
        logits = model.logits(images)
        probabilities = softmax(logits)
        names = model.class_names
        return PredictResponse(
            predictions=[
                Prediction(
                    class_id=int(row.argmax()),
                    label=names[int(row.argmax())],
                    probabilities=[float(p) for p in probs],
                    logits=[float(v) for v in row],
                )
                for row, probs in zip(logits, probabilities, strict=True)
            ]
        )

    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn cifar_pipeline.serving.app:app` builds the app lazily from MODEL_DIR,
    # so importing this module (e.g. in tests) needs no model on disk.
    if name == "app":
        return create_app()
    raise AttributeError(name)
