"""int8 ONNX that computes the same on every x86 CPU: weight levels limited where a 16-bit pair sum could saturate.

ONNX Runtime's uint8 x int8 (U8S8) matrix kernels on x86 CPUs without VNNI (AVX2 and AVX-512 without VNNI:
AMD Zen 1-3, Intel before Ice Lake/Cascade Lake) multiply with ``vpmaddubsw``, which adds each pair of adjacent
products, ``a[k] * w[k] + a[k+1] * w[k+1]``, into a saturating int16. With raw uint8 activations up to 255 and
int8 weights up to 127 a pair reaches 64770, twice what int16 holds, and the result is silently clipped (ONNX
Runtime's quantization documentation, "Quantization on GPU/CPU": U8S8 "might suffer from saturation issues"
without VNNI). VNNI, AMX and ARM's dot-product instructions accumulate in int32 and never saturate, so the same
file gave cosine 0.99 against PyTorch on a VNNI Xeon and 0.93 on an AVX2-only AMD EPYC (MobileNet v2).

The fix changes numbers, never operators: for each output channel of a Conv, Gemm or MatMul, the largest pair
sum its calibrated activations can produce is computed, and where it exceeds int16 that channel's weights get
fewer levels (a larger per-channel scale, bias requantized to match). Kernels, speed and file layout stay as they
are on every CPU. Measured on MobileNet v2 with Google's weights (AMD EPYC, AVX2 only; benchmarks/results/cpu_true_int8_amd_epyc_avx2.md):
limiting every layer to 7-bit weights (ORT's ``reduce_range``) gave cosine 0.966; limiting per channel with the
conservative bound (any two products) 0.988; with the exact pairing of 1x1 convolutions 0.991, equal to the
float QDQ computation.

Which products pair: MLAS packs the reduction dimension K in order and ``vpmaddubsw`` pairs bytes (2j, 2j+1).
For a 1x1 convolution or a Gemm/MatMul, K is the input channel, whatever the layout, so the pairs are known
exactly and only same-sign pairs can overflow. For a spatial convolution K also runs over the kernel window in an
order that depends on ORT's layout choice, so any two products are assumed to meet. Depthwise convolutions run in
MLAS's own depthwise kernel, which accumulates in int32: they are left alone (and measured exact).

The activation side comes from the calibration images: the largest uint8 value each input channel of each layer
reached, read from the int8 file itself computed as float QDQ. A picture far outside the calibration set can
exceed it; parity then shows it as host-kernel error (``edgekit.parity``), which is why both are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

INT16_MAX = 32767
_INT8_LEVELS = 127
_MATMUL_OPS = ("Conv", "Gemm", "MatMul")
_ACTIVATION_BATCH = 8


@dataclass(frozen=True)
class LayerLimit:
    """What was done to one layer's weights: the manifest's per-layer record."""

    layer: str
    kind: str  # pointwise | spatial | matmul
    channels: int
    channels_limited: int
    min_levels: int  # the fewest weight levels a channel kept (127: none limited)
    pair_sum_before: int  # the largest pair sum the calibrated activations could produce, before and after
    pair_sum_after: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Layer:
    node: object
    activation_dq: object
    weight_dq: object
    activation: str  # the uint8 tensor the layer reads
    group: int
    kind: str

    @property
    def output_axis(self) -> int:
        """Where the weights keep their output channels: Conv [M, C, kh, kw] and Gemm with transB [N, K] first,
        MatMul and plain Gemm [K, N] last."""
        if self.kind != "matmul":
            return 0
        from onnx.helper import get_attribute_value

        attributes = {a.name: get_attribute_value(a) for a in self.node.attribute}
        return 0 if self.node.op_type == "Gemm" and attributes.get("transB", 0) else 1


def _pair_bound(activation_max: np.ndarray, weights: np.ndarray, kind: str) -> int:
    """The largest |pair sum| one output channel can reach: ``activation_max`` and ``weights`` in K order."""
    products = (activation_max * weights).ravel()
    if kind == "spatial":
        largest = np.sort(np.abs(products))
        return int(largest[-2:].sum())
    if products.size % 2:
        products = np.append(products, 0)
    pairs = products.reshape(-1, 2)
    same_sign = np.sign(pairs[:, 0]) == np.sign(pairs[:, 1])
    return int(np.max(np.where(same_sign, np.abs(pairs.sum(axis=1)), np.abs(pairs).max(axis=1))))


def _layers(graph, initializers: dict) -> list[_Layer]:
    """The Conv/Gemm/MatMul nodes that read a quantized activation and quantized constant weights."""
    from onnx.helper import get_attribute_value

    producer = {output: node for node in graph.node for output in node.output}
    found = []
    for node in graph.node:
        if node.op_type not in _MATMUL_OPS or len(node.input) < 2:
            continue
        activation_dq, weight_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (activation_dq and weight_dq and activation_dq.op_type == weight_dq.op_type == "DequantizeLinear"):
            continue
        if weight_dq.input[0] not in initializers or activation_dq.input[0] in initializers:
            continue
        attributes = {a.name: get_attribute_value(a) for a in node.attribute}
        weights = initializers[weight_dq.input[0]]
        group = int(attributes.get("group", 1))
        if node.op_type == "Conv":
            if group > 1 and weights.dims[1] == 1 and weights.dims[0] == group:
                continue  # depthwise: MLAS's depthwise kernel accumulates in int32
            kind = "pointwise" if all(d == 1 for d in weights.dims[2:]) else "spatial"
        else:
            kind = "matmul"
        found.append(_Layer(node, activation_dq, weight_dq, activation_dq.input[0], group, kind))
    return found


def _activation_maxima(model, names: list[str],
                       calibration_nchw: np.ndarray | list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel maximum of each named uint8 tensor over the calibration images, from the QDQ file run in
    float (graph optimizations off), so the values are exactly the ones the integer kernels receive."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    # a model of several inputs: one array per input, in the graph's order
    arrays = calibration_nchw if isinstance(calibration_nchw, list) else [calibration_nchw]
    inputs = [i.name for i in session.get_inputs()]
    maxima: dict[str, np.ndarray] = {}
    for start in range(0, len(arrays[0]), _ACTIVATION_BATCH):
        feeds = {name: x[start:start + _ACTIVATION_BATCH] for name, x in zip(inputs, arrays)}
        for name, value in zip(names, session.run(names, feeds)):
            value = value.astype(np.int64)
            per_channel = value.max(axis=tuple(i for i in range(value.ndim) if i != 1)) if value.ndim > 1 else value
            maxima[name] = np.maximum(maxima[name], per_channel) if name in maxima else per_channel
    return maxima


def limit_pair_sums(model, float_weights: dict[str, np.ndarray],
                    calibration_nchw: np.ndarray | list[np.ndarray]) -> list[LayerLimit]:
    """Rewrite ``model`` (an ONNX QDQ ModelProto with uint8 activations and per-channel int8 weights, in place)
    so that no pair sum can exceed int16 on the calibration images. ``float_weights`` are the fp32 file's
    initializers by name (requantizing from them avoids rounding twice). Returns one record per layer."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    layers = _layers(graph, initializers)
    if not layers:
        return []
    maxima = _activation_maxima(model, list(dict.fromkeys(layer.activation for layer in layers)), calibration_nchw)
    records = []
    for layer in layers:
        weight_name, scale_name = layer.weight_dq.input[0], layer.weight_dq.input[1]
        stored = numpy_helper.to_array(initializers[weight_name])
        axis = layer.output_axis
        quantized = np.moveaxis(stored, axis, 0).astype(np.int64)  # output channels first, K order kept
        scales = numpy_helper.to_array(initializers[scale_name]).astype(np.float64).reshape(-1)
        if stored.dtype != np.int8 or scales.size != quantized.shape[0] or _axis(layer.weight_dq) % stored.ndim != axis:
            continue  # not int8 per-channel along the output axis: nothing this module knows how to change
        original = float_weights.get(weight_name.removesuffix("_quantized"))
        if original is None or original.shape != stored.shape:
            original = quantized * scales.reshape(-1, *[1] * (quantized.ndim - 1))
        else:
            original = np.moveaxis(original, axis, 0)
        original = original.astype(np.float64)
        activation_max = _per_weight_activation_max(maxima[layer.activation], quantized.shape, layer)
        limited, min_levels, before, after = 0, _INT8_LEVELS, 0, 0
        for channel in range(quantized.shape[0]):
            bound = _pair_bound(activation_max[channel], quantized[channel], layer.kind)
            before = max(before, bound)
            if bound > INT16_MAX:
                levels, quantized[channel], scales[channel], bound = _fewer_levels(
                    original[channel], activation_max[channel], layer.kind, bound)
                limited += 1
                min_levels = min(min_levels, levels)
            after = max(after, bound)
        if limited:
            _replace(initializers[weight_name], np.ascontiguousarray(np.moveaxis(quantized, 0, axis)).astype(np.int8))
            _replace(initializers[scale_name], scales.astype(np.float32))
            if len(layer.node.input) > 2 and layer.node.input[2] in producer:
                _requantize_bias(producer[layer.node.input[2]], initializers, layer.activation_dq, scales)
        records.append(LayerLimit(layer.node.name or weight_name, layer.kind, int(quantized.shape[0]), limited,
                                  min_levels, before, after))
    return records


