"""The Open Inference Protocol v2 routes (KServe / Triton clients): server and model
metadata, health, and inference with the binary tensor data extension (oip.py), each route
with the status codes and bodies it can answer in the OpenAPI document (schemas.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from cifar_pipeline.serving import oip
from cifar_pipeline.serving.inputs import IMAGE_SHAPE
from cifar_pipeline.serving.schemas import (
    HEADER_PARAMETER,
    INFER_BODY,
    INFER_OK,
    NOT_LOADED,
    TOO_BIG,
    TOO_SLOW,
    ProtocolError,
    errors,
)

if TYPE_CHECKING:
    from cifar_pipeline.serving.app import LoadedModel, Settings


def add_oip_routes(
    app: FastAPI,
    settings: Settings,
    model: Callable[[], LoadedModel],
    infer: Callable[[Callable[[], np.ndarray]], Awaitable[np.ndarray]],
    pool: Callable[[], Executor],
) -> None:
    """`model()`: the loaded model or a 503; `infer(parse)`: parse in the pool, then run the
    model in a batch (app.py); `pool()`: the parsing threads."""

    # Open Inference Protocol v2 (KServe / Triton clients)
    @app.get("/v2")
    def oip_server() -> dict[str, Any]:
        return {"name": "cifar-pipeline", "version": "1", "extensions": oip.EXTENSIONS}

    @app.get("/v2/health/live")
    def oip_live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", responses=errors(ProtocolError, s503=NOT_LOADED))
    def oip_ready() -> dict[str, bool]:
        model()
        return {"ready": True}

    def version_of(loaded: LoadedModel) -> str:
        return str(loaded.metadata.get("model_run_id", "1"))

    def named_model(name: str, version: str | None = None) -> LoadedModel:
        if name != settings.model_name:
            raise HTTPException(
                status_code=404, detail=f"unknown model {name!r}; this server has {settings.model_name!r}"
            )
        loaded = model()
        if version is not None and version != version_of(loaded):
            known = version_of(loaded)
            raise HTTPException(404, detail=f"model {name!r} has no version {version!r}; it has {known!r}")
        return loaded

    # the name this server answers to, as the document's example: `/docs` and a fuzzer reach the model
    model_name = PathParam(description="the model's name", examples=[settings.model_name])
    model_errors = errors(ProtocolError, s404="no model, or no version, of that name", s503=NOT_LOADED)

    def model_metadata(name: str, version: str | None) -> dict[str, Any]:
        loaded = named_model(name, version)
        classes = len(loaded.class_names)
        return {
            "name": name,
            "versions": [version_of(loaded)],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": loaded.input_name, "datatype": oip.INPUT_DATATYPE, "shape": [-1, *IMAGE_SHAPE]}
            ],
            "outputs": [
                {"name": output, "datatype": oip.OUTPUT_DATATYPE, "shape": [-1, classes]}
                for output in oip.OUTPUT_NAMES
            ],
        }

    @app.get("/v2/models/{name}", responses=model_errors)
    def oip_model(name: str = model_name) -> dict[str, Any]:
        return model_metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", responses=model_errors)
    def oip_model_version(version: str, name: str = model_name) -> dict[str, Any]:
        return model_metadata(name, version)

    @app.get("/v2/models/{name}/ready", responses=model_errors)
    def oip_model_ready(name: str = model_name) -> dict[str, Any]:
        named_model(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready", responses=model_errors)
    def oip_model_version_ready(version: str, name: str = model_name) -> dict[str, Any]:
        named_model(name, version)
        return {"name": name, "ready": True}

    async def oip_inference(name: str, version: str | None, request: Request) -> Response:
        loaded = named_model(name, version)
        body = await request.body()
        header_length = request.headers.get(oip.HEADER_LENGTH)
        parsed: list[oip.InferRequest] = []

        def parse() -> np.ndarray:
            parsed.append(oip.parse_request(body, header_length, loaded.input_name, settings.max_batch))
            return parsed[0].images

        logits = await infer(parse)
        encoded = await asyncio.get_running_loop().run_in_executor(
            pool(), oip.encode_response, parsed[0], logits, name, version_of(loaded)
        )
        return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)

    infer_errors = errors(
        ProtocolError,
        s400="a malformed request, or a tensor of the wrong name, datatype or shape",
        s404="no model, or no version, of that name",
        s413=TOO_BIG,
        s503=NOT_LOADED,
        s504=TOO_SLOW,
    )
    infer_extra = {"requestBody": INFER_BODY, "parameters": [HEADER_PARAMETER]}

    @app.post(
        "/v2/models/{name}/infer",
        response_class=Response,
        openapi_extra=infer_extra,
        responses={200: INFER_OK, **infer_errors},
    )
    async def oip_infer(request: Request, name: str = model_name) -> Response:
        return await oip_inference(name, None, request)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_class=Response,
        openapi_extra=infer_extra,
        responses={200: INFER_OK, **infer_errors},
    )
    async def oip_infer_version(version: str, request: Request, name: str = model_name) -> Response:
        return await oip_inference(name, version, request)
