"""Parameters and multiply-accumulates counted from the real module graph (forward hooks, one pass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .blocks import DepthwiseSeparable, InvertedResidual, MBConv


@dataclass
class StageRow:
    block: str
    repeats: int
    channels: int
    stride: int
    output_size: int
    params: int
    macs: int


@dataclass
class SeparableSavings:
    """Depthwise + pointwise pairs against the standard convolution each replaces (MobileNet paper, eq. 5)."""

    separable_macs: int
    standard_macs: int
    theory_ratio: float  # mean over pairs of 1/N + 1/Dk^2, weighted by standard cost

    @property
    def ratio(self) -> float:
        return self.separable_macs / self.standard_macs if self.standard_macs else 0.0


@dataclass
class ModelProfile:
    name: str
    resolution: int
    params: int
    macs: int
    stages: list[StageRow] = field(default_factory=list)
    separable: SeparableSavings | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.separable:
            d["separable"]["ratio"] = self.separable.ratio
        return d


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() // output.shape[0] * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def _stage_units(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Groups of blocks shown as one row: EfficientNet stages are Sequentials; MobileNet blocks are grouped
    into runs that start with a stride or channel change, as the papers' tables do."""
    units: list[tuple[str, list[nn.Module]]] = []
    for child in model.features:
        blocks = list(child) if isinstance(child, nn.Sequential) and isinstance(child[0], MBConv) else [child]
        kind = type(blocks[0]).__name__
        if kind == "ConvNormAct":
            kind = "conv3x3" if blocks[0][0].kernel_size[0] == 3 else "conv1x1"
        starts_new = not units or units[-1][0] != kind or isinstance(child, nn.Sequential) \
            or not isinstance(child, (DepthwiseSeparable, InvertedResidual)) \
            or child.out_channels != units[-1][1][-1].out_channels
        if starts_new:
            units.append((kind, list(blocks)))
        else:
            units[-1][1].extend(blocks)
    return units


def profile_model(model: nn.Module, resolution: int, name: str = "") -> ModelProfile:
    macs_of: dict[nn.Module, int] = {}
    out_shape: dict[nn.Module, tuple[int, ...]] = {}
    conv_order: list[tuple[nn.Conv2d, tuple[int, ...]]] = []

    def leaf_hook(module, _inputs, output):
        macs_of[module] = _layer_macs(module, output)
        if isinstance(module, nn.Conv2d):
            conv_order.append((module, tuple(output.shape)))

    def shape_hook(module, _inputs, output):
        out_shape[module] = tuple(output.shape)

    units = _stage_units(model)
    handles = [m.register_forward_hook(leaf_hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles += [b.register_forward_hook(shape_hook) for _, blocks in units for b in blocks]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        for h in handles:
            h.remove()

    def total(modules) -> tuple[int, int]:
        params = sum(p.numel() for m in modules for p in m.parameters())
        macs = sum(macs_of.get(sub, 0) for m in modules for sub in m.modules())
        return params, macs

    rows = []
    size = resolution
    for kind, blocks in units:
        params, macs = total(blocks)
        shape = out_shape[blocks[-1]]
        stride = size // shape[-1] if shape[-1] else 1
        size = shape[-1]
        rows.append(StageRow(kind, len(blocks), shape[1], stride, size, params, macs))
    in_features = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head_params, head_macs = total(in_features)
    rows.append(StageRow("pool+fc", 1, in_features[-1].out_features, 1, 1, head_params, head_macs))
    all_params = sum(p.numel() for p in model.parameters())
    return ModelProfile(name, resolution, all_params, sum(macs_of.values()), rows, _separable(conv_order, macs_of))


def _separable(conv_order, macs_of) -> SeparableSavings | None:
    separable = standard = 0
    theory_weighted = 0.0
    for i, (conv, shape) in enumerate(conv_order):
        if not conv.groups == conv.in_channels > 1:
            continue
        # the pointwise partner is the next 1x1 conv on the same feature map (SE's 1x1 convs run on 1x1 maps)
        partner = next((nxt for nxt, nshape in conv_order[i + 1:] if nxt.kernel_size == (1, 1)
                        and nxt.in_channels == conv.out_channels and nshape[2:] == shape[2:]), None)
        if partner is None:
            continue
        k2 = conv.kernel_size[0] * conv.kernel_size[1]
        n = partner.out_channels
        std = shape[2] * shape[3] * conv.in_channels * n * k2
        separable += macs_of[conv] + macs_of[partner]
        standard += std
        theory_weighted += std * (1 / n + 1 / k2)
    if not standard:
        return None
    return SeparableSavings(separable, standard, theory_weighted / standard)
