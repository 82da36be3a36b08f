"""Reading a .tflite flatbuffer without running it: operators, tensors, quantization, weights, metadata.

Used to import weights, to prove an int8 file is fully integer (``integer_report``, the census), to count stray TRANSPOSE ops and to read
edgekit's embedded metadata. Built on the schema module that ships with ai-edge-litert.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import EdgekitError

# Ops that must compute on int8 tensors with int8 weights in a file called fully integer.
REQUIRED_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD")
# Constant operands that are integers by nature, not quantized values: biases, shapes, axes, paddings.
EDGEKIT_METADATA = "edgekit"  # the metadata entry every edgekit export embeds: JSON (exporters/tflite.py)
_INDEX_DTYPES = ("INT32", "INT64")
_FLOAT_DTYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")

_NUMPY_DTYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8, "INT64": np.int64,
    "BOOL": np.bool_, "INT16": np.int16, "INT8": np.int8, "FLOAT64": np.float64, "UINT64": np.uint64,
    "UINT32": np.uint32, "UINT16": np.uint16,
}


def schema():
    """The TFLite flatbuffer schema module shipped with ai-edge-litert (imported on first use)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def unpack_model(flat: bytes):
    """``flat`` as an editable ``ModelT``, with weights stored after the flatbuffer (ai-edge-quantizer's layout)
    brought inline: ``pack_model`` writes one plain flatbuffer, which the format limits to 2 GB."""
    model = schema().ModelT.InitFromPackedBuf(bytearray(flat), 0)
    for buffer in model.buffers:
        if (buffer.offset or 0) > 1:
            buffer.data = np.frombuffer(flat, dtype=np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0
    if sum(len(b.data) for b in model.buffers if b.data is not None) >= (1 << 31) - (1 << 24):
        raise EdgekitError("the TFLite model's weights exceed 2 GB; edgekit cannot rewrite it")
    return model


def pack_model(model) -> bytes:
    """Serialise a ``ModelT`` with each buffer 16-byte aligned, as the TFLite converter does, so runtimes that
    map the file can read weights in place."""
    import flatbuffers

    tfl = schema()

    class AlignedBufferT(tfl.BufferT):
        def Pack(self, builder):
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            tfl.BufferStart(builder)
            if data is not None:
                tfl.BufferAddData(builder, data)
            tfl.BufferAddOffset(builder, self.offset or 0)
            tfl.BufferAddSize(builder, self.size or 0)
            return tfl.BufferEnd(builder)

    for buffer in model.buffers:
        buffer.__class__ = AlignedBufferT
    size = sum(len(b.data) for b in model.buffers if b.data is not None)
    builder = flatbuffers.Builder(size + (1 << 20))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class Quantization:
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int  # quantized dimension for per-channel parameters

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # schema name: FLOAT32, INT8, UINT8, INT32...
    quantization: Quantization | None
    data: np.ndarray | None  # constant contents (weights, biases), None for activations

    def dequantized(self) -> np.ndarray:
        """The constant's real values: scale * (q - zero_point), per channel along ``quantization.axis``."""
        if self.data is None:
            raise ValueError(f"tensor {self.name} is not a constant")
        if self.quantization is None or self.dtype.startswith("FLOAT"):
            return self.data.astype(np.float32)
        q = self.quantization
        shape = [1] * self.data.ndim
        if q.per_channel:
            shape[q.axis] = -1
        scale = q.scale.reshape(shape).astype(np.float64)
        zero = q.zero_point.reshape(shape).astype(np.float64) if q.zero_point.size else 0.0
        return ((self.data.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class Operator:
    index: int
    opcode: str  # CONV_2D, DEPTHWISE_CONV_2D, ... (CUSTOM:<name> for custom ops)
    inputs: list[int]
    outputs: list[int]
    options: object = field(repr=False, default=None)  # the schema's *OptionsT object (stride, padding...)


def _buffer_bytes(buffer, file_bytes: bytes, source: str) -> bytes | None:
    """A buffer's contents: inline in the flatbuffer, or stored after it at ``offset`` (how ai-edge-quantizer
    and models over 2 GB write weights); offset 0 and 1 both mean "no external data"."""
    if buffer.data is not None and len(buffer.data):
        return bytes(bytearray(buffer.data))
    if buffer.offset > 1 and buffer.size:
        if buffer.offset + buffer.size > len(file_bytes):
            raise EdgekitError(f"{source} is truncated: a weight buffer ends at byte {buffer.offset + buffer.size} "
                               f"of {len(file_bytes)}; export the file again")
        return bytes(file_bytes[buffer.offset:buffer.offset + buffer.size])
    return None


class TFLiteModel:
    """The first subgraph of a .tflite file, with tensors and operators in execution order."""

    def __init__(self, buffer: bytes, source: str = "<bytes>"):
        tfl = schema()
        self.source = source
        if len(buffer) < 8 or buffer[4:8] != b"TFL3":
            raise EdgekitError(f"{source} is not a TFLite model (no TFL3 identifier); the file is truncated or "
                               "of another format")
        try:
            model = tfl.ModelT.InitFromPackedBuf(bytearray(buffer), 0)
            subgraph = model.subgraphs[0]
            buffers = model.buffers
            op_names = _enum_names(tfl.BuiltinOperator)
            type_names = _enum_names(tfl.TensorType)
            contents = [_buffer_bytes(b, buffer, source) for b in buffers]
            self.tensors = [self._tensor(i, t, contents, type_names) for i, t in enumerate(subgraph.tensors)]
            self.operators = []
            for i, op in enumerate(subgraph.operators or []):
                code = model.operatorCodes[op.opcodeIndex]
                builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
                name = op_names.get(builtin, str(builtin))
                if name == "CUSTOM":
                    name = f"CUSTOM:{(code.customCode or b'').decode(errors='replace')}"
                self.operators.append(Operator(i, name, [int(x) for x in op.inputs],
                                               [int(x) for x in op.outputs], op.builtinOptions))
            self.inputs = [int(i) for i in subgraph.inputs]
            self.outputs = [int(i) for i in subgraph.outputs]
            self.metadata = {
                (m.name.decode() if isinstance(m.name, bytes) else m.name): contents[m.buffer] or b""
                for m in (model.metadata or [])
            }
            self.description = (model.description or b"").decode(errors="replace") if isinstance(
                model.description, bytes) else (model.description or "")
        except EdgekitError:
            raise
        except Exception as e:  # a damaged flatbuffer fails anywhere inside the generated code
            raise EdgekitError(f"{source} is not a readable TFLite model ({type(e).__name__}); the file is "
                               "corrupt or truncated") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "TFLiteModel":
        path = Path(path)
        if not path.is_file():
            raise EdgekitError(f"model file {path} does not exist; check the path")
        return cls(path.read_bytes(), str(path))

    @staticmethod
    def _tensor(index, t, contents: list[bytes | None], type_names) -> Tensor:
        dtype = type_names.get(t.type, str(t.type))
        shape = tuple(int(s) for s in t.shape) if t.shape is not None else ()
        quant = None
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale):
            quant = Quantization(np.asarray(q.scale, dtype=np.float32),
                                 np.asarray(q.zeroPoint if q.zeroPoint is not None else [], dtype=np.int64),
                                 int(q.quantizedDimension))
        data = None
        raw = contents[t.buffer] if t.buffer < len(contents) else None
        if raw and dtype in _NUMPY_DTYPES:
            data = np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype]).reshape(shape)
        name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else (t.name or "")
        return Tensor(index, name, shape, dtype, quant, data)

    @cached_property
    def op_counts(self) -> Counter:
        return Counter(op.opcode for op in self.operators)

    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]


