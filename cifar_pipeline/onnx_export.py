"""Export the classifier to ONNX and check that ONNX Runtime agrees with PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from cifar_pipeline.model import Classifier

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def export_onnx(model: Classifier, path: Path) -> Path:
    """Write a single-file ONNX model with a dynamic batch axis; uint8 NHWC input."""
    model = model.eval().cpu()
    example = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return path


@torch.no_grad()
def torch_logits(model: Classifier, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model = model.eval().cpu()
    chunks = [
        model(torch.from_numpy(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)
