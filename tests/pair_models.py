"""Models of several inputs or outputs as a user writes them, in a file of their own (`edgekit export
FILE.py:NAME`): used by tests/test_multi_io.py and, under emulation, by tests/test_emulate.py."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

# The models as a user writes them: the backbone is the zoo's MobileNet v1 0.25 with Google's ImageNet weights
MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    from edgekit.models import create_model

    WEIGHTS = {weights!r}


    def unit(features):
        # x * rsqrt(sum x^2): MUL, SUM and RSQRT have int8 kernels (F.normalize converts to ABS and POW)
        return features * torch.rsqrt(torch.sum(features * features, dim=1, keepdim=True).clamp_min(1e-24))


    class PairNet(nn.Module):
        """A Siamese pair that also names what the first picture shows: both pictures through one network, the
        1000 ImageNet class scores of the left one and an embedding of each."""

        def __init__(self):
            super().__init__()
            self.net = create_model("mobilenet_v1", width=0.25, resolution=128, weights=WEIGHTS)

        def features(self, x):
            return torch.flatten(self.net.avgpool(self.net.features(x)), 1)

        def forward(self, left, right):
            features = self.features(left)
            return self.net.classifier(features), unit(features), unit(self.features(right))


    class TinyPair(nn.Module):  # random weights: fast checks of the plumbing, not of int8 quality
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
            self.head = nn.Linear(16, 4)

        def forward(self, left, right):
            a, b = self.body(left), self.body(right)
            return self.head(torch.cat([a, b], dim=1)), a - b


    class OneInput(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))


    class ReturnsDict(nn.Module):
        def forward(self, left, right):
            return {{"left": left.mean((2, 3)), "right": right.mean((2, 3))}}


    class Flat(nn.Module):  # takes 16x16 pictures only
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 16 * 16, 4)

        def forward(self, left, right):
            return self.fc(torch.flatten(left, 1)), self.fc(torch.flatten(right, 1))
''')


def write_models(folder: Path, weights: Path) -> Path:
    """The models' file, its backbone's weights at ``weights`` (Google's MobileNet v1 0.25/128 .tflite)."""
    path = folder / "pairs.py"
    path.write_text(MODELS.format(weights=str(weights)))
    return path


def load_models(path: Path):
    """The models' file imported as a module, as `edgekit export FILE.py:NAME` imports it."""
    spec = importlib.util.spec_from_file_location("multi_io_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
