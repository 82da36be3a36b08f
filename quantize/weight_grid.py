"""Weights that were int8 already stay exactly as they were.

Google's quantized MobileNet .tflite files were trained quantization-aware: each convolution's weights are uint8
levels of one scale per tensor, w = s (q - z). edgekit imports them as those float values, so every weight of the
fp32 model is an integer multiple of one step. Quantizers re-quantize them per channel with the step max|w_c| / 127,
a different grid: rounding from one grid to the other is error the original file never had. Wherever a channel's
multiples fit in int8 (|w / s| <= 127), the int8 file takes that channel's own step as its scale, so its integer
weights are the original file's levels, exactly. Other channels keep the quantizer's scale.

Measured on MobileNet v2 with Google's weights, the int8 ONNX (fine-tuned 7-class head, 330 calibration images, AMD
EPYC Zen 3, AVX2 only): pooled features 16.6 dB SQNR against PyTorch as quantized before, 22.3 dB with the weights
kept on their grid (Google's own int8 file: 25.1 dB); benchmarks/results/finetune_groups.md has the accuracy.

Trained float weights are never on such a grid (the check below needs every value of a channel to be a multiple of
the smallest gap between its values, with at most 127 multiples either side of zero), so they are left alone.

Here: the grid test and the ONNX edit. The TFLite edit is in ``tflite_int8`` (it walks the weighted ops as that
module's dead-channel repair does), the ExecuTorch one in ``exporters/pte.py`` (PT2E weight observers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

INT8_LEVELS = 127
_TOLERANCE = 1e-3  # of a step: float32 storage of s * k is exact to ~1e-5 steps for |k| <= 255


@dataclass
class GridSummary:
    """How many weight channels the int8 file keeps on their source grid, for the file's quantization record."""

    layers: int = 0
    channels: int = 0
    channels_on_grid: int = 0

    def count(self, channels: int, on_grid: int) -> None:
        self.layers, self.channels, self.channels_on_grid = (self.layers + 1, self.channels + channels,
                                                             self.channels_on_grid + on_grid)

    def to_dict(self) -> dict:
        return asdict(self)


def channel_step(values: np.ndarray) -> float | None:
    """The step s of which every value is an integer multiple, at most 127 of them (so int8 holds them exactly),
    or None: a channel of trained float weights, one whose levels do not fit, or an all-zero one."""
    return channel_steps(np.asarray(values).reshape(1, -1), 0)[0]


def channel_steps(weights: np.ndarray, axis: int) -> list[float | None]:
    """``channel_step`` of each channel along ``axis``, all channels at once: one sort of the whole tensor instead
    of a ``np.unique`` per channel (MobileNet v2 has 18,000 channels; 1 s per quantized file before)."""
    rows = np.moveaxis(np.asarray(weights, dtype=np.float64), axis, 0)
    rows = rows.reshape(rows.shape[0], -1)
    gaps = np.diff(np.sort(rows, axis=1), axis=1)  # the gaps between a channel's distinct values, and zeros
    steps = np.where(gaps > 0, gaps, np.inf).min(axis=1, initial=np.inf)
    found = np.isfinite(steps)
    multiples = rows / np.where(found, steps, 1.0)[:, None]
    whole = np.round(multiples)
    found &= (np.abs(multiples).max(axis=1, initial=0) <= INT8_LEVELS) \
        & (np.abs(multiples - whole).max(axis=1, initial=0) <= _TOLERANCE)
    # one gap of two float32 values is a step to ~1e-6; the least-squares step over every value is as exact as
    # the values themselves
    return [float(row @ levels / (levels @ levels)) if ok else None for row, levels, ok in zip(rows, whole, found)]


def on_grid(weights: np.ndarray, axis: int, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel int8 weights and scales along ``axis`` with every channel that ``channel_step`` finds on a grid
    given that step as its scale; other channels keep ``scales`` and their rounding. Returns (int8 weights, float
    scales, channels on the grid)."""
    moved = np.moveaxis(np.asarray(weights, dtype=np.float64), axis, 0)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1).copy()
    steps = channel_steps(weights, axis)
    on = sum(step is not None for step in steps)
    for channel, step in enumerate(steps):
        if step is not None:
            scales[channel] = step
    levels = np.clip(np.round(moved / scales.reshape(-1, *[1] * (moved.ndim - 1))), -INT8_LEVELS, INT8_LEVELS)
    return np.ascontiguousarray(np.moveaxis(levels, 0, axis)).astype(np.int8), scales, on


def keep_onnx_grid(model, float_weights: dict[str, np.ndarray]) -> GridSummary:
    """Edit an ONNX QDQ model in place (int8 per-channel weights of Conv/Gemm/MatMul, int32 bias at scale
    activation x weight): channels whose fp32 weights (``float_weights``, by initializer name) lie on a grid get
    it (depthwise convolutions too). Runs before the saturation limit, which then coarsens only the channels that
    would still saturate."""
    from onnx import numpy_helper

    from .onnx_saturation import _axis, _requantize_bias

    initializers = {i.name: i for i in model.graph.initializer}
    producer = {output: node for node in model.graph.node for output in node.output}
    summary = GridSummary()
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        activation_dq, weight_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (activation_dq and weight_dq and activation_dq.op_type == weight_dq.op_type == "DequantizeLinear"
                and weight_dq.input[0] in initializers and len(weight_dq.input) > 1
                and weight_dq.input[1] in initializers):
            continue
        weight_name, scale_name = weight_dq.input[0], weight_dq.input[1]
        original = float_weights.get(weight_name.removesuffix("_quantized"))
        stored = numpy_helper.to_array(initializers[weight_name])
        scales = numpy_helper.to_array(initializers[scale_name])
        axis = _axis(weight_dq) % stored.ndim
        if original is None or original.shape != stored.shape or stored.dtype != np.int8 \
                or scales.size != stored.shape[axis]:
            continue
        levels, new_scales, on = on_grid(original, axis, scales)
        summary.count(scales.size, on)
        if not on:
            continue
        initializers[weight_name].CopyFrom(numpy_helper.from_array(levels, weight_name))
        initializers[scale_name].CopyFrom(numpy_helper.from_array(new_scales.astype(np.float32), scale_name))
        if len(node.input) > 2 and node.input[2] in producer:
            _requantize_bias(producer[node.input[2]], initializers, activation_dq, new_scales)
    return summary
