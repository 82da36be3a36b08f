"""Static int8 ONNX: ONNX Runtime's QDQ quantization with per-channel weights, calibrated on real images.

Steps: ORT's pre-processing (shape inference and graph optimisation), then a calibrator we build ourselves
(so that the histogram methods get enough bins: through ``quantize_static`` ORT 1.31's Entropy method uses as
many histogram bins as quantized bins and degenerates into MinMax, byte for byte: quantize_static builds its
calibrator without num_bins, github.com/microsoft/onnxruntime/blob/main/onnxruntime/python/tools/quantization/
quantize.py; its entropy search made fast in ``entropy_threshold``, same thresholds), then ``quantize_static``
reading the ranges from a calibration cache, then each weight channel given as many levels as int16 pair sums
allow, so that the file computes the same on x86 CPUs without VNNI as everywhere else (``onnx_saturation``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from ..capture import captured_output, one_line
from ..errors import EdgekitError
from ..fileio import atomic_path
from ..formats import CALIBRATION_METHODS as METHODS
from .calibration import CalibrationSet, input_range
from .entropy_threshold import faster_entropy
from .onnx_saturation import INT16_MAX, LayerLimit, limit_pair_sums
from .weight_grid import GridSummary, keep_onnx_grid
ACTIVATION_TYPES = ("uint8", "int8")

# Measured on an Intel Xeon with VNNI and AMX (benchmarks/results/int8_intel_xeon_vnni_amx.md): uint8 activations
# with int8 weights (U8S8) run MobileNet v2 about 1.7x faster than int8 activations (S8S8), which MLAS serves through
# slower kernels; on an AMD EPYC (avx2) S8S8 EfficientNet-B0 is 2.7x slower than fp32 (int8_amd_epyc_avx2.md).
DEFAULT_ACTIVATION_TYPE = "uint8"

# Every op ONNX Runtime can quantize is quantized (op_types=None). Measured on EfficientNet-B0, 1 thread:
# fp32 12.7 ms; all ops int8 10.9 ms; Sigmoid and Mul (SiLU, squeeze-and-excite) left in float 18.1 ms, slower
# than fp32, because every SiLU then costs a DequantizeLinear and a QuantizeLinear (6 ms in all) and loses the
# fused QuickGelu kernel fp32 uses. See benchmarks/results/int8_<cpu>.md.
CALIBRATION_BATCH = 16
_HISTOGRAM_BINS = 2048  # TensorRT's choice for entropy calibration; ORT's quantize_static passes 128
_PERCENTILE = 99.999


class _Reader:
    """ORT's CalibrationDataReader protocol over NCHW images, one array per model input, a few images per run."""

    def __init__(self, names: list[str], arrays: list[np.ndarray], batch: int):
        self.names, self.arrays = names, arrays
        self.nchw, self.batch = arrays[0], batch
        self.position = 0

    def get_next(self):
        if self.position >= len(self.nchw):
            return None
        chunk = {name: x[self.position:self.position + self.batch] for name, x in zip(self.names, self.arrays)}
        self.position += self.batch
        return chunk

    def __len__(self) -> int:
        return len(self.nchw)


