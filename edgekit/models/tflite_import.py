"""Google's hosted ImageNet MobileNet ``.tflite`` files as edgekit weights.

The files hold (quantization-aware) trained weights with batch norm folded into each convolution and
ReLU6 fused. We read them with ``TFLiteModel``, dequantize every weight and bias, check layer by layer, in
graph order, that the file computes the architecture the user asked for, and copy the values into an
edgekit model built with TF "SAME" padding (on stride 2 TF pads one pixel after, none before: with
PyTorch's symmetric padding the same weights lose 11-24 points of top-1, benchmarks/tflite_import_accuracy.py).
Keras-built files pad explicitly (PAD + VALID convolution); that is accepted where it equals TF SAME. The
folded bias goes into the BatchNorm layer, set to the identity, so the module keeps torchvision's structure
and state-dict keys.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..console import warn
from ..errors import EdgekitError
from ..fileio import sha256_file
from ..tflite_model import EDGEKIT_METADATA, TFLiteModel
from ..types import TF_SLIM_PREPROCESSING, Preprocessing, WeightsInfo, quantized_input_preprocessing
from .blocks import tf_same_padding
from .registry import build_model, get_spec, resolve_config

TFLITE_FAMILIES = ("mobilenet_v1", "mobilenet_v2")
BACKGROUND_CLASSES = 1001  # TF-slim ImageNet classifiers: index 0 is "background", class k is index k + 1

# Ops that carry no weights and that a MobileNet v1/v2 graph may contain; anything else means another network.
_STRUCTURAL_OPS = {"ADD", "AVERAGE_POOL_2D", "MEAN", "RESHAPE", "SQUEEZE", "SOFTMAX", "QUANTIZE",
                   "DEQUANTIZE"}
_POOL_OPS = {"AVERAGE_POOL_2D", "MEAN"}
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
_TF_SAME, _TF_VALID = 0, 1  # schema Padding enum


@dataclass
class FileLayer:
    """One weight-carrying op of the file, its weights already in PyTorch layout (OIHW, or OI)."""

    op_index: int
    opcode: str
    scope: str  # TF variable scope, e.g. MobilenetV2/expanded_conv_3/depthwise
    kind: str  # conv, depthwise, classifier
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    activation: str
    padding: str  # "SAME", or what the file does instead (VALID, an explicit PAD that is not TF SAME's)

    def describe(self) -> str:
        return f"file op {self.op_index} {self.opcode} '{self.scope}'"


@dataclass
class ModelLayer:
    """One convolution (with the BatchNorm after it) or the classifier of an edgekit model."""

    name: str
    kind: str
    module: nn.Module
    norm: nn.BatchNorm2d | None
    activation: str
    stride: int


@dataclass
class TFLiteWeights:
    """Everything edgekit takes from a MobileNet .tflite file."""

    path: Path
    layers: list[FileLayer]
    residual_adds: int
    resolution: int
    preprocessing: Preprocessing | None
    labels: list[str] | None
    preprocessing_source: str | None = None  # "input quantization" or "edgekit metadata"

    @property
    def convolutions(self) -> list[FileLayer]:
        return [layer for layer in self.layers if layer.kind != "classifier"]

    @property
    def classifier(self) -> FileLayer | None:
        found = [layer for layer in self.layers if layer.kind == "classifier"]
        return found[-1] if found else None


def read_tflite_weights(path: Path) -> TFLiteWeights:
    """Read and dequantize the weighted layers of a MobileNet-like .tflite file, in execution order."""
    tfl = TFLiteModel.from_file(path)
    producers = {out: op for op in tfl.operators for out in op.outputs}
    layers: list[FileLayer] = []
    residual_adds = 0
    pooled = False
    pads: dict[int, tuple[int, int, int, int]] = {}  # PAD output tensor -> (top, bottom, left, right)
    for op in tfl.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            layers.append(_file_layer(tfl, op, producers, classifier=pooled or op.opcode == "FULLY_CONNECTED",
                                      explicit_pad=pads.pop(op.inputs[0], None)))
        elif op.opcode == "PAD":
            # Keras-built files pad explicitly (ZeroPadding2D) before a VALID convolution
            pads[op.outputs[0]] = _pad_amounts(tfl, op, producers, path)
        elif op.opcode in _POOL_OPS:
            _check_global_pool(tfl, op, path)
            pooled = True
        elif op.opcode == "ADD":
            residual_adds += 1
        elif op.opcode not in _STRUCTURAL_OPS:
            raise EdgekitError(f"{path.name} contains a {op.opcode} op (op {op.index}), which MobileNet v1/v2 do "
                               f"not use: it holds another architecture; only {', '.join(TFLITE_FAMILIES)} "
                               "files can be imported")
    if pads:
        raise EdgekitError(f"{path.name} pads a tensor that no convolution reads; it is not a MobileNet file")
    if not layers:
        raise EdgekitError(f"{path.name} holds no convolution weights; it is not an image classifier file")
    inputs = tfl.input_tensors()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[3] != 3:
        shapes = [t.shape for t in inputs]
        raise EdgekitError(f"{path.name} has inputs {shapes}, not one NHWC RGB image; it is not a MobileNet file")
    _, height, width, _ = inputs[0].shape
    if height != width:
        raise EdgekitError(f"{path.name} takes {height}x{width} images; edgekit's MobileNets are square")
    q = inputs[0].quantization
    preprocessing = (quantized_input_preprocessing(inputs[0].dtype, float(q.scale[0]),
                                                   int(q.zero_point[0]) if q.zero_point.size else 0)
                     if q is not None else None)
    source = "input quantization" if preprocessing is not None else None
    if preprocessing is None:  # a float file edgekit exported says how it was fed
        preprocessing = _recorded_preprocessing(tfl)
        source = "edgekit metadata" if preprocessing is not None else None
    return TFLiteWeights(Path(path), layers, residual_adds, int(height), preprocessing, _embedded_labels(path),
                         source)


def _recorded_preprocessing(tfl: TFLiteModel) -> Preprocessing | None:
    """The preprocessing in the ``edgekit`` metadata entry every edgekit export embeds, if the file has one."""
    try:
        record = json.loads(tfl.metadata.get(EDGEKIT_METADATA) or "{}").get("preprocessing")
        return Preprocessing.from_dict(record) if record else None
    except (ValueError, TypeError, KeyError, AttributeError):  # someone else's entry of that name: not ours
        return None


def _scope(tensor_name: str) -> str:
    """A readable TF scope from a converter's ';'-joined tensor name."""
    last = tensor_name.split(";")[-1]
    for marker in ("/weights_quant", "/weights", "/depthwise_weights", "/kernel"):
        if marker in last:
            return last.split(marker)[0]
    return last


