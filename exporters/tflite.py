"""PyTorch -> TFLite with litert-torch: NHWC float32 input ``[1, H, W, 3]`` named ``image``, output ``logits``,
no TRANSPOSE operator, activations fused by the converter (batch norm is folded before, by ``export_ready``),
edgekit's metadata embedded.

The NHWC input comes from ``litert_torch.to_channel_last_io``: the wrapper's permute meets the converter's
own NCHW->NHWC layout pass and both cancel, so the graph holds no transpose at all (checked after every
conversion, because a stray TRANSPOSE costs real time on a phone). ``to_fp16`` stores the weights as
float16 with ai-edge-quantizer's float-casting recipe (half the size; XNNPACK computes in fp32 or fp16).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..capture import captured_output, one_line
from ..errors import EdgekitError
from ..fileio import atomic_write_bytes
from ..formats import IO_DTYPES, get_format
from ..quantize import tflite_int8
from ..tflite_model import EDGEKIT_METADATA, TFLiteModel, integer_report, pack_model, schema, unpack_model
from ..tflite_metadata import ModelFacts, append_associated_files, set_standard_metadata
from .backend import FormatBackend
from .common import INPUT_NAME, OUTPUT_NAME, input_channels, sample_inputs
from .locate import locate_unconvertible

METADATA_NAME = EDGEKIT_METADATA  # the file's metadata entry: JSON, read back with TFLiteModel(...).metadata
CONVERTER = "litert-torch"


def torch_to_tflite(model, out: Path, *, resolution: int, metadata: dict) -> dict:
    """Write ``out`` from an export-ready ``model``; returns facts for the manifest (operator counts)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's C++ info lines
    import torch

    try:
        with captured_output():  # importing it prints absl and oneDNN notices
            import litert_torch
    except ImportError as e:
        raise EdgekitError(f"TFLite export needs litert-torch ({e}); `pip install litert-torch`") from None

    litert_torch.config.show_progress = False  # edgekit prints its own progress per step
    channels = input_channels(model)
    nchw = sample_inputs(model, resolution)
    inputs = len(nchw)
    sample = tuple(x.permute(0, 2, 3, 1).contiguous() for x in nchw)  # what the NHWC wrapper takes
    with torch.no_grad():  # a per-pixel output (U-Net's [N, classes, H, W]) also goes channels-last: no TRANSPOSE
        outputs = model(*nchw)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    dense = [k for k, output in enumerate(outputs) if output.dim() == 4]
    nhwc = litert_torch.to_channel_last_io(model, args=list(range(inputs)), outputs=dense or None).eval()
    try:
        with captured_output():
            flat = litert_torch.convert(nhwc, sample).model_content()
    except Exception as e:  # torch.export and the MLIR converter raise many exception types
        # each try is a whole litert-torch conversion (about a second): a few blocks only
        where = locate_unconvertible(model, resolution, lambda block, args: litert_torch.convert(block, args),
                                     limit=12)
        if where:
            raise EdgekitError(f"TFLite (litert-torch) cannot take {where}; replace that block with supported "
                               "operations, or ship --formats onnx") from None
        raise EdgekitError(f"TFLite conversion failed: {one_line(e)}; the model uses something litert-torch "
                           "cannot convert (try --formats onnx)") from None
    flat = embed_metadata(flat, metadata)
    graph = TFLiteModel(flat, str(out))
    _check_graph(graph, resolution, channels, inputs)
    out.write_bytes(flat)
    return {"converter": CONVERTER, "operators": dict(sorted(graph.op_counts.items()))}


def _check_graph(graph: TFLiteModel, resolution: int, channels: int, inputs: int = 1) -> None:
    transposes = graph.op_counts.get("TRANSPOSE", 0)
    if transposes:
        raise EdgekitError(f"the TFLite graph has {transposes} TRANSPOSE operators; edgekit ships NHWC graphs "
                           "without layout shuffles, report this model")
    tensors = graph.input_tensors()
    if len(tensors) != inputs:
        raise EdgekitError(f"the TFLite graph has {len(tensors)} inputs, the model {inputs}; report this model")
    for tensor in tensors:  # every image input NHWC
        if tensor.shape != (1, resolution, resolution, channels) or tensor.dtype != "FLOAT32":
            raise EdgekitError(f"the TFLite input is {tensor.dtype} {list(tensor.shape)}, expected float32 "
                               f"[1, {resolution}, {resolution}, {channels}]")


def to_fp16(fp32: Path, out: Path, metadata: dict) -> dict:
    """Write ``out``: ``fp32`` with float16 weights (DEQUANTIZE to float32 in front of each weighted op)."""
    try:
        from ai_edge_quantizer import algorithm_manager, quantizer
        from ai_edge_quantizer.qtyping import TFLOperationName
    except ImportError as e:
        raise EdgekitError(f"fp16 export needs ai-edge-quantizer ({e}); `pip install ai-edge-quantizer`") from None
    try:
        with captured_output():
            q = quantizer.Quantizer(str(fp32))
            q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                     algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
            flat = bytes(q.quantize().quantized_model)
    except Exception as e:
        raise EdgekitError(f"fp16 conversion failed: {one_line(e)}") from None
    flat = embed_metadata(flat, metadata)
    graph = TFLiteModel(flat, str(out))
    if not any(t.dtype == "FLOAT16" for t in graph.tensors):
        raise EdgekitError("the fp16 file holds no float16 weights; ai-edge-quantizer skipped every op")
    out.write_bytes(flat)
    return {"converter": f"{CONVERTER} + ai-edge-quantizer float casting",
            "operators": dict(sorted(graph.op_counts.items()))}


