"""The Open Inference Protocol v2 inference request and response, with the binary tensor
data extension that Triton's clients use by default.

A request body is the JSON inference request, optionally followed by binary tensor data:
then the `Inference-Header-Content-Length` header gives the JSON's length, and each input
sent as binary carries its size in bytes as the parameter `binary_data_size`. A response
is JSON, or JSON followed by the binary data of the outputs asked for as binary (the
output parameter `binary_data`, or the request parameter `binary_data_output` for all of
them), in the order the outputs are listed. Binary data is little-endian, row major.
See kserve/open-inference-protocol and Triton's extension_binary_data.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from cifar_pipeline.serving.inputs import IMAGE_SHAPE, InputError, check_batch_size, parse_json, pixel_array

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
INPUT_DATATYPE = "UINT8"
OUTPUT_DATATYPE = "FP32"
OUTPUT_NAMES = ("logits", "probabilities")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    request_id: str | None
    outputs: tuple[RequestedOutput, ...]


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}", status=400)
    return value


def _flag(parameters: dict[str, Any], key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InputError(f"parameter {key!r} must be true or false, got {value!r}", status=400)
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """The JSON inference request and the binary data after it (empty without the header)."""
    if header_length is None:
        return parse_json(body), b""
    try:
        length = int(header_length)
    except ValueError:
        raise InputError(f"Inference-Header-Content-Length {header_length!r} is not a number", 400) from None
    if not 0 < length <= len(body):
        raise InputError(
            f"Inference-Header-Content-Length {length} does not fit a body of {len(body)} bytes", status=400
        )
    return parse_json(body[:length]), body[length:]


def _input_tensor(tensor: Any, input_name: str, binary: bytes, max_batch: int) -> np.ndarray:
    tensor = _object(tensor, "an input tensor")
    name = tensor.get("name")
    if name != input_name:
        raise InputError(f"unknown input {name!r}: the model's input is {input_name!r}", status=400)
    if tensor.get("datatype") != INPUT_DATATYPE:
        raise InputError(
            f"input {name!r}: datatype {tensor.get('datatype')!r}, expected {INPUT_DATATYPE!r}", status=400
        )
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise InputError(f"input {name!r}: shape {shape!r} is not a list of sizes", status=400)
    if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
        raise InputError(f"input {name!r}: shape {shape}, expected [N, 32, 32, 3]", status=400)
    check_batch_size(shape[0], max_batch)
    size = int(np.prod(shape))
    parameters = _object(tensor.get("parameters"), f"input {name!r}: 'parameters'")
    if "binary_data_size" in parameters:
        declared = parameters["binary_data_size"]
        if "data" in tensor:
            raise InputError(f"input {name!r}: both 'data' and 'binary_data_size'", status=400)
        if declared != size or len(binary) != size:
            raise InputError(
                f"input {name!r}: shape {shape} of UINT8 needs {size} bytes; binary_data_size is "
                f"{declared!r} and the body holds {len(binary)} bytes after the JSON",
                status=400,
            )
        return np.frombuffer(binary, dtype=np.uint8).reshape(shape)
    if binary:
        raise InputError(f"{len(binary)} bytes after the JSON but no input declares binary_data_size", 400)
    if "data" not in tensor:
        raise InputError(f"input {name!r}: no 'data' and no 'binary_data_size'", status=400)
    flat = pixel_array(tensor["data"], f"input {name!r}: 'data'").reshape(-1)
    if flat.size != size:
        raise InputError(f"input {name!r}: 'data' holds {flat.size} values; shape {shape} needs {size}", 400)
    return flat.reshape(shape)


def parse_request(body: bytes, header_length: str | None, input_name: str, max_batch: int) -> InferRequest:
    payload, binary = split_body(body, header_length)
    if not isinstance(payload, dict):
        raise InputError("the inference request must be a JSON object", status=400)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f"'id' must be a string, got {request_id!r}", status=400)
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InputError(f"'inputs' must list exactly one tensor, {input_name!r}", status=400)
    images = _input_tensor(inputs[0], input_name, binary, max_batch)
    parameters = _object(payload.get("parameters"), "'parameters'")
    all_binary = _flag(parameters, "binary_data_output", False)
    requested = payload.get("outputs")
    if requested is None:
        outputs = tuple(RequestedOutput(name, all_binary) for name in OUTPUT_NAMES)
    elif isinstance(requested, list):
        outputs = tuple(_requested_output(output, all_binary) for output in requested)
    else:
        raise InputError("'outputs' must be a list", status=400)
    return InferRequest(images, request_id, outputs)


def _requested_output(output: Any, all_binary: bool) -> RequestedOutput:
    output = _object(output, "a requested output")
    name = output.get("name")
    if name not in OUTPUT_NAMES:
        raise InputError(f"unknown output {name!r}: the model's outputs are {', '.join(OUTPUT_NAMES)}", 400)
    parameters = _object(output.get("parameters"), f"output {name!r}: 'parameters'")
    return RequestedOutput(name, _flag(parameters, "binary_data", all_binary))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_response(
    request: InferRequest, logits: np.ndarray, model_name: str, model_version: str
) -> EncodedResponse:
    """The inference response: JSON, then the binary outputs' data if any was asked for."""
    # each output computed only if asked for: this runs on every request
    compute = {
        "logits": lambda: logits.astype(np.float32, copy=False),
        "probabilities": lambda: softmax(logits),
    }
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in request.outputs:
        array = compute[output.name]()
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": OUTPUT_DATATYPE,
            "shape": list(array.shape),
        }
        if output.binary:
            data = array.astype("<f4").tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.request_id is not None:
        response["id"] = request.request_id
    response["outputs"] = tensors
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return EncodedResponse(header, "application/json", {})
    return EncodedResponse(
        header + b"".join(blobs),
        "application/octet-stream",
        {"Inference-Header-Content-Length": str(len(header))},
    )
