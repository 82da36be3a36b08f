"""AlexNet (Krizhevsky et al. 2012) and VGG (Simonyan & Zisserman 2014), as torchvision defines them.

Module and parameter names are torchvision's (``features.N``, ``avgpool``, ``classifier.N``) so its ImageNet
checkpoints load with ``strict=True``. Both end in an adaptive average pool to a fixed grid (6x6, 7x7) in
front of a classifier whose first Linear layer reads that grid: at the default 224 px the pool is an identity,
at other resolutions it resamples, which ``exporters.common.export_ready`` folds into that Linear layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# VGG configuration "D" (16 weight layers): output channels of each 3x3 convolution, "M" a 2x2 max pool
VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")


class AlexNet(nn.Module):
    """torchvision's AlexNet: the single-tower variant of "One weird trick" (64-192-384-256-256 channels)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def profile_stages(self) -> list[tuple[str, list[nn.Module]]]:
        return _conv_pool_stages(self.features) + [("pool+fc x3", [self.avgpool, self.classifier])]


class VGG(nn.Module):
    """torchvision's VGG: 3x3 convolutions (optionally with batch norm) in five pooled groups, then three FCs."""

    def __init__(self, layout: Sequence[int | str] = VGG16_LAYOUT, batch_norm: bool = False,
                 num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, int(item), kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU(inplace=True))
            channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def profile_stages(self) -> list[tuple[str, list[nn.Module]]]:
        return _conv_pool_stages(self.features) + [("pool+fc x3", [self.avgpool, self.classifier])]


def _conv_pool_stages(features: nn.Sequential) -> list[tuple[str, list[nn.Module]]]:
    """One row per group of convolutions that ends in a max pool, as the papers' tables show them."""
    stages: list[tuple[str, list[nn.Module]]] = []
    group: list[nn.Module] = []
    for layer in features:
        group.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            convs = [m for m in group if isinstance(m, nn.Conv2d)]
            kernels = sorted({f"{c.kernel_size[0]}x{c.kernel_size[1]}" for c in convs})
            stages.append((f"conv{'/'.join(kernels)} x{len(convs)} + maxpool", group))
            group = []
    if group:
        stages.append(("conv", group))
    return stages


class ChannelsLast(nn.Module):
    """NCHW -> NHWC. Put in place of the grid pool by ``exporters.common.export_ready`` so that the model's own
    flatten reads (height, width, channel) order, which a converter computing in NHWC flattens without a
    TRANSPOSE."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)
