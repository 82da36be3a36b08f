"""GoogLeNet / Inception v1 (Szegedy et al. 2014), as torchvision defines it, for inference.

Names are torchvision's (``conv1.conv``, ``inception3a.branch2.1.bn``, ``fc``). Two differences from the paper
that torchvision's checkpoint depends on are kept: batch norm after every convolution, and a 3x3 (not 5x5)
kernel in the "5x5" branch (``branch3``).

torchvision's ImageNet checkpoint needs two adjustments, both exact:

- its state dict holds the two auxiliary training heads (``aux1.*``, ``aux2.*``); inference never runs them,
  so ``drop_auxiliary_heads`` removes those keys before the strict load (the parameter count, 6,624,904, is
  the network without them, like ``torchvision.models.googlenet()``).
- it was trained on pixels scaled to [-1, 1] and torchvision re-maps ImageNet-normalised input to that inside
  the model (``transform_input=True``). The registry instead declares the preprocessing the weights were
  trained with, mean = std = 127.5 on 0..255, which is the same arithmetic done once before the model, so
  the exported file has no extra operators. ``GoogLeNet(transform_input=True)`` keeps torchvision's behaviour
  for code that feeds ImageNet-normalised tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..types import IMAGENET_MEAN, IMAGENET_STD

# (in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection) of each Inception module
INCEPTION_V1_MODULES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}
AUXILIARY_PREFIXES = ("aux1.", "aux2.")


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 0.001, as the checkpoint was trained) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1.

    The 1x1 convolutions in front of the 3x3s are the bottleneck that makes the module affordable: they shrink
    the channels the expensive kernel reads (``edgekit info googlenet`` prints the saving)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's kernel here is 3x3, not the paper's 5x5; its checkpoint was trained that way
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, transform_input: bool = False):
        super().__init__()
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(*INCEPTION_V1_MODULES["inception3a"])
        self.inception3b = Inception(*INCEPTION_V1_MODULES["inception3b"])
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(*INCEPTION_V1_MODULES["inception4a"])
        self.inception4b = Inception(*INCEPTION_V1_MODULES["inception4b"])
        self.inception4c = Inception(*INCEPTION_V1_MODULES["inception4c"])
        self.inception4d = Inception(*INCEPTION_V1_MODULES["inception4d"])
        self.inception4e = Inception(*INCEPTION_V1_MODULES["inception4e"])
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(*INCEPTION_V1_MODULES["inception5a"])
        self.inception5b = Inception(*INCEPTION_V1_MODULES["inception5b"])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised input -> the (pixel - 127.5) / 127.5 the checkpoint was trained on."""
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1) / 255
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1) / 255
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = getattr(self, name)(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def profile_stages(self) -> list[tuple[str, list[nn.Module]]]:
        stages: list[tuple[str, list[nn.Module]]] = [
            ("conv7x7 + maxpool", [self.conv1, self.maxpool1]),
            ("conv1x1 + conv3x3 + maxpool", [self.conv2, self.conv3, self.maxpool2])]
        pools = {"inception3b": self.maxpool3, "inception4e": self.maxpool4}
        for name in INCEPTION_V1_MODULES:
            stages.append((name + (" + maxpool" if name in pools else ""),
                           [getattr(self, name)] + ([pools[name]] if name in pools else [])))
        return stages + [("pool+fc", [self.avgpool, self.fc])]


def drop_auxiliary_heads(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    """torchvision's checkpoint without its training-only auxiliary classifiers; a note when any were dropped."""
    kept = {k: v for k, v in state.items() if not k.startswith(AUXILIARY_PREFIXES)}
    dropped = len(state) - len(kept)
    return kept, (f"{dropped} tensors of the auxiliary training heads (aux1, aux2) not loaded: inference never "
                  "runs them" if dropped else None)
