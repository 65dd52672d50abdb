"""The classifier exported to ONNX gives PyTorch's logits at any batch size (its shape and
normalisation: tests/unit/test_model.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_pipeline.model import Classifier
from cifar_pipeline.onnx_export import export_onnx, torch_logits
from cifar_pipeline.onnx_inference import onnx_logits

pytestmark = pytest.mark.slow


def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(10, [0.5] * 3, [0.25] * 3).eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        np.testing.assert_allclose(onnx_logits(path, images), torch_logits(model, images), atol=1e-4)
