"""EfficientNet-B0..B7 (Tan & Le, 2019) and EfficientNet-Lite0..4, built from the shared MBConv block.

Module names follow torchvision's ``efficientnet.py`` so its ImageNet checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import torch
from torch import nn

from .blocks import ConvNormAct, MBConv, PaddingMode, init_weights, make_divisible, round_repeats


@dataclass(frozen=True)
class StageConfig:
    """One stage of the B0 baseline: MBConv ``expand_ratio``, kernel, first stride, channels, repeats."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


B0_STAGES: tuple[StageConfig, ...] = (
    StageConfig(1, 3, 1, 32, 16, 1),
    StageConfig(6, 3, 2, 16, 24, 2),
    StageConfig(6, 5, 2, 24, 40, 2),
    StageConfig(6, 3, 2, 40, 80, 3),
    StageConfig(6, 5, 1, 80, 112, 3),
    StageConfig(6, 5, 2, 112, 192, 4),
    StageConfig(6, 3, 1, 192, 320, 1),
)


@dataclass(frozen=True)
class Scaling:
    """Compound scaling of one variant: width and depth multipliers, the paper's resolution, dropout."""

    width: float
    depth: float
    resolution: int
    dropout: float


EFFICIENTNET_SCALING: dict[str, Scaling] = {
    "efficientnet_b0": Scaling(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Scaling(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Scaling(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Scaling(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": Scaling(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": Scaling(1.6, 2.2, 456, 0.4),
    "efficientnet_b6": Scaling(1.8, 2.6, 528, 0.5),
    "efficientnet_b7": Scaling(2.0, 3.1, 600, 0.5),
}

EFFICIENTNET_LITE_SCALING: dict[str, Scaling] = {
    "efficientnet_lite0": Scaling(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Scaling(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Scaling(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": Scaling(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": Scaling(1.4, 1.8, 300, 0.3),
}

# B5-B7 checkpoints were ported from TensorFlow, whose batch norm uses eps=1e-3 (torchvision does the same)
_TF_BATCH_NORM = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


class EfficientNet(nn.Module):
    def __init__(self, scaling: Scaling, num_classes: int = 1000, *, lite: bool = False,
                 stochastic_depth_prob: float = 0.2, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 padding: PaddingMode = "symmetric"):
        super().__init__()
        # Lite drops squeeze-and-excite and swaps SiLU for ReLU6 (both quantize badly), keeps the stem,
        # head and the first and last stages' depths fixed while scaling.
        activation = nn.ReLU6 if lite else nn.SiLU
        stages = [self._scale_stage(s, scaling, fix_depth=lite and i in (0, len(B0_STAGES) - 1))
                  for i, s in enumerate(B0_STAGES)]
        stem = 32 if lite else make_divisible(32 * scaling.width)
        stages[0] = replace(stages[0], in_channels=stem)
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, stride=2, norm_layer=norm_layer,
                                               activation=activation, padding=padding)]
        total_blocks = sum(s.repeats for s in stages)
        block_index = 0
        for stage in stages:
            blocks: list[nn.Module] = []
            for i in range(stage.repeats):
                blocks.append(MBConv(
                    stage.in_channels if i == 0 else stage.out_channels, stage.out_channels, stage.kernel,
                    stage.stride if i == 0 else 1, stage.expand_ratio, se=not lite, activation=activation,
                    norm_layer=norm_layer, drop_path=stochastic_depth_prob * block_index / total_blocks,
                    padding=padding))
                block_index += 1
            layers.append(nn.Sequential(*blocks))
        head_in = stages[-1].out_channels
        head = 1280 if lite else 4 * head_in
        layers.append(ConvNormAct(head_in, head, 1, norm_layer=norm_layer, activation=activation, padding=padding))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(scaling.dropout, inplace=True), nn.Linear(head, num_classes))
        self._init_weights()

    @staticmethod
    def _scale_stage(stage: StageConfig, scaling: Scaling, fix_depth: bool) -> StageConfig:
        return StageConfig(
            stage.expand_ratio, stage.kernel, stage.stride,
            make_divisible(stage.in_channels * scaling.width), make_divisible(stage.out_channels * scaling.width),
            stage.repeats if fix_depth else round_repeats(stage.repeats, scaling.depth))

    def _init_weights(self) -> None:
        def uniform(linear: nn.Linear) -> None:
            bound = 1.0 / linear.out_features ** 0.5
            nn.init.uniform_(linear.weight, -bound, bound)

        init_weights(self, uniform)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def efficientnet(name: str, num_classes: int = 1000, padding: PaddingMode = "symmetric") -> EfficientNet:
    if name in EFFICIENTNET_LITE_SCALING:
        return EfficientNet(EFFICIENTNET_LITE_SCALING[name], num_classes, lite=True, padding=padding)
    norm_layer = _TF_BATCH_NORM if name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7") else nn.BatchNorm2d
    return EfficientNet(EFFICIENTNET_SCALING[name], num_classes, norm_layer=norm_layer, padding=padding)
