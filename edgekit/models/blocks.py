"""The building blocks every edgekit network is made of, each written once.

Module attribute names follow torchvision (``conv``, ``block``, ``fc1``/``fc2``...) because published
checkpoints are keyed by them: matching names is what lets them load with ``strict=True``.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

PaddingMode = Literal["symmetric", "tf_same"]
PADDING_MODES: tuple[str, ...] = ("symmetric", "tf_same")

ActivationFactory = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10% of it."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth_multiplier: float) -> int:
    """EfficientNet's depth scaling: always round the number of blocks up."""
    return int(math.ceil(repeats * depth_multiplier))


def init_weights(model: nn.Module, linear_init: Callable[[nn.Linear], None]) -> None:
    """torchvision's initialisation: He-normal convs (fan out), unit BN, zero biases; the classifier's
    weights differ between families, so the caller passes that part."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            linear_init(m)
            nn.init.zeros_(m.bias)


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding TensorFlow's SAME uses: any odd pixel goes after, not before."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow SAME padding; same parameters as nn.Conv2d, so checkpoints are interchangeable.

    On stride 2 TF pads (0, 1) where PyTorch pads (1, 1): weights trained in TF shift by a pixel otherwise
    and lose a large part of their accuracy.
    """

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
           bias: bool = False, padding: PaddingMode = "symmetric") -> nn.Conv2d:
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if padding == "tf_same":
        return TFSameConv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
    if padding != "symmetric":
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                     groups=groups, bias=bias)


class ConvNormAct(nn.Sequential):
    """conv -> batch norm -> activation; ``activation=None`` gives the linear projection of a bottleneck."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 activation: ActivationFactory | None = nn.ReLU6, padding: PaddingMode = "symmetric"):
        layers: list[nn.Module] = [
            conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, padding=padding),
            norm_layer(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, bottleneck of two 1x1 convs, sigmoid gate on the input."""

    def __init__(self, channels: int, squeeze_channels: int, activation: ActivationFactory = nn.SiLU):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class StochasticDepth(nn.Module):
    """Drops a residual branch per sample while training (scaled to keep the expectation); identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DepthwiseSeparable(nn.Module):
    """MobileNet v1's block: 3x3 depthwise conv then 1x1 pointwise conv, each with BN and ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding: PaddingMode = "symmetric"):
        super().__init__()
        self.dw = ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels, padding=padding)
        self.pw = ConvNormAct(in_channels, out_channels, 1, padding=padding)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    """MobileNet v2's block: expand 1x1, depthwise 3x3, linear 1x1 projection, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float,
                 padding: PaddingMode = "symmetric"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, padding=padding))  # pw
        layers.append(ConvNormAct(hidden, hidden, 3, stride, groups=hidden, padding=padding))  # dw
        # pw-linear; unpacked so the keys are conv.N / conv.N+1 as in torchvision's checkpoints
        layers.extend(ConvNormAct(hidden, out_channels, 1, activation=None, padding=padding))
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MBConv(nn.Module):
    """EfficientNet's block: inverted residual with optional squeeze-and-excite and stochastic depth."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: float,
                 *, se: bool = True, activation: ActivationFactory = nn.SiLU,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, drop_path: float = 0.0,
                 padding: PaddingMode = "symmetric"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        expanded = make_divisible(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm_layer=norm_layer, activation=activation,
                                      padding=padding))  # expand
        layers.append(ConvNormAct(expanded, expanded, kernel_size, stride, groups=expanded,
                                  norm_layer=norm_layer, activation=activation, padding=padding))  # dw
        if se:
            # squeeze ratio is relative to the block's input, not the expanded width (paper, torchvision)
            layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4), activation=nn.SiLU))
        layers.append(ConvNormAct(expanded, out_channels, 1, norm_layer=norm_layer, activation=None,
                                  padding=padding))  # project
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_path)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out
