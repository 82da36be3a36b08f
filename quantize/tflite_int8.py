"""Fully integer TFLite: ai-edge-quantizer's static int8 recipe on the fp32 file, then the I/O type asked for.

"Fully integer" means every CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD reads and writes int8
tensors with int8 weights, and no float computation sits anywhere in the graph: the only float or uint8
tensors allowed are the graph's own inputs and outputs, converted by one QUANTIZE/DEQUANTIZE at each edge.
``edgekit.tflite_model.integer_report`` proves this from the flatbuffer, so tests and the bundle report never take it on trust.

ai-edge-quantizer's ``static_wi8_ai8`` recipe produces int8 input and output. For ``uint8`` (what a camera
hands over) and ``float32`` I/O the graph gets the conversion TFLite's own converter would add: a QUANTIZE
(uint8 -> int8, same scale, zero point + 128; or float -> int8) before the first op and a QUANTIZE (int8 ->
uint8) or DEQUANTIZE (int8 -> float) after the last.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..capture import captured_output, one_line
from ..errors import EdgekitError
from ..fileio import atomic_write_bytes
from ..formats import IO_DTYPES
from ..tflite_model import REQUIRED_INT8_OPS, TFLiteModel, integer_report, pack_model, schema, unpack_model
from .calibration import CalibrationSet, input_range
from .weight_grid import GridSummary, on_grid

__all__ = ["CALIBRATION_METHOD", "IO_DTYPES", "REQUIRED_INT8_OPS", "integer_report", "quantize_tflite",
           "quantized_tflite"]
# ai-edge-quantizer 0.10 sets static activation ranges from min/max only (its other algorithms are for
# weights); --calib-method entropy|percentile applies to the ONNX file.
CALIBRATION_METHOD = "minmax"
QUANTIZATION_METADATA = "edgekit_quantization"  # metadata entry: JSON, how the int8 file was made


def quantize_tflite(fp32_tflite: Path, out: Path, calibration: CalibrationSet, io_dtype: str = "int8") -> None:
    """Write ``out``: a fully integer copy of ``fp32_tflite`` (NHWC float input [1, H, W, 3]) calibrated on
    ``calibration``, with ``io_dtype`` input and output, and the fp32 file's metadata."""
    atomic_write_bytes(Path(out), quantized_tflite(fp32_tflite, calibration, io_dtype, source=str(out)))


