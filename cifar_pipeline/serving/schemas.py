"""What the OpenAPI document says of each route: request bodies, every status code a route can
answer with its body, and the content types. Documentation only: the handlers read their
bodies themselves (off the event loop, see app.py), so nothing here validates a request.

A schema-driven fuzzer (tests/integration/test_openapi_contract.py) holds the server to this document.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from cifar_pipeline.serving.oip import HEADER_LENGTH, INPUT_DATATYPE, OUTPUT_DATATYPE, OUTPUT_NAMES


class ErrorDetail(BaseModel):
    """An error off the Open Inference Protocol's routes."""

    detail: str = Field(description="what is wrong with the request, or why it was not answered")


class ProtocolError(BaseModel):
    """The Open Inference Protocol's error object."""

    error: str = Field(description="what is wrong with the request, or why it was not answered")


def errors(model: type[BaseModel], **statuses: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: status (as `s400=...`) to its description, each with `model`'s body."""
    return {
        int(key.removeprefix("s")): {"model": model, "description": text} for key, text in statuses.items()
    }


NOT_LOADED = "the model is not loaded yet"
TOO_SLOW = "the inference took longer than the request timeout"
TOO_BIG = "the body or the batch is over the server's limit"

PIXELS = {"type": "integer", "minimum": 0, "maximum": 255}
IMAGE_ARRAY = {
    "type": "array",
    "description": "one image, 32x32 pixels of 3 channels (HWC), uint8",
    "minItems": 32,
    "maxItems": 32,
    "items": {
        "type": "array",
        "minItems": 32,
        "maxItems": 32,
        "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": PIXELS},
    },
}


def example_png() -> str:
    """A tiny PNG, base64: the server resizes any image to 32x32 as training did."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "example": {"images": [example_png()]},
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "description": "a batch: pixel arrays, or base64 PNG/JPEG files of any size",
                        "type": "array",
                        "minItems": 1,
                        "anyOf": [
                            {"items": IMAGE_ARRAY},
                            {"items": {"type": "string", "contentEncoding": "base64"}},
                        ],
                    }
                },
            },
        }
    },
}

PARAMETERS = {"type": "object", "description": "key/value parameters", "additionalProperties": True}
TENSOR_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}}
INFER_INPUT = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "description": "the model's input: see GET /v2/models/{name}"},
        "shape": {**TENSOR_SHAPE, "description": "[N, 32, 32, 3]"},
        "datatype": {"type": "string", "enum": [INPUT_DATATYPE]},
        "parameters": {
            **PARAMETERS,
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
        "data": {"type": "array", "description": "N*32*32*3 values 0-255, flat or nested, row major"},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {**PARAMETERS, "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": INFER_INPUT},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
                    "parameters": {**PARAMETERS, "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
    },
}
BINARY = {
    "type": "string",
    "format": "binary",
    "description": f"the JSON object ({HEADER_LENGTH} bytes of it), then the tensors' binary data",
}
INFER_EXAMPLE = {
    "id": "example",
    "inputs": [
        {"name": "images", "shape": [1, 32, 32, 3], "datatype": INPUT_DATATYPE, "data": [0] * 32 * 32 * 3}
    ],
    "outputs": [{"name": "logits"}],
}
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": INFER_REQUEST, "example": INFER_EXAMPLE},
        "application/octet-stream": {"schema": BINARY},
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
                    "datatype": {"type": "string", "enum": [OUTPUT_DATATYPE]},
                    "shape": TENSOR_SHAPE,
                    "parameters": PARAMETERS,
                    "data": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
    },
}
INFER_OK = {
    "description": "the outputs asked for; binary data after the JSON if any was asked for as binary",
    "content": {
        "application/json": {"schema": INFER_RESPONSE},
        "application/octet-stream": {"schema": BINARY},
    },
    "headers": {
        "Inference-Header-Content-Length": {
            "description": "with binary outputs: the length of the JSON object at the body's start",
            "schema": {"type": "integer"},
        }
    },
}
HEADER_PARAMETER = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": "with binary tensor data: the length of the JSON object at the body's start",
    "schema": {"type": "integer", "minimum": 1},
}
PROMETHEUS_TEXT = {
    "description": "Prometheus metrics in its text exposition format",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
