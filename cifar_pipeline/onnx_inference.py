"""Logits from an ONNX model with ONNX Runtime: what the inference image serves. No torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def onnx_logits(path: Path, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = [
        np.asarray(session.run(None, {name: images[i : i + batch_size]})[0])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)
