"""The classifier: its shape and size, normalisation inside the model (its ONNX export:
tests/integration/test_model.py)."""

import torch

from cifar_pipeline.model import Classifier, parameter_count


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
