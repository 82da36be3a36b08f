"""LeNet-5 (LeCun et al. 1998): 32x32 greyscale input, tanh, average pooling, the 6-16-120-84-10 layout.

The paper's C3 connects each of its 16 maps to a subset of S2's 6 maps and its output layer is a set of RBF
units; like every modern re-implementation, C3 here is fully connected and the output a Linear layer
(61,706 parameters). C5 is a 5x5 convolution on a 5x5 map, so it is also a fully connected layer of 120.
"""

from __future__ import annotations

import torch
from torch import nn

LENET_INPUT = (1, 32, 32)  # channels, height, width


class LeNet5(nn.Module):
    in_channels = LENET_INPUT[0]

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5), nn.Tanh(), nn.AvgPool2d(2),      # C1, S2: 28x28 -> 14x14
            nn.Conv2d(6, 16, kernel_size=5), nn.Tanh(), nn.AvgPool2d(2),     # C3, S4: 10x10 -> 5x5
            nn.Conv2d(16, 120, kernel_size=5), nn.Tanh(),                    # C5: 1x1
        )
        self.classifier = nn.Sequential(nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, num_classes))  # F6, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != LENET_INPUT:
            raise ValueError(f"LeNet-5 takes 1x32x32 inputs (greyscale), got {'x'.join(map(str, x.shape[-3:]))}")
        return self.classifier(torch.flatten(self.features(x), 1))

    def profile_stages(self) -> list[tuple[str, list[nn.Module]]]:
        f = self.features
        return [("C1 conv5x5 + S2 avgpool", list(f[0:3])), ("C3 conv5x5 + S4 avgpool", list(f[3:6])),
                ("C5 conv5x5", list(f[6:8])), ("F6 fc + output fc", [self.classifier])]