def operator_counts(path: Path) -> dict[str, int]:
    return dict(sorted(TFLiteModel.from_file(path).op_counts.items()))


def read_metadata(path: Path) -> dict:
    raw = TFLiteModel.from_file(path).metadata.get(METADATA_NAME)
    return json.loads(raw) if raw else {}


def embed_metadata(flat: bytes, metadata: dict) -> bytes:
    """Return ``flat`` with the ``edgekit`` metadata entry set to ``metadata`` as JSON, and the input and
    output named ``image`` and ``logits`` (tensors and signature), so every format reads the same."""
    tfl = schema()
    model = unpack_model(flat)
    payload = np.frombuffer(json.dumps(metadata, separators=(",", ":")).encode("utf-8"), dtype=np.uint8)
    model.metadata = model.metadata or []
    entry = next((m for m in model.metadata if _text(m.name) == METADATA_NAME), None)
    if entry is None:
        buffer = tfl.BufferT()
        model.buffers.append(buffer)
        entry = tfl.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata.append(entry)
    model.buffers[entry.buffer].data = payload
    _rename_io(model, metadata)
    # the standard TFLite Metadata (normalisation, labels) that Android Studio and MediaPipe read without code
    associated = set_standard_metadata(model, ModelFacts.from_edgekit(metadata))
    return append_associated_files(pack_model(model), associated)


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else (value or "")


def _rename_io(model, metadata: dict | None = None) -> None:
    subgraph = model.subgraphs[0]
    several = (metadata or {}).get("io")
    if several:
        _name_several(model, several["inputs"], several["outputs"])
        return
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        return  # not a one-image classifier: keep the converter's names
    subgraph.tensors[subgraph.inputs[0]].name = INPUT_NAME
    subgraph.tensors[subgraph.outputs[0]].name = OUTPUT_NAME
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0 and len(signature.inputs) == 1 and len(signature.outputs) == 1:
            signature.inputs[0].name = INPUT_NAME
            signature.outputs[0].name = OUTPUT_NAME


def _name_several(model, inputs: list[str], outputs: list[str]) -> None:
    """A model of several inputs or outputs: its tensors and signature entries get the names the manifest records,
    and the subgraph lists them in forward()'s order, so a runtime's input K is forward()'s argument K. The
    signature says which tensor is which: litert-torch names them ``args_K`` and ``output_K``; a file renamed
    before (the int8 file, quantized from the fp32 one) carries the recorded names already."""
    subgraph = model.subgraphs[0]
    signature = next((s for s in model.signatureDefs or [] if s.subgraphIndex == 0), None)
    if signature is None:
        return
    for entries, names, generated, edges in ((signature.inputs, inputs, "args_", "inputs"),
                                             (signature.outputs, outputs, "output_", "outputs")):
        order = {}
        for entry in entries or []:
            text = _text(entry.name)
            k = names.index(text) if text in names else \
                int(text[len(generated):]) if text.startswith(generated) and text[len(generated):].isdigit() else None
            if k is None or k >= len(names):
                return  # not a signature edgekit wrote: keep the converter's names
            order[k] = entry
        if sorted(order) != list(range(len(names))) or \
                sorted(int(i) for i in getattr(subgraph, edges)) != sorted(e.tensorIndex for e in order.values()):
            return  # the signature and the subgraph disagree: renaming could mislabel a tensor
        for k, entry in order.items():
            entry.name = names[k]
            subgraph.tensors[entry.tensorIndex].name = names[k]
        setattr(subgraph, edges, np.array([order[k].tensorIndex for k in range(len(names))], dtype=np.int32))


class TFLiteBackend(FormatBackend):
    """TFLite: litert-torch for fp32, ai-edge-quantizer's float casting for fp16 and its static int8 recipe for
    int8; the integer proof is read back from each int8 flatbuffer."""

    format = get_format("tflite")
    calibration_methods = (tflite_int8.CALIBRATION_METHOD,)
    calibration_note = "ai-edge-quantizer sets static ranges from min/max only"
    io_dtypes = IO_DTYPES
    layer_comparison = True

    def export_fp32(self, model, out: Path, *, spec, resolution: int, metadata: dict) -> dict:
        return torch_to_tflite(model, out, resolution=resolution, metadata=metadata)

    def export_fp16(self, fp32: Path, out: Path, metadata: dict) -> dict:
        return to_fp16(fp32, out, metadata)

    def quantize_int8(self, model, fp32: Path, out: Path, *, calibration, spec, metadata: dict) -> dict:
        flat = tflite_int8.quantized_tflite(fp32, calibration, io_dtype=spec.io_dtype, source=str(out))
        flat = embed_metadata(flat, metadata)  # edgekit's entry and the image/logits names, before the one write
        graph = TFLiteModel(flat, str(out))
        atomic_write_bytes(out, flat)
        # the proof, read back from the finished file's flatbuffer: op types and tensor dtypes
        record = json.loads(graph.metadata.get(tflite_int8.QUANTIZATION_METADATA) or b"{}")
        return {"calibration_method": tflite_int8.CALIBRATION_METHOD, "io_dtype": spec.io_dtype,
                "weights": "int8 per-channel", "activations": "int8", "calibration_note": self.calibration_note,
                "weights_on_source_grid": record.get("weights_on_source_grid"),
                "operators": dict(sorted(graph.op_counts.items())), "integer": integer_report(graph)}

    def read_metadata(self, path: Path) -> dict:
        return read_metadata(path)

    def operator_counts(self, path: Path) -> dict[str, int]:
        return operator_counts(path)

    def census(self, path: Path) -> dict | None:
        return integer_report(path)


BACKEND = TFLiteBackend()
