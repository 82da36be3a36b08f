"""int8 files of weights that were int8 already (Google's quantization-aware MobileNets) keep those weights exactly:
quantize/weight_grid.py. The measured effect on accuracy is in benchmarks/results/finetune_groups.md."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.quantize.tflite_int8 import QUANTIZATION_METADATA
from edgekit.quantize.weight_grid import channel_step, on_grid
from edgekit.tflite_model import TFLiteModel


def test_a_uint8_grid_is_found_and_kept_exactly_and_float_weights_are_left_alone():
    rng = np.random.default_rng(0)
    step, zero_point = 0.0123, 131
    levels = rng.integers(20, 240, size=(4, 3, 3, 3))  # uint8 levels of one per-tensor scale, as in Google's files
    levels[3, 0, 0, 0] = 255  # channel 3 reaches 124 steps from the zero point: still fits in int8
    levels[2, 0, 0, 0] = 0  # channel 2 reaches -131: it does not
    levels[:, 1, 1, 1], levels[:, 1, 1, 2] = 100, 101  # adjacent levels: the smallest gap is one step
    weights = (step * (levels - zero_point)).astype(np.float32)
    assert channel_step(weights[0]) == pytest.approx(step, rel=1e-5)
    assert channel_step(weights[2]) is None
    quantizer_scales = np.abs(weights).reshape(4, -1).max(1) / 127
    stored, scales, kept = on_grid(weights, 0, quantizer_scales)
    assert kept == 3 and scales[2] == quantizer_scales[2]
    exact = stored.astype(np.float64) * scales.reshape(-1, 1, 1, 1)
    for channel in (0, 1, 3):
        np.testing.assert_allclose(exact[channel], weights[channel], rtol=0, atol=1e-6)
        assert np.array_equal(stored[channel], levels[channel] - zero_point)
    trained = rng.normal(0, 0.05, size=(8, 16, 3, 3)).astype(np.float32)
    assert all(channel_step(channel) is None for channel in trained)
    assert channel_step(np.zeros(9)) is None


def _exact_channels(int8_weights: np.ndarray, float_weights: np.ndarray, axis: int) -> tuple[int, int]:
    error = np.abs(np.moveaxis(int8_weights - float_weights, axis, 0)).reshape(int8_weights.shape[axis], -1).max(1)
    peak = np.abs(np.moveaxis(float_weights, axis, 0)).reshape(float_weights.shape[axis], -1).max(1)
    return int(np.sum(error <= 1e-6 * np.maximum(peak, 1e-12))), int(error.size)


def test_int8_files_of_googles_weights_hold_the_imported_weights_exactly(v1_int8_bundle):
    """The session's MobileNet v1 0.25 bundle (Google's weights): in both int8 files, the dequantized weights of
    nearly every channel equal the fp32 file's (Google's levels), as each file's quantization record says. Without
    the grid, per-channel max/127 rounding leaves an error in almost every channel."""
    bundle = v1_int8_bundle["bundle"]
    assert v1_int8_bundle["code"] in (0, 1), v1_int8_bundle["stderr"]
    fp32, int8 = (TFLiteModel.from_file(bundle / f"{bundle.name}{s}.tflite") for s in ("", "_int8"))
    record = json.loads(int8.metadata[QUANTIZATION_METADATA])["weights_on_source_grid"]
    by_output = {fp32.tensors[op.outputs[0]].name: op for op in fp32.operators}
    exact = total = 0
    for op in int8.operators:
        if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        weight = int8.tensors[op.inputs[1]]
        reference = fp32.tensors[by_output[int8.tensors[op.outputs[0]].name].inputs[1]].data
        found = _exact_channels(weight.dequantized(), reference, weight.quantization.axis)
        exact, total = exact + found[0], total + found[1]
    assert record["channels_on_grid"] >= 0.9 * total and exact >= record["channels_on_grid"], (record, exact, total)

    model, reference = (onnx.load(str(bundle / f"{bundle.name}{s}.onnx")) for s in ("_int8", ""))
    floats = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    record = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])["weights_on_source_grid"]
    exact = total = 0
    for node in model.graph.node:
        name = node.input[0].removesuffix("_quantized")
        if node.op_type != "DequantizeLinear" or name not in floats or not name.endswith("weight") \
                or name.startswith("classifier"):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scales = stored[node.input[1]].reshape([-1 if d == axis else 1 for d in range(floats[name].ndim)])
        found = _exact_channels(stored[node.input[0]].astype(np.float64) * scales, floats[name], axis)
        exact, total = exact + found[0], total + found[1]
    # the saturation limit (onnx_saturation) may coarsen a few channels after the grid is kept
    assert record["channels_on_grid"] >= 0.9 * total and exact >= 0.9 * total, (record, exact, total)
    # the manifest carries each int8 file's count, as the files do
    manifest = json.loads((bundle / "manifest.json").read_text())
    grids = {a["path"]: a["details"]["weights_on_source_grid"] for a in manifest["artifacts"] if a["precision"] == "int8"}
    assert grids[f"{bundle.name}_int8.onnx"] == record and grids[f"{bundle.name}_int8.tflite"]["channels_on_grid"] > 0
