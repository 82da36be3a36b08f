"""What every exporter shares: the export-ready copy of a model and the metadata embedded in each file."""

from __future__ import annotations

import copy
import math

from .. import __version__
from ..types import ModelConfig

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def input_channels(model) -> int:
    """Channels of ``model``'s image input: what its recorded preprocessing feeds it (1 for greyscale), else its
    own ``in_channels``, else RGB."""
    config = getattr(model, "edgekit_config", None)
    if config is not None:
        return config.preprocessing.channels
    return getattr(model, "in_channels", 3)


def sample_input(model, resolution: int, batch: int = 1):
    """A zero NCHW input of the shape ``model`` takes at ``resolution``: what tracing and shape probes feed it."""
    import torch

    return torch.zeros(batch, input_channels(model), resolution, resolution)


def sample_inputs(model, resolution: int, batch: int = 1) -> tuple:
    """Zero inputs for every argument of ``model``'s forward(): one picture (``sample_input``), or one per input
    of a model of several (its ``edgekit_io``)."""
    import torch

    io = getattr(model, "edgekit_io", None)
    if io is None:
        return (sample_input(model, resolution, batch),)
    return tuple(torch.zeros(batch, *io.input_shape[1:]) for _ in io.input_names)


def io_names(model) -> tuple[list[str], list[str]]:
    """The names every format gives the inputs and outputs: ``image`` and ``logits``, or a model of several's own
    (forward()'s argument names, ``output_K``)."""
    io = getattr(model, "edgekit_io", None)
    return ([INPUT_NAME], [OUTPUT_NAME]) if io is None else (list(io.input_names), list(io.output_names))


def first_inputs(model, modules: dict, resolution: int) -> dict:
    """The positional inputs each of ``modules`` (key -> submodule of ``model``) receives first, in one forward
    pass of a zero picture at ``resolution``; a module the pass never reaches is left out."""
    import torch

    seen: dict = {}

    def record(key):
        def hook(module, args):
            seen.setdefault(key, args)  # returns nothing: a pre-hook's result would replace the arguments
        return hook

    hooks = [module.register_forward_pre_hook(record(key)) for key, module in modules.items()]
    try:
        with torch.no_grad():
            model(*sample_inputs(model, resolution))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def input_shapes(model, modules: dict, resolution: int) -> dict:
    """The shape of each of ``modules``' first input (``first_inputs``)."""
    return {key: tuple(args[0].shape) for key, args in first_inputs(model, modules, resolution).items()}


