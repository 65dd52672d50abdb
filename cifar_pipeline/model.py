"""VGG11 with batch norm, CIFAR variant, and the input normalisation that ships with it.

The classifier's public input is what the data format stores and what clients send:
uint8 images (N, 32, 32, 3). Scaling and per-channel normalisation are layers of the
model, so they are exported into the ONNX graph and training and serving cannot
disagree about them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

# torchvision's names for the VGG layer configurations; VGG11 is the pipeline's model
VGG_CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
FEATURES = 512  # 32x32 input after five 2x2 max-pools: 512 x 1 x 1


class Normalize(nn.Module):
    """uint8 NHWC in 0-255 -> float NCHW, normalised with the training set's statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std


def architecture_name(arch: str, batch_norm: bool) -> str:
    return f"{arch}{'_bn' if batch_norm else ''}_cifar"


def vgg_cifar(num_classes: int = 10, arch: str = "vgg11", batch_norm: bool = True) -> nn.Sequential:
    """The CIFAR variant: torchvision's VGG features, a single 512 -> classes head."""
    if arch not in VGG_CONFIGS:
        raise ValueError(f"arch={arch!r}: expected one of {', '.join(VGG_CONFIGS)}")
    return nn.Sequential(
        make_layers(cfgs[VGG_CONFIGS[arch]], batch_norm=batch_norm),
        nn.Flatten(),
        nn.Linear(FEATURES, num_classes),
    )


class Classifier(nn.Module):
    """Normalisation + network: the module that is trained, evaluated and exported."""

    def __init__(
        self,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        arch: str = "vgg11",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = vgg_cifar(num_classes, arch, batch_norm)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
