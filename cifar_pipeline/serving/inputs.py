"""Request bodies to uint8 image batches, or an InputError that says what is wrong.

All of this runs in the inference threads, not on the event loop: parsing a batch of
JSON pixels is CPU work.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from cifar_pipeline import images as image_codec

IMAGE_SHAPE = (32, 32, 3)


class InputError(ValueError):
    """A client mistake: answered with `status` and the message, never a 500."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> Any:
    if not body:
        raise InputError("empty request body: expected JSON")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"malformed JSON: {exc}", status=400) from exc


def check_batch_size(count: int, max_batch: int) -> None:
    if count == 0:
        raise InputError("the batch is empty: send at least one image")
    if count > max_batch:
        raise InputError(f"batch of {count} images exceeds the limit of {max_batch}", status=413)


def pixel_array(values: Any, shape_hint: str) -> np.ndarray:
    """Nested lists of integers 0-255 as uint8, refusing ragged, fractional or out-of-range data."""
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged nesting
        raise InputError(f"{shape_hint} is not a regular array: {exc}") from exc
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise InputError(f"pixels must be integers 0-255, got {array.dtype} values")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(f"pixels must be in the range 0-255, got {array.min()}..{array.max()}")
    return array.astype(np.uint8)


def decode_base64_image(text: str, index: int) -> np.ndarray:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"images[{index}]: not valid base64 ({exc})") from exc
    try:
        return image_codec.decode(data, f"images[{index}]")
    except image_codec.ImageError as exc:
        raise InputError(str(exc), status=415) from exc


def predict_batch(body: bytes, max_batch: int) -> np.ndarray:
    """`{"images": [...]}`: each image a 32x32x3 uint8 array, or a base64 PNG/JPEG of any size."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise InputError("expected a JSON object with a list under 'images'")
    items: list[Any] = payload["images"]
    # What the items are before how many: a malformed request is told what is wrong with it,
    # not that it is big. (The body limit bounds this work; decoding images waits for the count.)
    if not items:
        check_batch_size(0, max_batch)
    if all(isinstance(item, str) for item in items):
        check_batch_size(len(items), max_batch)
        return np.stack([decode_base64_image(item, i) for i, item in enumerate(items)])
    if any(isinstance(item, str) for item in items):
        raise InputError("'images' mixes base64 strings and pixel arrays: send one kind per request")
    batch = pixel_array(items, "'images'")
    if batch.shape[1:] != IMAGE_SHAPE:
        raise InputError(f"each image must have shape {list(IMAGE_SHAPE)} (HWC), got {list(batch.shape[1:])}")
    check_batch_size(len(items), max_batch)
    return batch


def uploaded_image(data: bytes, filename: str) -> np.ndarray:
    """One uploaded PNG/JPEG file, any size, turned into the model's input like the training data."""
    if not data:
        raise InputError(f"{filename}: the uploaded file is empty")
    try:
        return image_codec.decode(data, filename)[None]
    except image_codec.ImageError as exc:
        raise InputError(str(exc), status=415) from exc