def export_ready(model, resolution: int):
    """A copy of ``model`` for conversion at ``resolution``: eval mode, dropout removed, batch norm folded into
    the convolution before it, TF SAME padding made static.

    Dropout is an identity in eval mode but still reaches the exported graph, and inside litert-torch's PT2E
    quantizer an eval-mode Dropout before the classifier corrupts the int8 FC bias (DESIGN.md). Folding BN here
    gives every exporter the same graph; parity against the unfolded original proves the folding.
    """
    from torch import nn

    ready = copy.deepcopy(model).eval()
    _fold_batch_norm(ready)
    for parent in list(ready.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(parent, name, nn.Identity())
    _static_tf_padding(ready, resolution)
    folded = _fold_grid_pool_into_classifier(ready, resolution)
    flattened = _flatten_channels_last(ready, resolution)
    for p in ready.parameters():
        p.requires_grad_(False)
    # what was changed beyond the routine steps above, for the manifest and report.md
    ready.edgekit_prepared = [change for change in (folded, flattened) if change]
    return ready


def _fold_batch_norm(model) -> None:
    """Fold each BatchNorm2d into the convolution that alone feeds it, in place: the conv takes the BN's scale and
    shift, the BN becomes an Identity, module names stay.

    The converters fold BN too, but a graph without it converts about twice as fast (litert-torch, AMD EPYC Zen 3:
    GoogLeNet at 64 px 15.0 s -> 7.9 s, ResNet-18 7.7 s -> 3.3 s; same operators). The pairs come from an fx trace
    of the model (ResNet's ``bn1`` after ``conv1`` is no Sequential); a model fx cannot trace gets the pairs
    adjacent in a Sequential, whose order is its execution order."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def foldable(conv, norm) -> bool:
        return (isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.running_mean is not None
                and norm.num_features == conv.out_channels)

    pairs = _traced_conv_norm_pairs(model)
    if pairs is None:
        pairs = [(f"{prefix}.{a}".lstrip("."), f"{prefix}.{b}".lstrip("."))
                 for prefix, parent in model.named_modules() if isinstance(parent, nn.Sequential)
                 for a, b in zip(list(parent._modules), list(parent._modules)[1:])]
    for conv_name, norm_name in pairs:
        conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        if foldable(conv, norm):
            model.set_submodule(conv_name, fuse_conv_bn_eval(conv, norm))  # keeps TFSameConv2d's padding
            model.set_submodule(norm_name, nn.Identity())


def _traced_conv_norm_pairs(model) -> list[tuple[str, str]] | None:
    """(conv, BN) module names where the BN's only input is the conv's output, used by nothing else, and each module
    runs once per forward; None when fx cannot trace ``model`` (data-dependent control flow)."""
    import torch
    from torch import nn

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module, name) -> bool:  # TFSameConv2d computes its padding from the input size
            return isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(module, name)

    try:
        graph = Tracer().trace(model)
    except Exception:  # fx raises whatever the model's Python raises on a Proxy
        return None
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and len(node.args) == 1 and not node.kwargs else None
        if (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1
                and calls[source.target] == calls[node.target] == 1):
            pairs.append((source.target, node.target))
    return pairs


def _flatten_channels_last(model, resolution: int) -> str | None:
    """Each Flatten of a [N, C, H, W] map (H*W > 1) that feeds a Linear layer in a Sequential reads the map in
    (height, width, channel) order instead, with the Linear's weight columns permuted to match: the same function,
    and the TFLite converter, which computes in NHWC, needs no TRANSPOSE for it (LeNet-style heads of one's own)."""
    import torch
    from torch import nn

    from ..models.classic import ChannelsLast

    pairs = [(parent, name, parent._modules[after]) for parent in model.modules() if isinstance(parent, nn.Sequential)
             for name, after in zip(list(parent._modules), list(parent._modules)[1:])
             if isinstance(parent._modules[name], nn.Flatten) and isinstance(parent._modules[after], nn.Linear)
             and (parent._modules[name].start_dim, parent._modules[name].end_dim) == (1, -1)]
    if not pairs:
        return None
    shapes = input_shapes(model, {i: parent._modules[name] for i, (parent, name, _) in enumerate(pairs)}, resolution)
    changed = []
    for i, (parent, name, linear) in enumerate(pairs):
        shape = shapes.get(i)
        if shape is None or len(shape) != 4 or shape[2] * shape[3] == 1 or linear.in_features != math.prod(shape[1:]):
            continue
        _, channels, height, width = shape
        with torch.no_grad():
            linear.weight.copy_(linear.weight.reshape(linear.out_features, channels, height, width)
                                .permute(0, 2, 3, 1).reshape(linear.out_features, -1))
        parent._modules[name] = nn.Sequential(ChannelsLast(), nn.Flatten())
        changed.append(f"{channels}x{height}x{width}")
    if not changed:
        return None
    return (f"flatten of {', '.join(changed)} feature maps taken in NHWC order, the next Linear layer's columns "
            "permuted to match (exact): TFLite computes in NHWC and needs no TRANSPOSE for it")


def _static_tf_padding(model, resolution: int) -> None:
    """Replace each TFSameConv2d (padding computed from the input size at run time) by a plain convolution with
    the padding that size gives at ``resolution``: symmetric padding inside the conv, asymmetric as a ZeroPad2d
    in front. The run-time computation traces into Shape/Slice/Pad chains that onnxslim 0.1.98 constant-folds
    into wrong pads (measured: cosine 0.49 against PyTorch on imported MobileNet v2); static pads export as one
    Conv with asymmetric pads, and as TFLite's own SAME padding."""
    from torch import nn

    from ..models.blocks import TFSameConv2d, tf_same_padding

    convs = {name: m for name, m in model.named_modules() if isinstance(m, TFSameConv2d)}
    if not convs:
        return
    shapes = input_shapes(model, convs, resolution)
    for name, conv in convs.items():
        (height, width) = shapes[name][-2:]
        top, bottom = tf_same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        left, right = tf_same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        symmetric = top == bottom and left == right
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          padding=(top, left) if symmetric else 0, dilation=conv.dilation, groups=conv.groups,
                          bias=conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        replacement = plain if symmetric else nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain)
        model.set_submodule(name, replacement.eval())


def _adaptive_pool_matrix(size: int, bins: int):
    """The (bins, size) averaging matrix of PyTorch's adaptive average pooling along one axis."""
    import torch

    matrix = torch.zeros(bins, size, dtype=torch.float64)
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)  # floor, ceil: PyTorch's bin edges
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _fold_grid_pool_into_classifier(model, resolution: int) -> str | None:
    """AlexNet and VGG (torchvision's layout: ``avgpool`` to a 6x6 / 7x7 grid, then flatten and the first Linear
    of ``classifier``): fold the pooling into that Linear layer, and flatten in NHWC order.

    Why: at a resolution other than 224 the pool resamples a feature map whose size is not a multiple of the
    grid (VGG at 64 px: 2x2 -> 7x7), which the ONNX exporter refuses ("output size that are not factor of
    input size"). The pool is linear, so ``Linear(pool(x))`` equals one Linear on the unpooled map with weights
    W @ P, exactly; at 64 px it also shrinks VGG's first FC from 102.8 M to 8.4 M parameters. Flattening in
    (height, width, channel) order, with the weights' columns permuted to match, lets the TFLite converter,
    which computes in NHWC, flatten without a TRANSPOSE."""
    import torch
    from torch import nn

    pool, classifier = getattr(model, "avgpool", None), getattr(model, "classifier", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or not isinstance(classifier, nn.Sequential):
        return
    from ..models.classic import ChannelsLast

    layers = list(classifier)
    first = next((m for m in layers if isinstance(m, nn.Linear)), None)
    if first is None or any(list(m.parameters()) for m in layers[:layers.index(first)]):
        return  # something with weights acts before the Linear layer: the fold would skip it
    out_h, out_w = (pool.output_size, pool.output_size) if isinstance(pool.output_size, int) else pool.output_size
    if out_h is None or out_w is None or out_h * out_w == 1:
        return  # global pooling: every converter has it natively
    _, channels, in_h, in_w = input_shapes(model, {"pool": pool}, resolution)["pool"]
    if first.in_features != channels * out_h * out_w:
        return  # not the flatten-then-Linear layout this fold assumes
    weight = first.weight.detach().double().reshape(first.out_features, channels, out_h, out_w)
    folded = torch.einsum("ocij,ih,jw->ohwc", weight, _adaptive_pool_matrix(in_h, out_h),
                          _adaptive_pool_matrix(in_w, out_w))
    linear = nn.Linear(channels * in_h * in_w, first.out_features, bias=first.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(folded.reshape(first.out_features, -1).to(first.weight.dtype))
        if first.bias is not None:
            linear.bias.copy_(first.bias)
    classifier[layers.index(first)] = linear
    model.avgpool = ChannelsLast()
    return (f"adaptive average pool ({in_h}x{in_w} to {out_h}x{out_w}) folded into the first Linear layer, exact "
            f"({first.in_features:,} to {linear.in_features:,} inputs; flattened in NHWC order so TFLite needs no "
            "TRANSPOSE): ONNX refuses an adaptive pool whose output size does not divide its input size")


def preprocessing_record(config: ModelConfig) -> dict:
    """Preprocessing as files and manifests record it: mean, std, channel order, value range, and the resize
    and crop of ``edgekit.images.resize_and_crop`` (shorter side to floor(resolution / crop_fraction))."""
    p = config.preprocessing
    return p.to_dict() | {"resize_shorter_side": int(math.floor(config.resolution / p.crop_fraction)),
                          "crop": config.resolution}


# The licence the published weights come under, when the file does not name one (--license)
WEIGHTS_LICENSES = {"tflite": "Apache-2.0 (the weights: Google's MobileNet .tflite files)",
                    "imagenet": "BSD-3-Clause (the weights: torchvision's ImageNet checkpoints)"}


def edgekit_metadata(config: ModelConfig, labels: tuple[str, ...], author: str | None = None,
                     license: str | None = None) -> dict:
    """What an app needs to feed the file and read its output, embedded in every exported file; ``author`` and
    ``license`` (else the published weights' licence) also go to the standard TFLite Metadata and ONNX props."""
    license = license or WEIGHTS_LICENSES.get(config.weights.source)
    return {k: v for k, v in (("author", author), ("license", license)) if v} | {
        "producer": f"edgekit {__version__}",
        "model": config.name,
        "variant": config.variant,
        "resolution": config.resolution,
        "num_classes": config.num_classes,
        "padding": config.padding,
        "preprocessing": preprocessing_record(config),
        "weights": {"source": config.weights.source, "sha256": config.weights.sha256,
                    "trained": config.weights.trained},
        "labels": list(labels),
    }
