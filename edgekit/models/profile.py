"""Parameters and multiply-accumulates counted from the real module graph (forward hooks, one pass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

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
class BottleneckSavings:
    """Inception's 1x1 reductions in front of its 3x3 branches, against those 3x3 convolutions applied to the
    module's full input (Szegedy et al. 2014, section 4: "1x1 convolutions are used to compute reductions")."""

    branches: int
    reduced_macs: int  # 1x1 reduce + 3x3 as built
    reduced_params: int
    direct_macs: int  # a 3x3 from the module's input channels to the same outputs
    direct_params: int

    @property
    def ratio(self) -> float:
        return self.reduced_macs / self.direct_macs if self.direct_macs else 0.0


@dataclass
class ShortcutCount:
    """ResNet's shortcuts: identities cost an add; projections (``downsample``) are 1x1 convolutions."""

    identity: int
    projection: int
    projection_params: int
    projection_macs: int


@dataclass
class ModelProfile:
    name: str
    resolution: int
    params: int
    macs: int
    stages: list[StageRow] = field(default_factory=list)
    separable: SeparableSavings | None = None
    bottleneck: BottleneckSavings | None = None
    shortcuts: ShortcutCount | None = None

    def notes(self) -> list[str]:
        """The architecture's design point in one line each (what `edgekit info` prints under the table)."""
        from ..table import human_count

        lines = []
        b = self.bottleneck
        if b:
            lines.append(f"Inception 1x1 bottlenecks: the {b.branches} reduced 3x3 branches cost "
                         f"{human_count(b.reduced_macs)} MACs and {b.reduced_params:,} params; the same 3x3 convolutions "
                         f"read straight from the module's input would cost {human_count(b.direct_macs)} MACs and "
                         f"{b.direct_params:,} params ({b.ratio:.2f}x, i.e. {1 / b.ratio:.1f}x cheaper)")
        c = self.shortcuts
        if c:
            lines.append(f"residual shortcuts: {c.identity} identity (an ADD, no parameters, no MACs) and "
                         f"{c.projection} projection (1x1 conv + BN where stride or channels change: "
                         f"{c.projection_params:,} params, {human_count(c.projection_macs)} MACs, "
                         f"{c.projection_macs / max(1, self.macs):.1%} of the network)")
        return lines

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.separable:
            d["separable"]["ratio"] = self.separable.ratio
        if self.bottleneck:
            d["bottleneck"]["ratio"] = self.bottleneck.ratio
        d["notes"] = self.notes()
        return d


# shape-preserving functions whose meta-device cost is Python decompositions, not shape logic: forward's batch
# norm and activations, and the in-place fills that random initialisation (torch.nn.init) is made of
_SHAPE_KEEPING = frozenset({F.batch_norm, F.relu, F.hardtanh, F.silu, torch.sigmoid, torch.tanh, F.dropout,
                            *(getattr(torch.Tensor, fill) for fill in ("normal_", "uniform_", "fill_", "zero_",
                                                                       "erfinv_", "clamp_", "mul_", "add_"))})


class MetaShapesOnly(TorchFunctionMode):
    """On the meta device no arithmetic runs, yet PyTorch still steps through the Python decompositions of
    random initialisation and of batch norm and activations. Counting the 25 zoo models in a fresh process (what
    a first `edgekit models` does) took 14.7 s, 6.4 s with this mode (AMD EPYC Zen 3), with the same counts.
    None of them changes a shape, a parameter or a multiply-accumulate, so on meta tensors they return their
    input; any other tensor is left alone."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.is_meta and (
                func in _SHAPE_KEEPING or getattr(func, "__module__", None) == "torch.nn.init"):
            return first
        return func(*args, **(kwargs or {}))


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a kernel: in * out/groups * k
        k = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() // output.shape[0] * (module.in_channels // module.groups) * k \
            // (module.stride[0] * module.stride[1])
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() // output.shape[0] * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def _stage_units(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Groups of blocks shown as one row. A network that knows its own stages (``profile_stages()``: the
    classic CNNs, U-Net, Siamese) names them, head included; EfficientNet stages are Sequentials; MobileNet
    blocks are grouped into runs that start with a stride or channel change, as the papers' tables do."""
    if hasattr(model, "profile_stages"):
        return model.profile_stages()
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
    own_head = hasattr(model, "profile_stages")
    handles = [m.register_forward_hook(leaf_hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    handles += [b.register_forward_hook(shape_hook) for _, blocks in units for b in blocks]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, getattr(model, "in_channels", 3), resolution, resolution))
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
        spatial = shape[-1] if len(shape) == 4 else 1  # a Linear's output is one "pixel"
        stride = size // spatial if 0 < spatial <= size else 1  # U-Net's upsampling rows: 1
        size = spatial
        repeats = len(blocks) if not own_head else (sum(type(b).__name__ in _REPEATED_BLOCKS for b in blocks) or 1)
        rows.append(StageRow(kind, repeats, shape[1], stride, size, params, macs))
    if not own_head:
        in_features = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head_params, head_macs = total(in_features)
        rows.append(StageRow("pool+fc", 1, in_features[-1].out_features, 1, 1, head_params, head_macs))
    all_params = sum(p.numel() for p in model.parameters())
    return ModelProfile(name, resolution, all_params, sum(macs_of.values()), rows, _separable(conv_order, macs_of),
                        _bottleneck(model, macs_of), _shortcuts(model, macs_of))


# blocks counted as repeats of a row (a row of ResNet's layer2 holds 4 Bottlenecks); other modules count once
_REPEATED_BLOCKS = ("BasicBlock", "Bottleneck")


def _bottleneck(model: nn.Module, macs_of) -> BottleneckSavings | None:
    from .googlenet import Inception

    found = reduced_macs = reduced_params = direct_macs = direct_params = 0
    for module in model.modules():
        if not isinstance(module, Inception):
            continue
        for branch in (module.branch2, module.branch3):
            reduce, conv = branch[0].conv, branch[1].conv
            if reduce not in macs_of or conv not in macs_of:
                continue
            found += 1
            reduced_macs += macs_of[reduce] + macs_of[conv]
            reduced_params += reduce.weight.numel() + conv.weight.numel()
            k2 = conv.kernel_size[0] * conv.kernel_size[1]
            direct_params += reduce.in_channels * conv.out_channels * k2
            # same output map, same kernel, but reading all of the module's input channels
            direct_macs += macs_of[conv] // conv.in_channels * reduce.in_channels
    if not found:
        return None
    return BottleneckSavings(found, reduced_macs, reduced_params, direct_macs, direct_params)


def _shortcuts(model: nn.Module, macs_of) -> ShortcutCount | None:
    from .resnet import BasicBlock, Bottleneck

    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    if not blocks:
        return None
    projections = [b.downsample for b in blocks if b.downsample is not None]
    return ShortcutCount(len(blocks) - len(projections), len(projections),
                         sum(p.numel() for d in projections for p in d.parameters()),
                         sum(macs_of.get(m, 0) for d in projections for m in d.modules()))


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