def quantized_tflite(fp32_tflite: Path, calibration: CalibrationSet, io_dtype: str = "int8",
                     source: str = "<int8>") -> bytes:
    """The bytes ``quantize_tflite`` writes, for a caller that adds its own metadata before the one write."""
    if io_dtype not in IO_DTYPES:
        raise EdgekitError(f"unknown --io-dtype {io_dtype!r}: choose one of {', '.join(IO_DTYPES)}")
    fp32_tflite = Path(fp32_tflite)
    fp32 = TFLiteModel.from_file(fp32_tflite)  # fails with one line on a missing or corrupt file
    log: list[str] = []
    try:
        # the library prints progress bars ("Running Calibration:"), interpreter notices, UserWarnings and a
        # size report; edgekit prints its own steps and keeps stdout for tables and JSON. What it printed stays
        # at hand for the one-line error.
        with captured_output() as log, warnings.catch_warnings():
            # its calibrator keeps every intermediate tensor, which LiteRT warns about as a debugging mode
            warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all_tensors`", UserWarning)
            quantized = _quantize_static(fp32_tflite, calibration)
        record = {"precision": "int8", "weights": "int8 per-channel symmetric",
                  "activations": "int8 per-tensor", "io_dtype": io_dtype, "calibration_method": CALIBRATION_METHOD,
                  "calibration_samples": len(calibration)}
        quantized = _finish_graph(quantized, io_dtype, fp32, record)
    except EdgekitError:
        raise
    except Exception as e:  # the quantizer and the interpreter raise many exception types
        raise EdgekitError(f"ai-edge-quantizer could not quantize {fp32_tflite.name} ({one_line(e, log)}); export "
                           "the fp32 TFLite with edgekit, or leave out --int8") from None
    report = integer_report(TFLiteModel(quantized, source))
    if not report["fully_integer"]:
        # never ship a file called int8 that is not: the quantizer left float compute behind
        raise EdgekitError(f"ai-edge-quantizer left {fp32_tflite.name} partly float ({'; '.join(report['problems'][:3])}); "
                           "this model has an op without an int8 kernel: export without --int8 or report it")
    return quantized


def _quantize_static(fp32_tflite: Path, calibration: CalibrationSet) -> bytes:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    interpreter = Interpreter(model_path=str(fp32_tflite))
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise EdgekitError(f"{fp32_tflite.name} has no signature; ai-edge-quantizer needs one (export it with "
                           "edgekit, which uses litert-torch)")
    key, signature = next(iter(signatures.items()))
    # the signature's inputs in the subgraph's order, which edgekit sets to forward()'s: input K gets the
    # pictures of calibration.inputs()[K], each a picture with the same preprocessing
    details = interpreter.get_signature_runner(key).get_input_details()
    position = {d["index"]: k for k, d in enumerate(interpreter.get_input_details())}
    names = sorted(signature["inputs"], key=lambda name: position[details[name]["index"]])
    arrays = [np.ascontiguousarray(np.moveaxis(x, 1, -1)) for x in calibration.inputs(len(names))]
    samples = [{name: x[i][None] for name, x in zip(names, arrays)} for i in range(len(calibration))]
    plan = recipe.static_wi8_ai8()
    engine = quantizer.Quantizer(str(fp32_tflite), plan)
    # Quantizer.calibrate keeps a moving average (0.95) of each image's min and max (its default qsv_update_func,
    # calibration_utils.moving_average_update: github.com/google-ai-edge/ai-edge-quantizer/blob/main/
    # ai_edge_quantizer/calibrator.py), which weights the first
    # images most and clips the rest: on MobileNet v2 it cost 3.5 points of top-1. The same calibrator with
    # the plain min/max update gives the ranges ONNX Runtime's MinMax gives.
    rules = recipe_manager.RecipeManager()
    rules.load_quantization_recipe(plan)
    ranges_of = calibrator.Calibrator(fp32_tflite.read_bytes(), num_threads=os.cpu_count() or 1,
                                      qsv_update_func=qsv_utils.min_max_update)
    ranges_of.calibrate({key: samples}, rules)
    ranges = ranges_of.get_model_qsvs()
    for input_tensor in (details[name]["name"] for name in names):
        if input_tensor in ranges:
            low, high = input_range(calibration)
            ranges[input_tensor] = dict(ranges[input_tensor]) | {
                "min": np.full_like(np.asarray(ranges[input_tensor]["min"], dtype=np.float32), low),
                "max": np.full_like(np.asarray(ranges[input_tensor]["max"], dtype=np.float32), high)}
    with warnings.catch_warnings(), _large_weights_in_slices():
        # all-zero weight channels overflow the library's bias cast; _repair_dead_channels fixes them after
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        result = engine.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


_LIBRARY_CHUNK_BYTES = 32 * 1024 * 1024  # above this, uniform_quantize reshapes the data to 2-D first


@contextmanager
def _large_weights_in_slices():
    """ai-edge-quantizer 0.10's uniform_quantize reshapes a tensor of more than 32 MiB to 2-D and then broadcasts
    its 4-D per-channel scales to that shape, which numpy refuses ("input operand has more dimensions than allowed
    by the axis remapping"): a convolution with 8.4 M or more weights (U-Net at width 1.0: 1024x3x3x1024) could not
    be quantized. Such a tensor is quantized here in slices of output channels, each under the limit, with the
    same per-channel scales: the integers are the ones the library computes for a smaller tensor."""
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as library

    original = library.uniform_quantize

    def in_slices(tensor_data, quantization_params, *args, **kwargs):
        scale = np.asarray(quantization_params.scale)
        data = np.asarray(tensor_data)
        channels_first = (data.ndim > 2 and scale.ndim == data.ndim and quantization_params.quantized_dimension == 0
                          and scale.shape[0] == data.shape[0] and all(n == 1 for n in scale.shape[1:]))
        if not channels_first or data.nbytes <= _LIBRARY_CHUNK_BYTES or len(data) < 2:
            return original(tensor_data, quantization_params, *args, **kwargs)
        step = max(1, _LIBRARY_CHUNK_BYTES // data[0].nbytes)
        zero_point = np.asarray(quantization_params.zero_point)
        sliced = zero_point.shape == scale.shape

        def part(i):
            return replace(quantization_params, scale=scale[i:i + step],
                           zero_point=zero_point[i:i + step] if sliced else zero_point)

        return np.concatenate([original(data[i:i + step], part(i), *args, **kwargs)
                               for i in range(0, len(data), step)])

    library.uniform_quantize = in_slices
    try:
        yield
    finally:
        library.uniform_quantize = original


def _opcode_index(model, builtin: int, version: int) -> int:
    tfl = schema()
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and code.version == version:
            return i
    code = tfl.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the old int8 field saturates at 127 (PLACEHOLDER_FOR_...)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _edge_tensor(model, inner, dtype: str):
    """A copy of the int8 I/O tensor ``inner`` with the outer type the app sees."""
    tfl = schema()
    outer = tfl.TensorT()
    outer.shape = inner.shape
    outer.shapeSignature = inner.shapeSignature
    outer.name = inner.name
    outer.buffer = len(model.buffers)
    model.buffers.append(tfl.BufferT())
    if dtype == "uint8":
        outer.type = tfl.TensorType.UINT8
        q = tfl.QuantizationParametersT()
        q.scale = list(inner.quantization.scale)
        # same real values: uint8 q = int8 q + 128
        q.zeroPoint = [int(z) + 128 for z in inner.quantization.zeroPoint]
        q.quantizedDimension = 0
        outer.quantization = q
    else:
        outer.type = tfl.TensorType.FLOAT32
    name = inner.name.decode() if isinstance(inner.name, bytes) else inner.name
    inner.name = f"{name}_int8"
    return outer


def _finish_graph(buffer: bytes, io_dtype: str, fp32: TFLiteModel, record: dict) -> bytes:
    """Repair dead channels, convert the graph's edges to ``io_dtype``, carry over the fp32 file's metadata
    (name, preprocessing, labels) where the quantizer dropped it and add how the file was quantized."""
    tfl = schema()
    model = unpack_model(buffer)
    _repair_dead_channels(model, fp32)
    grid = _keep_weight_grid(model, fp32)  # after the repair: dead channels stay
    record["weights_on_source_grid"] = grid.to_dict()
    relaxed = _relax_unreachable_relu6(model)
    if relaxed:
        record["relu6_as_relu"] = relaxed
    graph = model.subgraphs[0]
    remap: dict[int, int] = {}
    if io_dtype != "int8":
        quantize_op = _opcode_index(model, tfl.BuiltinOperator.QUANTIZE, 1)
        dequantize_op = _opcode_index(model, tfl.BuiltinOperator.DEQUANTIZE, 2)  # version 2: int8 input
        output_op = quantize_op if io_dtype == "uint8" else dequantize_op
        for edges, is_input in ((graph.inputs, True), (graph.outputs, False)):
            for position, inner_index in enumerate(list(edges)):
                graph.tensors.append(_edge_tensor(model, graph.tensors[inner_index], io_dtype))
                outer_index = len(graph.tensors) - 1
                edges[position] = remap[inner_index] = outer_index
                if is_input:  # outer -> QUANTIZE -> int8 graph
                    graph.operators.insert(0, _operator(quantize_op, outer_index, inner_index))
                else:  # int8 graph -> QUANTIZE/DEQUANTIZE -> outer
                    graph.operators.append(_operator(output_op, inner_index, outer_index))
        for signature in model.signatureDefs or []:
            for entry in list(signature.inputs or []) + list(signature.outputs or []):
                entry.tensorIndex = remap.get(entry.tensorIndex, entry.tensorIndex)
    present = {(m.name.decode() if isinstance(m.name, bytes) else m.name) for m in model.metadata or []}
    entries = dict(fp32.metadata) | {QUANTIZATION_METADATA: json.dumps(record).encode()}
    for name, data in entries.items():
        if name in present:
            continue
        entry = tfl.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers)
        blob = tfl.BufferT()
        blob.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(blob)
        model.metadata = (model.metadata or []) + [entry]
    return pack_model(model)


_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _weighted_ops(model, fp32: TFLiteModel):
    """Each convolution or fully connected op of an unpacked int8 ``model`` with int8 per-channel weights and an
    int32 bias: (input tensor, weight tensor, bias tensor, the fp32 file's same op or None), the fp32 op found by
    its output tensor name, which the quantizer keeps."""
    tfl = schema()
    op_names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    fp32_by_output = {fp32.tensors[op.outputs[0]].name: op for op in fp32.operators if op.opcode in _WEIGHTED_OPS}
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) not in _WEIGHTED_OPS or len(op.inputs) < 3 \
                or op.inputs[2] < 0:
            continue
        source, weight, bias = (graph.tensors[i] for i in op.inputs[:3])
        if weight.type != tfl.TensorType.INT8 or bias.type != tfl.TensorType.INT32 or weight.quantization is None \
                or np.size(weight.quantization.scale) < 2:
            continue
        name = graph.tensors[op.outputs[0]].name
        yield source, weight, bias, fp32_by_output.get(name.decode() if isinstance(name, bytes) else name)


def _set_scales(model, source, weight, bias, weight_scales: np.ndarray, bias_values: np.ndarray) -> None:
    """New per-channel weight scales, with the int32 bias at input scale x weight scale as TFLite's kernels require:
    ``bias_values`` (float, at that scale) rounded and kept within int32."""
    bias_scale = float(source.quantization.scale[0]) * weight_scales
    weight.quantization.scale = [float(s) for s in weight_scales]
    bias.quantization.scale = [float(s) for s in bias_scale]
    model.buffers[bias.buffer].data = np.clip(np.round(bias_values / bias_scale), -2**31 + 1, 2**31 - 1) \
        .astype(np.int32).view(np.uint8)


def _stored_bias(model, bias) -> np.ndarray:
    return np.asarray(model.buffers[bias.buffer].data, dtype=np.uint8).view(np.int32).astype(np.float64) \
        * np.asarray(bias.quantization.scale, dtype=np.float64)


def _repair_dead_channels(model, fp32: TFLiteModel) -> int:
    """Give all-zero weight channels a usable scale and re-quantize their bias; returns channels repaired.

    ai-edge-quantizer 0.10 derives a channel's weight scale from its range with a 1e-9 floor (uniform_quantize_tensor
    in github.com/google-ai-edge/ai-edge-quantizer/blob/main/ai_edge_quantizer/algorithms/uniform_quantize/
    uniform_quantize_tensor.py), so a channel
    whose weights are all zero (8 of 32 in the first convolution of Google's MobileNet v2) gets scale ~1e-11
    and its bias, quantized with input_scale * weight_scale, saturates int32: the channel then outputs
    relu6(huge) instead of relu6(bias). Any scale is exact for zero weights, so we take the layer's median
    and quantize the fp32 bias with it (ONNX Runtime uses scale 1.0 for such channels for the same reason).
    """
    repaired = 0
    for source, weight, bias, reference in _weighted_ops(model, fp32):
        w_scale = np.asarray(weight.quantization.scale, dtype=np.float64)
        axis = weight.quantization.quantizedDimension
        w = np.asarray(model.buffers[weight.buffer].data, dtype=np.uint8).view(np.int8).reshape(weight.shape)
        dead = np.flatnonzero(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1) == 0)
        if dead.size == 0:
            continue
        if reference is None or fp32.tensors[reference.inputs[2]].data is None:
            continue  # cannot recover the float bias: leave the quantizer's result alone
        live = np.setdiff1d(np.arange(w_scale.size), dead)
        w_scale[dead] = np.median(w_scale[live]) if live.size else 1.0
        # the live channels keep their int32 values exactly: their scales do not change
        values = np.asarray(model.buffers[bias.buffer].data, dtype=np.uint8).view(np.int32).astype(np.float64) \
            * float(source.quantization.scale[0]) * w_scale
        values[dead] = fp32.tensors[reference.inputs[2]].data.astype(np.float64)[dead]
        _set_scales(model, source, weight, bias, w_scale, values)
        repaired += int(dead.size)
    return repaired


def _keep_weight_grid(model, fp32: TFLiteModel) -> GridSummary:
    """Each weighted op whose fp32 weights lie on an int8 grid (``weight_grid``) gets that grid: its int8 weights
    become the source's levels, its bias is requantized at the new scales."""
    summary = GridSummary()
    for source, weight, bias, reference in _weighted_ops(model, fp32):
        if reference is None or fp32.tensors[reference.inputs[1]].data is None:
            continue
        original = np.asarray(fp32.tensors[reference.inputs[1]].data, dtype=np.float32)
        scales = np.asarray(weight.quantization.scale, dtype=np.float64)
        axis = weight.quantization.quantizedDimension
        if original.shape != tuple(weight.shape) or scales.size != weight.shape[axis]:
            continue
        levels, new_scales, on = on_grid(original, axis, scales)
        summary.count(scales.size, on)
        if not on:
            continue
        values = _stored_bias(model, bias)
        model.buffers[weight.buffer].data = levels.reshape(-1).view(np.uint8)
        _set_scales(model, source, weight, bias, new_scales, values)
    return summary


# LiteRT's kernels quantize a fused activation's bounds to int32 when they prepare an op (kernel_util.cc
# Quantize: round(bound / scale) must fit); a float32 2**31 rounds up, so keep a factor 2 of margin.
_INT32_BOUND_LIMIT = 2.0 ** 30


def _relax_unreachable_relu6(model) -> int:
    """Fuse RELU instead of RELU6 where 6.0 lies far outside the int8 output's range; returns ops changed.

    Untrained networks shrink their activations layer after layer (random MobileNet v2: 14 of 70 int8 tensors
    end up with scales below 3e-9), and for such a tensor 6 / scale overflows int32: LiteRT's reference
    kernels then refuse the whole file (`no_integer_overflow_from_quantization`), though XNNPACK runs it. The
    largest value the tensor can hold, (127 - zero_point) * scale, is then far below 6, so the upper clamp can
    never act and RELU gives the same integers: the file stays exact. A floor on activation scales (TFLite's
    converter widens ranges below 1e-6) would also load, but rounds every such tensor to zero.
    """
    tfl = schema()
    graph = model.subgraphs[0]
    relaxed = 0
    for op in graph.operators:
        options = op.builtinOptions
        if getattr(options, "fusedActivationFunction", None) != tfl.ActivationFunctionType.RELU6:
            continue
        out = graph.tensors[op.outputs[0]]
        q = out.quantization
        if out.type != tfl.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            continue
        scale, zero_point = float(q.scale[0]), int(q.zeroPoint[0])
        if 6.0 / scale > _INT32_BOUND_LIMIT and (127 - zero_point) * scale < 6.0:
            options.fusedActivationFunction = tfl.ActivationFunctionType.RELU
            relaxed += 1
    return relaxed


def _operator(opcode_index: int, source: int, target: int):
    op = schema().OperatorT()
    op.opcodeIndex = opcode_index
    op.inputs = [source]
    op.outputs = [target]
    return op