def _axis(dequantize) -> int:
    from onnx.helper import get_attribute_value

    return next((int(get_attribute_value(a)) for a in dequantize.attribute if a.name == "axis"), 1)


def _per_weight_activation_max(per_channel: np.ndarray, shape: tuple[int, ...], layer: _Layer) -> np.ndarray:
    """The activation maximum each weight multiplies, in the shape of the weights with output channels first:
    [M, C/group, kh, kw] or [N, K]."""
    if layer.kind == "matmul":
        return np.broadcast_to(per_channel[None, :], shape)
    outputs, per_group = shape[0], shape[1]
    channel = (np.arange(outputs)[:, None] // (outputs // layer.group)) * per_group + np.arange(per_group)[None, :]
    return np.broadcast_to(per_channel[channel].reshape(outputs, per_group, *[1] * (len(shape) - 2)), shape)


def _fewer_levels(weights: np.ndarray, activation_max: np.ndarray, kind: str, bound: int):
    """The most weight levels (<= 127) whose requantized channel keeps every pair sum within int16."""
    peak = float(np.abs(weights).max())
    levels = min(_INT8_LEVELS, int(_INT8_LEVELS * INT16_MAX / bound) + 1)
    while levels > 1:
        scale = peak / levels
        quantized = np.clip(np.round(weights / scale), -_INT8_LEVELS, _INT8_LEVELS).astype(np.int64)
        new_bound = _pair_bound(activation_max, quantized, kind)
        if new_bound <= INT16_MAX:
            return levels, quantized, scale, new_bound
        levels -= 1
    scale = peak  # one level: |w| <= 1 and 255 + 255 fits
    quantized = np.clip(np.round(weights / scale), -1, 1).astype(np.int64)
    return 1, quantized, scale, _pair_bound(activation_max, quantized, kind)


def _requantize_bias(bias_dq, initializers: dict, activation_dq, weight_scales: np.ndarray) -> None:
    """ORT's int32 bias has scale activation_scale x weight_scale per channel: keep it so."""
    from onnx import numpy_helper

    values_name, scale_name = bias_dq.input[0], bias_dq.input[1]
    if values_name not in initializers or scale_name not in initializers:
        return
    bias = numpy_helper.to_array(initializers[values_name]).astype(np.float64) * \
        numpy_helper.to_array(initializers[scale_name]).astype(np.float64)
    activation_scale = float(numpy_helper.to_array(initializers[activation_dq.input[1]]).reshape(-1)[0])
    new_scales = activation_scale * weight_scales
    _replace(initializers[values_name], np.round(bias / new_scales).astype(np.int32))
    _replace(initializers[scale_name], new_scales.astype(np.float32))


def _replace(initializer, values: np.ndarray) -> None:
    from onnx import numpy_helper

    initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
