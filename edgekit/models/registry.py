"""The model zoo: every registered name, its valid options, and the one ``create_model`` that builds it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Callable

from torch import nn

from ..errors import EdgekitError
from ..types import ModelConfig, Preprocessing
from .efficientnet import EFFICIENTNET_LITE_SCALING, EFFICIENTNET_SCALING, efficientnet
from .mobilenet import MobileNetV1, MobileNetV2

TORCHVISION_URL = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Checkpoint:
    """A published ImageNet checkpoint: file name (its hash prefix is part of the name) and how it was evaluated."""

    filename: str
    preprocessing: Preprocessing
    resolution: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    build: Callable[[float, int, str], nn.Module]  # (width, num_classes, padding) -> module
    default_resolution: int
    default_width: float | None = None  # None: width fixed by the variant (compound scaling)
    widths: tuple[float, ...] = ()
    resolutions: tuple[int, ...] = ()  # empty: any resolution in [MIN_RESOLUTION, MAX_RESOLUTION]
    paper_resolution: int | None = None
    checkpoint: Checkpoint | None = None
    description: str = ""


MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024

_REGISTRY: dict[str, ModelSpec] = {}


# Above any real label set (ImageNet-21k: 21,841); 10^8 classes would allocate a classifier of 100+ GB
MAX_CLASSES = 100_000


def _register(spec: ModelSpec) -> None:
    _REGISTRY[spec.name] = spec


_register(ModelSpec(
    "mobilenet_v1", "mobilenet_v1", lambda w, n, p: MobileNetV1(w, n, padding=p), 224, 1.0,
    widths=(0.25, 0.5, 0.75, 1.0), resolutions=(128, 160, 192, 224), paper_resolution=224,
    description="depthwise-separable convolutions (Howard et al. 2017)"))
_register(ModelSpec(
    "mobilenet_v2", "mobilenet_v2", lambda w, n, p: MobileNetV2(w, n, padding=p), 224, 1.0,
    widths=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), resolutions=(96, 128, 160, 192, 224), paper_resolution=224,
    checkpoint=Checkpoint("mobilenet_v2-b0353104.pth", Preprocessing(crop_fraction=224 / 256), 224),
    description="inverted residuals with linear bottlenecks (Sandler et al. 2018)"))

# torchvision's ImageNet checkpoints and the crop/resize each was evaluated with (its weights' transforms)
_EFFICIENTNET_CHECKPOINTS = {
    "efficientnet_b0": ("efficientnet_b0_rwightman-7f5810bc.pth", 224, 256),
    "efficientnet_b1": ("efficientnet_b1_rwightman-bac287d4.pth", 240, 255),
    "efficientnet_b2": ("efficientnet_b2_rwightman-c35c1473.pth", 288, 288),
    "efficientnet_b3": ("efficientnet_b3_rwightman-b3899882.pth", 300, 320),
    "efficientnet_b4": ("efficientnet_b4_rwightman-23ab8bcd.pth", 380, 384),
    "efficientnet_b5": ("efficientnet_b5_lukemelas-1a07897c.pth", 456, 456),
    "efficientnet_b6": ("efficientnet_b6_lukemelas-24a108a5.pth", 528, 528),
    "efficientnet_b7": ("efficientnet_b7_lukemelas-c5b4e57e.pth", 600, 600),
}

for _name, _scaling in EFFICIENTNET_SCALING.items():
    _file, _crop, _resize = _EFFICIENTNET_CHECKPOINTS[_name]
    # Default resolution is where the published weights were evaluated (B2: 288, not the paper's 260).
    _register(ModelSpec(
        _name, "efficientnet", lambda w, n, p, _n=_name: efficientnet(_n, n, padding=p), _crop,
        paper_resolution=_scaling.resolution,
        checkpoint=Checkpoint(_file, Preprocessing(crop_fraction=_crop / _resize, interpolation="bicubic"), _crop),
        description=f"compound scaling width {_scaling.width} depth {_scaling.depth} (Tan & Le 2019)"))

for _name, _scaling in EFFICIENTNET_LITE_SCALING.items():
    _register(ModelSpec(
        _name, "efficientnet_lite", lambda w, n, p, _n=_name: efficientnet(_n, n, padding=p),
        _scaling.resolution, paper_resolution=_scaling.resolution,
        description=f"edge variant: no SE, ReLU6, fixed stem/head; width {_scaling.width} depth {_scaling.depth}"))


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `edgekit models` for the list"
        raise EdgekitError(f"unknown model {name!r}: {hint}") from None


def resolve_config(name: str, width: float | None = None, resolution: int | None = None,
                   num_classes: int | None = None, padding: str | None = None) -> ModelConfig:
    """Validate the user's options against the registry and fill in the defaults."""
    spec = get_spec(name)
    if width is None:
        width = spec.default_width if spec.default_width is not None else 1.0
    elif spec.default_width is None:
        raise EdgekitError(f"{name} has a fixed compound width; choose another variant instead of --width")
    elif spec.widths and width not in spec.widths:
        raise EdgekitError(f"width {width:g} is not valid for {name}: choose one of "
                           f"{', '.join(f'{w:g}' for w in spec.widths)}")
    if resolution is None:
        resolution = spec.default_resolution
    elif spec.resolutions and resolution not in spec.resolutions:
        raise EdgekitError(f"resolution {resolution} is not valid for {name}: choose one of "
                           f"{', '.join(map(str, spec.resolutions))}")
    elif not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise EdgekitError(f"resolution {resolution} is out of range for {name}: "
                           f"use {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        raise EdgekitError(f"num_classes must be between 1 and {MAX_CLASSES:,} (a classifier that wide would not "
                           f"fit in memory), got {num_classes}")
    preprocessing = spec.checkpoint.preprocessing if spec.checkpoint else Preprocessing()
    return ModelConfig(name=name, family=spec.family, width=float(width), resolution=int(resolution),
                       num_classes=num_classes or 1000, padding=padding or "symmetric",
                       preprocessing=preprocessing)


def build_model(config: ModelConfig) -> nn.Module:
    """An untrained module for ``config``, with the config attached as ``model.edgekit_config``."""
    spec = get_spec(config.name)
    model = spec.build(config.width, config.num_classes, config.padding)
    model.edgekit_config = config
    return model.eval()


def with_config(model: nn.Module, **changes) -> nn.Module:
    model.edgekit_config = replace(model.edgekit_config, **changes)
    return model