def _constant(tfl: TFLiteModel, index: int, producers: dict, what: str, op) -> np.ndarray:
    """Real values of a constant input; follows a DEQUANTIZE (float16 or int8 weight files)."""
    tensor = tfl.tensors[index]
    if tensor.data is None and index in producers and producers[index].opcode == "DEQUANTIZE":
        tensor = tfl.tensors[producers[index].inputs[0]]
    if tensor.data is None:
        raise EdgekitError(f"the {what} of op {op.index} {op.opcode} in {tfl.source} is not a constant; "
                           "the file was converted without its weights")
    return tensor.dequantized()


def _pad_amounts(tfl: TFLiteModel, op, producers: dict, path: Path) -> tuple[int, int, int, int]:
    amounts = _constant(tfl, op.inputs[1], producers, "padding", op).astype(np.int64)
    if amounts.shape != (4, 2) or amounts[0].any() or amounts[3].any():
        raise EdgekitError(f"{path.name}: PAD (op {op.index}) pads {amounts.tolist()}, not only height and width; "
                           "not a MobileNet file")
    return int(amounts[1, 0]), int(amounts[1, 1]), int(amounts[2, 0]), int(amounts[2, 1])


def _padding_of(tfl: TFLiteModel, op, weight: np.ndarray, stride: int,
                explicit_pad: tuple[int, int, int, int] | None) -> str:
    """"SAME" when the op pads as TF SAME does (natively, or as PAD + VALID), else a description."""
    native = "SAME" if getattr(op.options, "padding", _TF_SAME) == _TF_SAME else "VALID"
    if explicit_pad is None:
        return native
    if native == "VALID" and op.opcode != "FULLY_CONNECTED":
        kernel = weight.shape[1:3]  # OHWI and 1HWC alike
        padded = tfl.tensors[op.inputs[0]].shape
        height, width = padded[1] - explicit_pad[0] - explicit_pad[1], padded[2] - explicit_pad[2] - explicit_pad[3]
        same = tf_same_padding(height, kernel[0], stride) + tf_same_padding(width, kernel[1], stride)
        if same == explicit_pad:
            return "SAME"
    return f"PAD {explicit_pad} + {native}"