def quantize_onnx(fp32_onnx: Path, out: Path, calibration: CalibrationSet, method: str = "minmax",
                  activation_type: str = DEFAULT_ACTIVATION_TYPE,
                  op_types: tuple[str, ...] | None = None, limit_saturation: bool = True,
                  finish: Callable | None = None) -> list[LayerLimit]:
    """Write ``out``: a QDQ int8 copy of ``fp32_onnx`` (int8 per-channel weights, ``activation_type``
    activations) with activation ranges from ``calibration``, and weight levels limited per channel where x86
    kernels without VNNI would saturate (returned, one record per layer; ``limit_saturation=False`` leaves them
    at 127 levels, for benchmarks that show what the limit does). ``op_types=None`` quantizes every op ORT can.
    ``finish(model_proto)`` edits the result (edgekit's metadata) before ``out`` is written, once."""
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise EdgekitError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if activation_type not in ACTIVATION_TYPES:
        raise EdgekitError(f"unknown activation type {activation_type!r}: choose one of {', '.join(ACTIVATION_TYPES)}")
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if not fp32_onnx.is_file():
        raise EdgekitError(f"model file {fp32_onnx} does not exist; export the fp32 ONNX first")
    try:
        source = onnx.load(str(fp32_onnx), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise EdgekitError(f"{fp32_onnx} is not a readable ONNX model ({one_line(e)}); export it again") from None
    weights = {i.name for i in source.graph.initializer}
    input_names = [i.name for i in source.graph.input if i.name not in weights]  # several: each a picture
    outputs = {o.name for o in source.graph.output}
    metadata = {p.key: p.value for p in source.metadata_props}
    del source
    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
    calibrator_options = {"minmax": {},
                          "entropy": {"num_bins": _HISTOGRAM_BINS, "num_quantized_bins": 256, "symmetric": False},
                          "percentile": {"num_bins": _HISTOGRAM_BINS, "percentile": _PERCENTILE, "symmetric": False}}
    options = calibrator_options[method]
    log: list[str] = []
    try:
        with captured_output() as log:  # ORT logs reminders and prints histogram progress on stdout
            return _quantize(fp32_onnx, out, calibration, method, activation_type, op_types, input_names, outputs,
                             metadata, calibrate_method, options, limit_saturation, finish)
    except EdgekitError:
        raise
    except Exception as e:  # ORT raises its own exception classes, onnx its own
        raise EdgekitError(f"ONNX Runtime could not quantize {fp32_onnx.name} ({one_line(e, log)}); export the "
                           "fp32 ONNX with edgekit, or leave out --int8") from None


def _quantize(fp32_onnx: Path, out: Path, calibration: CalibrationSet, method: str, activation_type: str,
              op_types, input_names: list[str], outputs: set[str], metadata: dict[str, str], calibrate_method,
              calibrator_options: dict, limit_saturation: bool, finish: Callable | None) -> list[LayerLimit]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgekit-int8-") as work:
        work = Path(work)
        prepared = work / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))
        calibrator = create_calibrator(prepared, list(op_types) if op_types else None,
                                       augmented_model_path=str(work / "augmented.onnx"),
                                       calibrate_method=calibrate_method, extra_options=calibrator_options)
        arrays = calibration.inputs(len(input_names))
        # one batch per call: the histogram collectors stack a call's outputs and need equal batch sizes
        for start in range(0, len(calibration.nchw), CALIBRATION_BATCH):
            chunks = [x[start:start + CALIBRATION_BATCH] for x in arrays]
            calibrator.collect_data(_Reader(input_names, chunks, len(chunks[0])))
        if method == "entropy":
            faster_entropy(calibrator.collector)
        ranges = calibrator.compute_data()
        if method != "minmax":
            _clip_to_observed(ranges, calibrator.collector.histogram_dict, outputs)
        for name in input_names:
            if name in ranges.data:
                low, high = input_range(calibration)
                ranges.data[name].lowest = np.asarray(low, dtype=np.float32)
                ranges.data[name].highest = np.asarray(high, dtype=np.float32)
        del calibrator
        cache = work / "ranges.json"
        save_tensors_data(ranges, cache)
        quantized = work / "quantized.onnx"  # the quantizer's own write stays in the work folder
        quantize_static(
            str(prepared), str(quantized), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None, per_channel=True,
            activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=calibrate_method, calibration_cache_path=str(cache))
        model = onnx.load(str(quantized))
        # the fp32 weights by name, read once: the grid and the saturation limit requantize from them
        float_weights = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(prepared)).graph.initializer}
        grid = keep_onnx_grid(model, float_weights)
        limits = _limit_saturation(model, float_weights, arrays, activation_type) if limit_saturation else []
        _record_metadata(model, metadata, method, activation_type, calibration, limits, grid)
        if finish is not None:
            finish(model)
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
    return limits


def _limit_saturation(model, float_weights: dict[str, np.ndarray], calibration_inputs: list[np.ndarray],
                      activation_type: str) -> list[LayerLimit]:
    """uint8 activations meet int8 weights in ORT's U8S8 kernels, which saturate on x86 without VNNI
    (``onnx_saturation``); int8 activations go through other kernels this module does not model."""
    if activation_type != "uint8":
        return []
    return limit_pair_sums(model, float_weights, calibration_inputs)


def _clip_to_observed(ranges, histograms: dict, outputs: set[str]) -> None:
    """Keep each histogram method's threshold inside the values actually seen.

    ORT's entropy and percentile thresholds are symmetric, [-t, t]: for a ReLU or ReLU6 output, which is
    never negative, that spends half of the uint8 levels on values that never occur (entropy calibration
    lost 3.5 points of top-1 on MobileNet v2 that way). Clipping to the observed [min, max] keeps the
    method's choice of t where it clips and gives the unused half back. The model's outputs keep their full
    range: the largest logits are the rare values a histogram method clips first, and they are the answer.
    """
    for name, data in ranges.data.items():
        if name not in histograms:
            continue
        observed_min, observed_max = histograms[name][2], histograms[name][3]
        low, high = (observed_min, observed_max) if name in outputs else data.range_value
        data.lowest = np.asarray(max(low, observed_min), dtype=np.float32)
        data.highest = np.asarray(min(high, observed_max), dtype=np.float32)


def _record_metadata(model, fp32_metadata: dict[str, str], method: str, activation_type: str,
                     calibration: CalibrationSet, limits: list[LayerLimit], grid: GridSummary) -> None:
    """Keep the fp32 file's metadata (name, preprocessing, labels), which pre-processing drops, and add how
    the int8 file was made."""
    entries = {p.key: p.value for p in model.metadata_props} | fp32_metadata
    entries["quantization"] = json.dumps({
        "precision": "int8", "format": "QDQ", "weights": "int8 per-channel symmetric",
        "activations": f"{activation_type} per-tensor", "calibration_method": method,
        "calibration_samples": len(calibration), "saturation": saturation_summary(limits),
        "weights_on_source_grid": grid.to_dict()})
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def saturation_summary(limits: list[LayerLimit]) -> dict:
    """Totals over the layers, for the file's metadata and the export's console line."""
    return {"int16_pair_sum_limit": INT16_MAX, "layers": len(limits),
            "layers_limited": sum(1 for r in limits if r.channels_limited),
            "channels": sum(r.channels for r in limits), "channels_limited": sum(r.channels_limited for r in limits),
            "min_levels": min((r.min_levels for r in limits), default=127)}
