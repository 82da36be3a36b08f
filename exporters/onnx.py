"""PyTorch -> ONNX: one self-contained file, NCHW float32 input ``image``, output ``logits``, BN folded,
simplified with onnxslim, edgekit's metadata in ``metadata_props``, checked with ``onnx.checker`` (full).

Exporter choice (measured, benchmarks/results/export.md): with onnxslim and the checks included, the
TorchScript-based exporter (``dynamo=False``) converts MobileNet v1/v2 and EfficientNet-B0/Lite0 in about 2 s
and the dynamo exporter in 5-7 s, with about 80 MB more peak memory, to the same Conv/Clip/Add graph and the
same parity (MobileNet v2 with Google's weights: PSNR 139.8 dB both). Legacy is the default; ``dynamo`` stays
available for a model the tracer cannot follow.
"""

from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from pathlib import Path

from ..capture import one_line
from ..errors import EdgekitError
from ..formats import ONNX_EXPORTERS as EXPORTERS
from ..formats import get_format
from ..quantize import onnx_int8
from ..tflite_metadata import ModelFacts
from .backend import FormatBackend
from .common import io_names, sample_inputs
from .locate import locate_unconvertible

MIN_OPSET = 17
DEFAULT_OPSET = 17


def check_opset(opset: int, exporter: str = "legacy") -> None:
    """Refuse an opset the exporter cannot write before any work starts (``--opset 99`` used to fail minutes in)."""
    from torch.onnx import _constants

    highest = _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET if exporter == "legacy" else _constants.ONNX_MAX_OPSET
    if not MIN_OPSET <= opset <= highest:
        raise EdgekitError(f"--opset {opset} is outside what the {exporter} exporter writes ({MIN_OPSET}..{highest}); "
                           f"choose one in that range")


def torch_to_onnx(model, out: Path, *, resolution: int, metadata: dict, opset: int = DEFAULT_OPSET,
                  dynamic_batch: bool = True, exporter: str = "legacy") -> dict:
    """Write ``out`` from an export-ready ``model``; returns facts for the manifest (opset, operator counts)."""
    import onnx

    if opset < MIN_OPSET:
        raise EdgekitError(f"opset {opset} is too old: edgekit exports opset {MIN_OPSET} or newer")
    if exporter not in EXPORTERS:
        raise EdgekitError(f"unknown ONNX exporter {exporter!r}: choose {' or '.join(EXPORTERS)}")
    try:
        proto = _export_legacy(model, resolution, opset, dynamic_batch) if exporter == "legacy" else \
            _export_dynamo(model, resolution, opset, dynamic_batch)
        proto = _simplify(proto)
    except EdgekitError:
        raise
    except Exception as e:  # the exporters raise anything from TorchScript, dynamo or onnx internals
        where = locate_unconvertible(model, resolution, _legacy_block_export(opset))
        if where:
            raise EdgekitError(f"ONNX cannot take {where}; replace that block with supported operations, or "
                               "ship --formats tflite") from None
        raise EdgekitError(f"ONNX export ({exporter}) failed: {one_line(e)}; try --onnx-exporter "
                           f"{'dynamo' if exporter == 'legacy' else 'legacy'} or --formats tflite") from None
    ops = Counter(node.op_type for node in proto.graph.node)
    if ops.get("BatchNormalization"):
        raise EdgekitError(f"ONNX export left {ops['BatchNormalization']} BatchNormalization nodes unfolded; "
                           "the model has a batch norm that follows no convolution")
    set_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise EdgekitError(f"the exported ONNX graph fails onnx.checker: {one_line(e)}") from None
    # one file, no external data: a phone app or a board gets a single thing to copy
    onnx.save_model(proto, str(out), save_as_external_data=False)
    opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    return {"opset": opset_used, "exporter": exporter, "dynamic_batch": dynamic_batch, "operators": dict(ops)}