def _file_layer(tfl: TFLiteModel, op, producers: dict, classifier: bool,
                explicit_pad: tuple[int, int, int, int] | None = None) -> FileLayer:
    weight_index = op.inputs[1]
    weight = _constant(tfl, weight_index, producers, "weight", op)
    bias_index = op.inputs[2] if len(op.inputs) > 2 else -1
    if bias_index < 0:
        bias = np.zeros(weight.shape[-1] if op.opcode == "DEPTHWISE_CONV_2D" else weight.shape[0], np.float32)
    else:
        bias_tensor = tfl.tensors[bias_index]
        if bias_tensor.dtype == "INT32" and bias_tensor.quantization is None and bias_tensor.data is not None:
            # int32 bias without its own scale: TFLite defines it as input scale * weight scale
            input_q = tfl.tensors[op.inputs[0]].quantization
            weight_q = tfl.tensors[weight_index].quantization
            if input_q is None or weight_q is None:
                raise EdgekitError(f"op {op.index} of {tfl.source} has an integer bias without scales; "
                                   "the file is malformed")
            bias = (bias_tensor.data.astype(np.float64) * float(input_q.scale[0])
                    * weight_q.scale.astype(np.float64)).astype(np.float32)
        else:
            bias = _constant(tfl, bias_index, producers, "bias", op)
    options = op.options
    activation = _ACTIVATIONS.get(getattr(options, "fusedActivationFunction", 0), "unknown")
    stride = int(getattr(options, "strideH", 1) or 1)
    if getattr(options, "strideW", stride) != stride:
        raise EdgekitError(f"op {op.index} of {tfl.source} has unequal strides; not a MobileNet file")
    padding = _padding_of(tfl, op, weight, stride, explicit_pad)
    if op.opcode == "DEPTHWISE_CONV_2D":
        kind, weight = "depthwise", weight.transpose(3, 0, 1, 2)  # 1HW(C*mult) -> (C*mult)1HW
    elif op.opcode == "FULLY_CONNECTED":
        kind = "classifier"
    elif classifier:
        kind, weight = "classifier", weight.reshape(weight.shape[0], -1)  # 1x1 conv after pooling == Linear
    else:
        kind, weight = "conv", weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
    return FileLayer(op.index, op.opcode, _scope(tfl.tensors[weight_index].name), kind,
                     np.ascontiguousarray(weight, dtype=np.float32), np.asarray(bias, np.float32).reshape(-1),
                     stride, activation, padding)


def _check_global_pool(tfl: TFLiteModel, op, path: Path) -> None:
    """edgekit pools globally: a file whose pool window does not cover the feature map computes another function."""
    if op.opcode != "AVERAGE_POOL_2D":
        return
    shape = tfl.tensors[op.inputs[0]].shape
    window = (getattr(op.options, "filterHeight", 0), getattr(op.options, "filterWidth", 0))
    if len(shape) == 4 and (shape[1], shape[2]) != window:
        raise EdgekitError(f"{path.name}: average pool (op {op.index}) uses a {window[0]}x{window[1]} window on a "
                           f"{shape[1]}x{shape[2]} feature map, not a global pool; not a MobileNet file")


