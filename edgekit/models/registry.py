"""The model zoo: every registered name, its valid options, and the one ``create_model`` that builds it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Callable

from torch import nn

from ..errors import EdgekitError
from ..types import ModelConfig, Preprocessing
from .classic import VGG16_LAYOUT, VGG, AlexNet
from .efficientnet import EFFICIENTNET_LITE_SCALING, EFFICIENTNET_SCALING, efficientnet
from .googlenet import GoogLeNet, drop_auxiliary_heads
from .lenet import LeNet5
from .mobilenet import MobileNetV1, MobileNetV2
from .resnet import resnet
from .siamese import SiameseNet
from .unet import UNet

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
    min_resolution: int = 32  # smallest input the network's poolings leave at least one pixel for
    resolution_multiple: int = 1  # U-Net: sides divisible by 2**depth
    default_classes: int = 1000  # outputs when --num-classes is not given (Siamese: the embedding size)
    in_channels: int = 3
    aliases: tuple[str, ...] = ()
    # checkpoint keys that are not part of the inference network (GoogLeNet's auxiliary heads) -> removed
    # before the strict load, with a note for the weights record
    adapt_state_dict: Callable[[dict], tuple[dict, str | None]] | None = None
    # what the output is, for parity (edgekit.parity.TASKS): class scores, per-pixel class scores, an embedding
    task: str = "classifier"


MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024

_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


# Above any real label set (ImageNet-21k: 21,841); 10^8 classes would allocate a classifier of 100+ GB
MAX_CLASSES = 100_000


def _register(spec: ModelSpec) -> None:
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name


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


# The classic CNNs, as torchvision defines them (its checkpoints and their evaluation transforms: ImageNet
# mean/std, shorter side 256, centre crop 224, bilinear). Their sizes are fixed: no width option.
_TORCHVISION_224 = Preprocessing(crop_fraction=224 / 256)
_CLASSIC = (
    ("alexnet", "alexnet", lambda w, n, p: AlexNet(n), "alexnet-owt-7be5be79.pth", 63,
     "5 convolutions + 3 FC, ReLU, max pooling (Krizhevsky et al. 2012; torchvision's single-tower variant)"),
    ("vgg16", "vgg", lambda w, n, p: VGG(VGG16_LAYOUT, False, n), "vgg16-397923af.pth", 32,
     "13 3x3 convolutions in 5 pooled groups + 3 FC (Simonyan & Zisserman 2014, configuration D)"),
    ("vgg16_bn", "vgg", lambda w, n, p: VGG(VGG16_LAYOUT, True, n), "vgg16_bn-6c64b313.pth", 32,
     "VGG-16 with batch norm after every convolution"),
    ("resnet18", "resnet", lambda w, n, p: resnet("resnet18", n), "resnet18-f37072fd.pth", 32,
     "basic residual blocks [2, 2, 2, 2] (He et al. 2015)"),
    ("resnet50", "resnet", lambda w, n, p: resnet("resnet50", n), "resnet50-0676ba61.pth", 32,
     "bottleneck residual blocks [3, 4, 6, 3], stride in the 3x3 (torchvision v1.5)"),
    ("resnet152", "resnet", lambda w, n, p: resnet("resnet152", n), "resnet152-394f9c45.pth", 32,
     "bottleneck residual blocks [3, 8, 36, 3], stride in the 3x3 (torchvision v1.5)"),
)
for _name, _family, _build, _file, _min, _description in _CLASSIC:
    _register(ModelSpec(_name, _family, _build, 224, paper_resolution=224, min_resolution=_min,
                        checkpoint=Checkpoint(_file, _TORCHVISION_224, 224), description=_description))

# torchvision's GoogLeNet checkpoint was trained on (pixel - 127.5) / 127.5: declared as its preprocessing
# instead of torchvision's in-model transform_input (same arithmetic, no extra operators in the file); its
# auxiliary heads are dropped before loading (see models/googlenet.py).
_register(ModelSpec(
    "googlenet", "googlenet", lambda w, n, p: GoogLeNet(n), 224, paper_resolution=224, aliases=("inception_v1",),
    checkpoint=Checkpoint("googlenet-1378be20.pth",
                          Preprocessing(mean=(127.5,) * 3, std=(127.5,) * 3, crop_fraction=224 / 256), 224),
    adapt_state_dict=drop_auxiliary_heads,
    description="Inception v1: 9 four-branch modules with 1x1 bottlenecks (Szegedy et al. 2014, torchvision)"))

_register(ModelSpec(
    "lenet5", "lenet", lambda w, n, p: LeNet5(n), 32, resolutions=(32,), paper_resolution=32, default_classes=10,
    in_channels=1, description="32x32 greyscale, tanh, average pooling, 6-16-120-84-10 (LeCun et al. 1998)"))
_register(ModelSpec(
    "unet", "unet", lambda w, n, p: UNet(3, n, base_channels=max(1, round(64 * w))), 256, 1.0,
    widths=(0.125, 0.25, 0.5, 1.0), resolution_multiple=16, default_classes=2, task="dense",
    description="encoder-decoder with skips, padded 3x3 convolutions, mask = input size (Ronneberger et al. "
                "2015); width scales the 64 base channels; classes = mask classes"))
_register(ModelSpec(
    "siamese", "siamese", lambda w, n, p: SiameseNet("mobilenet_v2", embed_dim=n, width=w), 224, 1.0,
    widths=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), default_classes=128, task="embedding",
    description="shared MobileNet v2 embedding network, L2-normalised; --num-classes sets the embedding size; "
                "pairs compared by distance"))

def declared_task(model: nn.Module) -> str | None:
    """The output task a model declares before any output is seen: the registry's for a zoo model, ``--task`` for
    one of the user's own, else None (its output shape decides)."""
    config = getattr(model, "edgekit_config", None)
    if config is not None and (config.name in _REGISTRY or config.name in _ALIASES):
        return get_spec(config.name).task
    return getattr(model, "edgekit_task", None)