def _export_legacy(model, resolution: int, opset: int, dynamic_batch: bool):
    import onnx
    import torch

    buffer = io.BytesIO()
    inputs, outputs = io_names(model)
    axes = {name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None
    with warnings.catch_warnings():
        # the deprecation notice of the TorchScript exporter, and TracerWarnings of TF-SAME padding, whose
        # sizes are constant for the fixed input resolution being exported
        warnings.simplefilter("ignore")
        torch.onnx.export(model, sample_inputs(model, resolution), buffer, dynamo=False, opset_version=opset,
                          input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _legacy_block_export(opset: int):
    """One block alone through the TorchScript exporter: the fast way to find which block ONNX cannot take."""
    import torch

    def convert(block, args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(block, args, io.BytesIO(), dynamo=False, opset_version=opset)

    return convert


def _export_dynamo(model, resolution: int, opset: int, dynamic_batch: bool):
    import torch

    # batch 2 in the sample: torch.export specialises a dimension traced with size 1
    sample = sample_inputs(model, resolution, 2 if dynamic_batch else 1)
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = tuple({0: batch} for _ in sample) if dynamic_batch else None
    inputs, outputs = io_names(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, sample, dynamo=True,
                                    opset_version=opset, input_names=inputs, output_names=outputs,
                                    dynamic_shapes=shapes, optimize=True, verbose=False)
    return program.model_proto


def _simplify(proto):
    import onnxslim

    # constant folding, shape inference, dead-node removal; turns TF-SAME's Pad into the conv's own pads
    return onnxslim.slim(proto)


def set_metadata(proto, metadata: dict) -> None:
    """Put edgekit's entries into ``metadata_props`` (replacing earlier ones, keeping anybody else's)."""
    entries = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    entries |= _app_facts(metadata)
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in keep + sorted(entries.items()):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def _app_facts(metadata: dict) -> dict[str, str]:
    """The facts the .tflite files carry as TFLite Metadata (edgekit/tflite_metadata.py), under ONNX's recommended
    keys where it has them (model_author, model_license), so that every format tells an app the same."""
    if "preprocessing" not in metadata:
        return {}
    facts = ModelFacts.from_edgekit(metadata)
    size = str(metadata.get("resolution", ""))
    return {"model_name": facts.name, "model_description": facts.description, "model_version": facts.version,
            "model_author": facts.author, "model_license": facts.license, "image_width": size,
            "image_height": size, "color_space": "RGB", "normalization_mean": json.dumps(list(facts.mean)),
            "normalization_std": json.dumps(list(facts.std))}


def operator_counts(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(Counter(node.op_type for node in graph.node).items()))


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


class OnnxBackend(FormatBackend):
    """ONNX: torch.onnx (legacy or dynamo) + onnxslim for fp32, ONNX Runtime's static QDQ quantization for int8."""

    format = get_format("onnx")
    layer_comparison = True

    def check(self, spec) -> None:
        super().check(spec)
        check_opset(spec.opset, spec.onnx_exporter)

    def export_fp32(self, model, out: Path, *, spec, resolution: int, metadata: dict) -> dict:
        return torch_to_onnx(model, out, resolution=resolution, metadata=metadata, opset=spec.opset,
                             dynamic_batch=spec.dynamic_batch, exporter=spec.onnx_exporter)

    def quantize_int8(self, model, fp32: Path, out: Path, *, calibration, spec, metadata: dict) -> dict:
        limits = onnx_int8.quantize_onnx(fp32, out, calibration, method=spec.calib_method,
                                         finish=lambda proto: set_metadata(proto, metadata))
        return {"calibration_method": spec.calib_method,
                "weights": "int8 per-channel, levels limited where int16 pair sums could saturate",
                "activations": onnx_int8.DEFAULT_ACTIVATION_TYPE,
                "saturation": onnx_int8.saturation_summary(limits) | {"per_layer": [r.to_dict() for r in limits]},
                "weights_on_source_grid": json.loads(read_metadata(out)["quantization"]).get("weights_on_source_grid"),
                "operators": operator_counts(out)}

    def int8_summary(self, details: dict) -> str | None:
        saturation = details["saturation"]
        return (f"{saturation['channels_limited']} of {saturation['channels']} weight channels limited so no x86 "
                "CPU saturates")

    def read_metadata(self, path: Path) -> dict:
        return {key: _json_or_text(value) for key, value in read_metadata(path).items()}

    def operator_counts(self, path: Path) -> dict[str, int]:
        return operator_counts(path)


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


BACKEND = OnnxBackend()