def _embedded_labels(path: Path) -> list[str] | None:
    """Labels a TFLite metadata writer packed into the file (a zip appended to the flatbuffer)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".txt") and "label" in n.lower()]
            if not names:
                return None
            text = archive.read(names[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError):
        return None
    return [line.strip() for line in text.splitlines() if line.strip()]


def model_layers(model: nn.Module) -> list[ModelLayer]:
    """Convolutions (each with the BatchNorm and activation that follow it) and the classifier, in graph order."""
    parents = {id(child): (module, i) for module in model.modules()
               for i, child in enumerate(module.children()) if isinstance(module, nn.Sequential)}
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent, position = parents[id(module)]
            siblings = list(parent.children())
            norm = siblings[position + 1] if position + 1 < len(siblings) else None
            if not isinstance(norm, nn.BatchNorm2d):
                raise EdgekitError(f"{name} of {model.edgekit_config.name} is not followed by BatchNorm; "
                                   "TFLite import supports MobileNet v1/v2 only")
            after = siblings[position + 2] if position + 2 < len(siblings) else None
            depthwise = module.groups > 1 and module.groups == module.in_channels
            layers.append(ModelLayer(name, "depthwise" if depthwise else "conv", module, norm,
                                     "relu6" if isinstance(after, nn.ReLU6) else "none", module.stride[0]))
        elif isinstance(module, nn.Linear):
            layers.append(ModelLayer(name, "classifier", module, None, "none", 1))
    return layers


def _expected_shape(layer: ModelLayer, classes: int | None) -> tuple[int, ...]:
    shape = tuple(layer.module.weight.shape)
    return (classes,) + shape[1:] if layer.kind == "classifier" and classes is not None else shape


@dataclass(frozen=True)
class Mismatch:
    """Where a file stops fitting a model. ``rank`` orders candidate widths: a later layer fits better, and
    at the same layer a mismatch found by a later check (padding after shape) does."""

    layer: int
    check: int  # 0 kind, 1 shape, 2 stride, 3 activation, 4 padding, 5 layer count, 6 residuals
    message: str

    @property
    def rank(self) -> tuple[int, int]:
        return self.layer, self.check

    def __str__(self) -> str:
        return self.message


def first_mismatch(weights: TFLiteWeights, model: nn.Module) -> Mismatch | None:
    """None if every layer of the file fits ``model``, else the first layer that does not, in a sentence."""
    ours = model_layers(model)
    theirs = weights.layers
    for i, (mine, file) in enumerate(zip(ours, theirs)):
        where = f"layer {i} ({mine.name}, {file.describe()})"
        if mine.kind != file.kind:
            return Mismatch(i, 0, f"{where}: expected a {mine.kind} layer, the file has a {file.kind} layer")
        # the classifier's class count may differ (background, other data sets): compare its input only
        expected = _expected_shape(mine, file.weight.shape[0] if mine.kind == "classifier" else None)
        if expected != file.weight.shape:
            return Mismatch(i, 1, f"{where}: expected weight {expected}, the file has {tuple(file.weight.shape)}")
        if mine.stride != file.stride:
            return Mismatch(i, 2, f"{where}: expected stride {mine.stride}, the file has stride {file.stride}")
        if mine.activation != file.activation:
            return Mismatch(i, 3, f"{where}: expected activation {mine.activation}, the file has {file.activation}")
        if file.padding != "SAME" and (max(file.weight.shape[2:], default=1) > 1 or "PAD" in file.padding):
            return Mismatch(i, 4, f"{where}: the file pads with {file.padding}, which is not TF SAME; edgekit "
                                  "reproduces TF SAME only")
    count = min(len(ours), len(theirs))
    if len(ours) != len(theirs):
        extra = (ours if len(ours) > len(theirs) else theirs)[count]
        label = extra.name if isinstance(extra, ModelLayer) else extra.describe()
        return Mismatch(count, 5, f"the file has {len(theirs)} weighted layers, the model {len(ours)}: "
                                  f"layer {count} ({label}) has no counterpart")
    residuals = sum(1 for m in model.modules() if getattr(m, "use_res_connect", False))
    if residuals != weights.residual_adds:
        return Mismatch(count, 6, f"the file has {weights.residual_adds} residual additions, the model "
                                  f"{residuals}")
    return None


def _fit(weights: TFLiteWeights, name: str, width: float) -> Mismatch | None:
    return first_mismatch(weights, build_model(resolve_config(name, width, weights.resolution, padding="tf_same")))


def _infer_width(weights: TFLiteWeights, name: str, width: float | None) -> float:
    spec = get_spec(name)
    source = weights.path.name
    if width is not None:
        resolve_config(name, width)  # an invalid width fails with the registry's message
        problem = _fit(weights, name, width)
        if problem is None:
            return width
        fitting = next((w for w in spec.widths if w != width and _fit(weights, name, w) is None), None)
        hint = (f"the file holds width {fitting:g}: drop --width or pass --width {fitting:g}" if fitting is not None
                else _other_family_hint(weights, name))
        raise EdgekitError(f"{source} does not fit {name} width {width:g}: {problem}; {hint}")
    problems = {}
    for candidate in spec.widths:
        problems[candidate] = _fit(weights, name, candidate)
        if problems[candidate] is None:
            return candidate
    # name the width that fits longest: its first mismatch is the informative one
    closest = max(problems, key=lambda w: (problems[w].rank, w == spec.default_width))
    raise EdgekitError(f"{source} does not fit {name} at any width (closest, width {closest:g}: {problems[closest]}); "
                       f"{_other_family_hint(weights, name)}")


def _other_family_hint(weights: TFLiteWeights, asked: str) -> str:
    for family in TFLITE_FAMILIES:
        if family == asked:
            continue
        for width in get_spec(family).widths:
            try:
                if _fit(weights, family, width) is None:
                    return f"it is a {family} width {width:g} file: use {family}"
            except EdgekitError:  # resolution not valid for that family
                break
    return f"check that it is a {' or '.join(TFLITE_FAMILIES)} file of a width edgekit knows"


def import_tflite(path: str | Path, name: str, *, width: float | None = None, resolution: int | None = None,
                  num_classes: int | None = None, keep_background: bool = False) -> nn.Module:
    """An edgekit ``name`` model (eval mode, TF SAME padding) computing what the .tflite file computes in float.

    Width and resolution come from the file; passing different ones is an error. The 1001-class output's
    ``background`` (index 0) is dropped unless ``keep_background``, so class k is ImageNet class k.
    """
    path = Path(path)
    spec = get_spec(name)
    if spec.family not in TFLITE_FAMILIES:
        raise EdgekitError(f".tflite weights can be imported into {' and '.join(TFLITE_FAMILIES)} only, not "
                           f"{name}; use a .pt/.pth/.safetensors checkpoint or --weights imagenet")
    weights = read_tflite_weights(path)
    if resolution is not None and resolution != weights.resolution:
        raise EdgekitError(f"{path.name} was built for {weights.resolution}x{weights.resolution} input, you asked for "
                           f"resolution {resolution}: drop --resolution or pass --resolution {weights.resolution}")
    if spec.resolutions and weights.resolution not in spec.resolutions:
        raise EdgekitError(f"{path.name} takes {weights.resolution}px input, which {name} does not support "
                           f"({', '.join(map(str, spec.resolutions))})")
    width = _infer_width(weights, name, width)

    head = weights.classifier
    file_classes = head.weight.shape[0]
    has_background = file_classes == BACKGROUND_CLASSES
    if keep_background and not has_background:
        warn(f"{path.name} has {file_classes} outputs, no background class: --keep-background changes nothing")
    drop = 1 if has_background and not keep_background else 0
    classes = file_classes - drop
    if num_classes == file_classes and drop:
        raise EdgekitError(f"{path.name} has {file_classes} outputs including 'background' at index 0: pass "
                           f"--keep-background to keep all {file_classes}, or drop --num-classes for {classes}")
    replace_head = num_classes is not None and num_classes != classes

    preprocessing = weights.preprocessing
    notes = []
    if weights.preprocessing_source == "edgekit metadata":
        notes.append("float input: preprocessing from the file's edgekit metadata")
    if preprocessing is None:
        preprocessing = TF_SLIM_PREPROCESSING
        notes.append("float input: assumed TF-slim preprocessing (mean 127.5, std 127.5)")
        warn(f"{path.name} has float input, so its preprocessing cannot be read from the file; assuming TF-slim's "
             "[-1, 1] scaling (mean 127.5, std 127.5)")
    if drop:
        notes.append(f"background output dropped ({file_classes} -> {classes} classes)")
    if replace_head:
        notes.append(f"classifier replaced ({classes} -> {num_classes})")
        warn(f"replacing the classifier: the file has {classes} classes, the model {num_classes} "
             "(transfer learning; train the new head before use)")
    labels = None
    if weights.labels is not None and len(weights.labels) == file_classes and not replace_head:
        labels = tuple(weights.labels[drop:])

    info = WeightsInfo(str(path), "tflite", str(path.absolute()), sha256_file(path), trained=True,
                       note="; ".join(notes) or None)
    config = resolve_config(name, width, weights.resolution, num_classes if replace_head else classes,
                            padding="tf_same")
    model = build_model(replace(config, preprocessing=preprocessing, weights=info, labels=labels))
    _load(model, weights, drop, replace_head)
    return model.eval()


@torch.no_grad()
def _load(model: nn.Module, weights: TFLiteWeights, drop: int, replace_head: bool) -> None:
    for mine, file in zip(model_layers(model), weights.layers):
        if mine.kind == "classifier":
            if not replace_head:
                mine.module.weight.copy_(torch.from_numpy(file.weight[drop:]))
                mine.module.bias.copy_(torch.from_numpy(file.bias[drop:]))
            continue
        mine.module.weight.copy_(torch.from_numpy(file.weight))
        # BN folded in the file: make ours the identity plus the folded bias ((x - 0) / sqrt(1 - eps + eps) == x)
        norm = mine.norm
        norm.weight.fill_(1.0)
        norm.bias.copy_(torch.from_numpy(file.bias))
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)
