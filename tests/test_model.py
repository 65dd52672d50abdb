from pathlib import Path

import numpy as np
import torch

from cifar_pipeline.model import Classifier, parameter_count
from cifar_pipeline.onnx_export import export_onnx, torch_logits
from cifar_pipeline.onnx_inference import onnx_logits


def test_vgg11_bn_cifar_shape_and_parameter_count() -> None:
    model = Classifier(10, [0.5] * 3, [0.25] * 3).eval()
    out = model(torch.zeros((3, 32, 32, 3), dtype=torch.uint8))
    assert out.shape == (3, 10)
    # VGG11-BN features (9,225,984) + 512->10 head (5,130): ~9.2M
    assert parameter_count(model) == 9_231_114


def test_normalisation_is_part_of_the_model() -> None:
    model = Classifier(10, [0.2, 0.4, 0.6], [0.5, 0.5, 0.5])
    image = torch.full((1, 32, 32, 3), 255, dtype=torch.uint8)
    normalized = model.normalize(image)
    assert normalized.shape == (1, 3, 32, 32)
    torch.testing.assert_close(normalized[0, :, 0, 0], torch.tensor([1.6, 1.2, 0.8]))


def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(10, [0.5] * 3, [0.25] * 3).eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        np.testing.assert_allclose(onnx_logits(path, images), torch_logits(model, images), atol=1e-4)
