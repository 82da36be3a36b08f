"""U-Net (Ronneberger et al. 2015) with padded convolutions, so the mask has the input's size.

The paper's network uses unpadded 3x3 convolutions (572 px in, 388 px out) and crops the skip connections;
with padding=1 the skip connections need no crop and every pixel of the input gets a class, which is what an
app overlaying a mask wants. Options: ``in_channels``, ``num_classes``, ``base_channels`` (64 in the paper;
the registry's width multiplies it), ``depth`` (poolings: 4 in the paper), ``batch_norm`` (not in the paper;
helps small training runs). The input's sides must be multiples of 2**depth.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions with ReLU: the unit of both the contracting and the expanding path."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False):
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max pool, then a DoubleConv that doubles the channels."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm))


class Up(nn.Module):
    """2x2 transposed convolution halving the channels, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 64, depth: int = 4,
                 batch_norm: bool = False):
        super().__init__()
        if not 1 <= depth <= 6:
            raise ValueError(f"U-Net depth (number of poolings) must be 1..6, got {depth}")
        if base_channels < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError("U-Net channels and classes must be positive")
        self.in_channels, self.depth = in_channels, depth
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0], batch_norm)
        self.down = nn.ModuleList(Down(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], batch_norm) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2 ** self.depth
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"U-Net of depth {self.depth} needs input sides divisible by {multiple}, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.outc(x)  # [N, classes, H, W] logits per pixel

    def profile_stages(self) -> list[tuple[str, list[nn.Module]]]:
        return ([("conv3x3 x2", [self.inc])] + [("maxpool + conv3x3 x2", [d]) for d in self.down]
                + [("upconv2x2 + concat + conv3x3 x2", [u]) for u in self.up] + [("conv1x1 (classes)", [self.outc])])