def integer_report(model: TFLiteModel | str | Path) -> dict:
    """What the flatbuffer says about integer execution: op types, the dtype each op computes in, float ops,
    QUANTIZE/DEQUANTIZE pairs inside the graph (float islands), and the input/output quantization.

    ``fully_integer`` is true when every op except the edge conversions reads and writes only int8 tensors
    (plus int32 biases and index operands), and each of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD
    uses int8 weights and activations.
    """
    if not isinstance(model, TFLiteModel):
        model = TFLiteModel.from_file(model)
    tensors = model.tensors
    graph_inputs, graph_outputs = set(model.inputs), set(model.outputs)
    problems: list[str] = []
    float_ops: list[dict] = []
    edge_ops: list[dict] = []
    compute_dtypes: dict[str, set[str]] = {}
    for op in model.operators:
        ins = [tensors[i] for i in op.inputs if i >= 0]
        outs = [tensors[i] for i in op.outputs]
        if op.opcode in ("QUANTIZE", "DEQUANTIZE"):
            source, target = ins[0], outs[0]
            at_edge = source.index in graph_inputs or target.index in graph_outputs
            requantize = source.dtype == target.dtype == "INT8"
            if op.opcode == "QUANTIZE" and requantize:
                compute_dtypes.setdefault(op.opcode, set()).add("INT8")
                continue
            entry = {"index": op.index, "opcode": op.opcode, "from": source.dtype, "to": target.dtype,
                     "tensor": target.name if op.opcode == "QUANTIZE" else source.name}
            if at_edge:
                edge_ops.append(entry)
            else:
                float_ops.append(entry | {"reason": "conversion inside the graph (float island)"})
                problems.append(f"{op.opcode} #{op.index} {source.dtype}->{target.dtype} inside the graph")
            continue
        activations = [t for t in ins if t.data is None] + outs
        constants = [t for t in ins if t.data is not None]
        floats = [t for t in ins + outs if t.dtype in _FLOAT_DTYPES]
        act_dtypes = {t.dtype for t in activations}
        compute_dtypes.setdefault(op.opcode, set()).update(act_dtypes)
        if floats:
            float_ops.append({"index": op.index, "opcode": op.opcode, "reason": "float tensors",
                              "tensors": [f"{t.name[-60:]} {t.dtype}" for t in floats[:4]]})
            problems.append(f"{op.opcode} #{op.index} computes in {floats[0].dtype}")
            continue
        if op.opcode in REQUIRED_INT8_OPS:
            weights = [t for t in constants if t.dtype not in _INDEX_DTYPES]
            if act_dtypes != {"INT8"} or any(t.dtype != "INT8" for t in weights):
                problems.append(f"{op.opcode} #{op.index} uses {sorted(act_dtypes | {t.dtype for t in weights})}, "
                                "not int8")
    counts = dict(model.op_counts)
    required = {name: counts.get(name, 0) for name in REQUIRED_INT8_OPS}

    def io_entry(index: int) -> dict:
        t = tensors[index]
        q = t.quantization
        return {"name": t.name, "dtype": t.dtype.lower(), "shape": list(t.shape),
                "scale": float(q.scale[0]) if q is not None and t.dtype not in _FLOAT_DTYPES else None,
                "zero_point": int(q.zero_point[0]) if q is not None and q.zero_point.size
                and t.dtype not in _FLOAT_DTYPES else None}

    return {
        "fully_integer": not problems,
        "operators": len(model.operators),
        "op_counts": counts,
        "required_int8_ops": required,
        "compute_dtypes": {k: sorted(v) for k, v in compute_dtypes.items()},
        "float_ops": float_ops,
        "edge_conversions": edge_ops,
        "inputs": [io_entry(i) for i in model.inputs],
        "outputs": [io_entry(i) for i in model.outputs],
        "problems": problems,
    }
