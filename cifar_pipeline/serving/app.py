"""HTTP inference server for the exported ONNX classifier.

The ONNX graph takes raw uint8 images (N, 32, 32, 3) and does its own normalisation,
so what this server serves is exactly what training exported. Uploaded PNG/JPEG files
are turned into 32x32 RGB by the same code (`cifar_pipeline.images`) that turned the
training images, so serving cannot resize differently from training.

Routes: /health, /ready, /metadata, POST /predict (JSON batch of uint8 arrays or base64
PNG/JPEG), POST /predict/image (one uploaded file), the Open Inference Protocol v2
(/v2, /v2/health/*, /v2/models/{name}[/versions/{version}][/ready|/infer], with the binary
tensor data extension, see oip.py; errors there in the protocol's {"error": ...} body)
and /metrics.

Settings come from the environment (see `Settings.from_env`). Parsing runs in a thread
pool sized to the container's CPUs; inference runs on one thread that batches the
requests waiting at that moment (`batching.DynamicBatcher`) and gives each model call all
the CPUs. Each request is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cifar_pipeline.serving import inputs
from cifar_pipeline.serving.batching import DynamicBatcher
from cifar_pipeline.serving.errors import install_error_handlers
from cifar_pipeline.serving.inputs import IMAGE_SHAPE
from cifar_pipeline.serving.metrics import BodyLimitMiddleware, MetricsMiddleware, ServerMetrics
from cifar_pipeline.serving.oip import softmax
from cifar_pipeline.serving.oip_routes import add_oip_routes
from cifar_pipeline.serving.schemas import (
    NOT_LOADED,
    PREDICT_BODY,
    PROMETHEUS_TEXT,
    TOO_BIG,
    TOO_SLOW,
    ErrorDetail,
    errors,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


def available_cpus() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Settings:
    model_dir: Path = Path("/srv/model")
    model_name: str = "cifar-classifier"  # the Open Inference Protocol's model name
    max_batch: int = 512
    max_body_bytes: int = 16 * 1024 * 1024  # a full batch of 512 images as JSON is ~8 MB
    timeout_s: float = 30.0
    threads: int = 0  # ONNX Runtime threads per model call; 0: one per CPU this container may use

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            model_dir=Path(env.get("MODEL_DIR", cls.model_dir)),
            model_name=env.get("MODEL_NAME", cls.model_name),
            max_batch=int(env.get("MAX_BATCH", cls.max_batch)),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", cls.max_body_bytes)),
            timeout_s=float(env.get("REQUEST_TIMEOUT_S", cls.timeout_s)),
            threads=int(env.get("INFERENCE_THREADS", cls.threads)),
        )


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


def load_model(model_dir: Path, threads: int) -> LoadedModel:
    options = ort.SessionOptions()
    # One model call at a time (the batcher's thread), so each call may use every CPU.
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model_dir / MODEL_FILE), sess_options=options, providers=["CPUExecutionProvider"]
    )
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    return LoadedModel(session=session, input_name=session.get_inputs()[0].name, metadata=metadata)


def predictions(logits: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    probabilities = softmax(logits)
    return [
        {
            "class_id": int(row.argmax()),
            "label": names[int(row.argmax())],
            "probabilities": probs.tolist(),
            "logits": row.tolist(),
        }
        for row, probs in zip(logits, probabilities, strict=True)
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    threads = settings.threads or available_cpus()
    metrics = ServerMetrics()
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["pool"] = ThreadPoolExecutor(max_workers=available_cpus(), thread_name_prefix="parse")
        loaded = load_model(settings.model_dir, threads)
        # Warm-up: the first ONNX Runtime call allocates its arenas; do it before /ready says yes.
        loaded.logits(np.zeros((1, *IMAGE_SHAPE), dtype=np.uint8))
        state["model"] = loaded
        state["batcher"] = DynamicBatcher(loaded.logits, settings.max_batch)
        # Each JSON request builds ~1,000 small lists; the collections they trigger would
        # keep re-scanning every long-lived object (FastAPI, ONNX Runtime, numpy), a ~20 ms
        # pause every few dozen requests. Frozen objects are left out of those scans.
        gc.freeze()
        state["ready"] = True
        log.info("model loaded from %s; %d inference threads", settings.model_dir, threads)
        yield
        state["ready"] = False
        state["batcher"].close()
        state["pool"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="CIFAR classifier", lifespan=lifespan)

    def model() -> LoadedModel:
        if not state["ready"]:
            raise HTTPException(status_code=503, detail="model not loaded yet")
        loaded: LoadedModel = state["model"]
        return loaded

    async def infer(parse: Callable[[], np.ndarray]) -> np.ndarray:
        """Parse in the pool (off the event loop), then run the model in a batch; count the images."""
        try:
            async with asyncio.timeout(settings.timeout_s):
                images = await asyncio.get_running_loop().run_in_executor(state["pool"], parse)
                logits: np.ndarray = await state["batcher"].submit(images)
        except TimeoutError:
            raise HTTPException(
                status_code=504, detail=f"inference took longer than {settings.timeout_s:g} s"
            ) from None
        metrics.images.inc(len(logits))
        return logits

    async def classify(parse: Callable[[], np.ndarray]) -> list[dict[str, Any]]:
        loaded = model()
        return predictions(await infer(parse), loaded.class_names)

    install_error_handlers(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", responses=errors(ErrorDetail, s503=NOT_LOADED))
    def ready() -> dict[str, str]:
        model()
        return {"status": "ready"}

    @app.get("/metadata", responses=errors(ErrorDetail, s503=NOT_LOADED))
    def metadata() -> dict[str, Any]:
        loaded = model()
        return {
            **loaded.metadata,
            "model_name": settings.model_name,
            "input": {"name": loaded.input_name, "shape": [-1, *IMAGE_SHAPE], "dtype": "uint8"},
            "limits": {
                "max_batch": settings.max_batch,
                "max_body_bytes": settings.max_body_bytes,
                "timeout_s": settings.timeout_s,
            },
            "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
        }

    @app.post(
        "/predict",
        openapi_extra={"requestBody": PREDICT_BODY},
        responses=errors(
            ErrorDetail,
            s400="malformed JSON",
            s413=TOO_BIG,
            s415="a base64 string that is no PNG or JPEG image",
            s422="an empty or mixed batch, or pixels of the wrong shape, type or range",
            s503=NOT_LOADED,
            s504=TOO_SLOW,
        ),
    )
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"predictions": await classify(lambda: inputs.predict_batch(body, settings.max_batch))}

    @app.post(
        "/predict/image",
        responses=errors(
            ErrorDetail,
            s400="malformed multipart data",
            s413=TOO_BIG,
            s415="a file that is no PNG or JPEG image",
            s422="no file, or an empty one",
            s503=NOT_LOADED,
            s504=TOO_SLOW,
        ),
    )
    async def predict_image(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI's idiom)
        data = await file.read()
        name = file.filename or "upload"
        return (await classify(lambda: inputs.uploaded_image(data, name)))[0]

    add_oip_routes(app, settings, model, infer, lambda: state["pool"])

    @app.get("/metrics", response_class=PlainTextResponse, responses={200: PROMETHEUS_TEXT})
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    app.state.settings = settings
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn cifar_pipeline.serving.app:app` builds the app lazily from the environment,
    # so importing this module (e.g. in tests) needs no model on disk.
    if name == "app":
        return create_app()
    raise AttributeError(name)