def model_task(model: nn.Module, reference_outputs, real=None):
    """The output task of ``model`` (an ``edgekit.parity.OutputTask``) for its parity: the registry's entry for a
    zoo model, else from the output's shape. An embedding model's same/different threshold is its
    ``distance_threshold`` attribute when it declares one, else set from ``reference_outputs``."""
    from ..parity import embedding_task, infer_task, OutputTask

    kind = declared_task(model) or infer_task(tuple(reference_outputs.shape)).kind
    if kind == "embedding":
        return embedding_task(reference_outputs, real, getattr(model, "distance_threshold", None))
    return OutputTask(kind)


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `edgekit models` for the list"
        raise EdgekitError(f"unknown model {name!r}: {hint}") from None


def resolve_config(name: str, width: float | None = None, resolution: int | None = None,
                   num_classes: int | None = None, padding: str | None = None) -> ModelConfig:
    """Validate the user's options against the registry and fill in the defaults."""
    spec = get_spec(name)
    name = spec.name  # an alias (inception_v1) resolves to the registered name
    if width is None:
        width = spec.default_width if spec.default_width is not None else 1.0
    elif spec.default_width is None:
        if spec.family.startswith("efficientnet"):
            raise EdgekitError(f"{name} has a fixed compound width; choose another variant instead of --width")
        raise EdgekitError(f"{name} has no width option (its layer sizes are fixed); drop --width")
    elif spec.widths and width not in spec.widths:
        raise EdgekitError(f"width {width:g} is not valid for {name}: choose one of "
                           f"{', '.join(f'{w:g}' for w in spec.widths)}")
    if resolution is None:
        resolution = spec.default_resolution
    elif spec.resolutions and resolution not in spec.resolutions:
        raise EdgekitError(f"resolution {resolution} is not valid for {name}: choose one of "
                           f"{', '.join(map(str, spec.resolutions))}")
    elif not max(MIN_RESOLUTION, spec.min_resolution) <= resolution <= MAX_RESOLUTION:
        raise EdgekitError(f"resolution {resolution} is out of range for {name}: "
                           f"use {max(MIN_RESOLUTION, spec.min_resolution)}..{MAX_RESOLUTION}")
    elif resolution % spec.resolution_multiple:
        raise EdgekitError(f"resolution {resolution} is not valid for {name}: use a multiple of "
                           f"{spec.resolution_multiple} (each pooling halves it)")
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        raise EdgekitError(f"num_classes must be a positive integer up to {MAX_CLASSES:,} (a wider classifier "
                           f"would not fit in memory), got {num_classes}")
    preprocessing = spec.checkpoint.preprocessing if spec.checkpoint else Preprocessing()
    if spec.in_channels == 1:
        preprocessing = replace(preprocessing, channel_order="L")  # pictures become greyscale before the model
    return ModelConfig(name=name, family=spec.family, width=float(width), resolution=int(resolution),
                       num_classes=num_classes or spec.default_classes, padding=padding or "symmetric",
                       preprocessing=preprocessing, default_width=spec.default_width,
                       default_resolution=spec.default_resolution)


def build_model(config: ModelConfig) -> nn.Module:
    """An untrained module for ``config``, with the config attached as ``model.edgekit_config``."""
    spec = get_spec(config.name)
    model = spec.build(config.width, config.num_classes, config.padding)
    model.edgekit_config = config
    return model.eval()


def with_config(model: nn.Module, **changes) -> nn.Module:
    model.edgekit_config = replace(model.edgekit_config, **changes)
    return model
