"""MobileNet v1 (Howard et al., 2017) and v2 (Sandler et al., 2018), built from the shared blocks."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvNormAct, DepthwiseSeparable, InvertedResidual, PaddingMode, init_weights, make_divisible

# (output channels, stride) of the 13 depthwise-separable blocks, at width 1.0
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)

# (expand ratio t, output channels c, repeats n, first stride s) of each stage, at width 1.0
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _init_weights(model: nn.Module) -> None:
    init_weights(model, lambda linear: nn.init.normal_(linear.weight, 0, 0.01))


class MobileNetV1(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.001,
                 padding: PaddingMode = "symmetric"):
        super().__init__()
        channels = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvNormAct(3, channels, 3, stride=2, padding=padding)]
        for out, stride in MOBILENET_V1_BLOCKS:
            out = make_divisible(out * width)
            layers.append(DepthwiseSeparable(channels, out, stride, padding=padding))
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class MobileNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2,
                 padding: PaddingMode = "symmetric"):
        super().__init__()
        channels = make_divisible(32 * width)
        self.last_channel = make_divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [ConvNormAct(3, channels, 3, stride=2, padding=padding)]
        for t, c, n, s in MOBILENET_V2_STAGES:
            out = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t, padding=padding))
                channels = out
        layers.append(ConvNormAct(channels, self.last_channel, 1, padding=padding))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))
