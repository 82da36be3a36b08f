"""Where does an int8 file lose accuracy? Each layer's output compared with the fp32 file's, on real images.

Both files run on the same inputs and every activation the int8 file quantizes is read back and compared with
the fp32 tensor of the same name: SQNR (signal-to-quantization-noise ratio, dB) and cosine; for the output
also PSNR, parity's measure of a file's logits, so that inspect's summary reads against parity's table. A layer's
*loss* is how many dB it takes off: the SQNR of its inputs minus the SQNR of its output. Errors add up along
the network, so the lowest SQNR is usually near the end; the largest loss points at the layer to fix
(keep it in float, calibrate it differently, or change the activation).

- ONNX (QDQ): an activation X of the fp32 graph appears in the int8 graph as X -> QuantizeLinear ->
  DequantizeLinear; the DequantizeLinear output is X as the int8 model sees it. Both are exposed as extra
  graph outputs, which keeps ONNX Runtime from fusing those nodes into integer kernels: the int8 side is then
  the QDQ graph's reference semantics, within one quantization step of the fused run.
- TFLite: both interpreters keep every intermediate tensor (``experimental_preserve_all_tensors``, built-in
  kernels, no XNNPACK); int8 tensors are dequantized with their own scale and zero point. ai-edge-quantizer
  keeps the fp32 tensor names, which is what matches them.

Names are turned back into PyTorch module paths (``features.3.conv.1.2``) where the exporter recorded them,
so a row points at the model's code. Imports numpy and the runtimes only (no torch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgekitError
from .runtimes import check_input_count, quantize


@dataclass
class LayerError:
    """One compared activation."""

    index: int  # position in the fp32 graph's execution order
    layer: str  # PyTorch module path when the exporter kept it, else the tensor name
    op: str  # op type that produced the tensor in the fp32 graph
    tensor: str
    shape: tuple[int, ...]
    sqnr_db: float
    cosine: float
    loss_db: float | None  # SQNR of this layer's inputs minus its own (None: no compared input)
    # parity's PSNR (peak of the reference over the RMS error); None in reports written before it was kept
    psnr_db: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for key in ("sqnr_db", "loss_db", "psnr_db"):
            if d[key] is not None and math.isinf(d[key]):
                d[key] = "inf" if d[key] > 0 else "-inf"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerError":
        return cls(int(d["index"]), d["layer"], d["op"], d["tensor"], tuple(d["shape"]), float(d["sqnr_db"]),
                   float(d["cosine"]), None if d.get("loss_db") is None else float(d["loss_db"]),
                   None if d.get("psnr_db") is None else float(d["psnr_db"]))


@dataclass
class LayerReport:
    artifact: str
    reference: str
    format: str
    samples: int
    layers: list[LayerError] = field(default_factory=list)

    def worst(self, count: int = 10) -> list[LayerError]:
        """The layers that lose most, largest loss first."""
        ranked = [e for e in self.layers if e.loss_db is not None and math.isfinite(e.loss_db)]
        return sorted(ranked, key=lambda e: -e.loss_db)[:count]

    @property
    def output(self) -> LayerError | None:
        return self.layers[-1] if self.layers else None

    def to_dict(self, worst: int = 10) -> dict:
        return {"artifact": self.artifact, "reference": self.reference, "format": self.format,
                "samples": self.samples, "layers_compared": len(self.layers),
                "output_sqnr_db": self.output.to_dict()["sqnr_db"] if self.output else None,
                "output_psnr_db": self.output.to_dict()["psnr_db"] if self.output else None,
                "worst": [e.to_dict() for e in self.worst(worst)],
                "layers": [e.to_dict() for e in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerReport":
        """The report back from ``to_dict`` (a bundle's manifest keeps every layer)."""
        return cls(d["artifact"], d["reference"], d["format"], int(d["samples"]),
                   [LayerError.from_dict(e) for e in d.get("layers", [])])


class _Accumulator:
    """Running sums for SQNR and PSNR over all samples and the mean of per-sample cosines."""

    def __init__(self):
        self.signal = self.noise = self.peak = 0.0
        self.count = 0
        self.cosines: list[float] = []

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        # float32 BLAS dot products: ~10x faster than float64 copies, and a 1e-5 relative error in a sum of
        # squares is far below what a dB figure shows
        ref = np.ascontiguousarray(ref, dtype=np.float32).ravel()
        out = np.ascontiguousarray(out, dtype=np.float32).ravel()
        diff = ref - out
        ref_energy, out_energy = float(ref @ ref), float(out @ out)
        self.signal += ref_energy
        self.noise += float(diff @ diff)
        self.peak = max(self.peak, float(np.abs(ref).max(initial=0.0)))
        self.count += ref.size
        norms = math.sqrt(ref_energy * out_energy)
        self.cosines.append(float(ref @ out) / norms if norms > 0 else (1.0 if not diff.any() else 0.0))

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    @property
    def psnr_db(self) -> float:
        """As parity computes it (``edgekit.parity.compare``): 20 log10(max|reference| / RMS error)."""
        if self.noise == 0.0:
            return math.inf
        if self.peak == 0.0:
            return -math.inf
        return 20.0 * math.log10(self.peak / math.sqrt(self.noise / self.count))

    @property
    def cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else float("nan")


def module_path(name: str) -> str | None:
    """``/features/features.3/conv/conv.1/conv.1.2/Clip`` (torch.onnx) or litert-torch's
    ``...Wrapper/...MobileNetV2_wrapped/...Sequential_features/...InvertedResidual_3/...`` -> ``features.3.conv.1.2``;
    None when the name records no module path."""
    segments = [s for s in name.split(";") if "/" in s]
    if not segments:
        return None
    if any("." in p and "_" in p.rsplit(".", 1)[-1] for p in segments[0].split("/")[:2]):
        # litert-torch: module.Class_attribute per level; a fused op lists activation;;batchnorm;;conv and
        # the folded batch norm is the least useful of the three to point at
        chosen = next((s for s in segments if "BatchNorm" not in s.rsplit("/", 1)[-1]), segments[0])
        attrs = []
        for part in chosen.split("/"):
            leaf = part.rsplit(".", 1)[-1]
            if leaf.endswith("_wrapped") or "Wrapper" in leaf or "_" not in leaf:
                continue
            attrs.append(leaf.split("_", 1)[1])
        return ".".join(attrs) or None
    # torch.onnx scopes: each level repeats its parent's name as a prefix; the last part is the op type
    parts = [p for p in segments[0].split("/") if p]
    attrs, previous = [], ""
    for part in parts[:-1]:
        attrs.append(part[len(previous) + 1:] if previous and part.startswith(previous + ".") else part)
        previous = part
    return ".".join(attrs) or None


def _loss(tensor: str, producers: dict[str, list[str]], sqnr: dict[str, float]) -> float | None:
    """SQNR of the nearest compared tensors feeding ``tensor`` (the worst of them) minus ``tensor``'s own."""
    seen: set[str] = set()
    stack = list(producers.get(tensor, []))
    upstream: list[float] = []
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in sqnr:
            upstream.append(sqnr[name])
        else:
            stack.extend(producers.get(name, []))
    if not upstream:
        return None
    before = min(upstream)
    if math.isinf(before) and math.isinf(sqnr[tensor]):
        return 0.0
    return before - sqnr[tensor]


def compare_layers(int8_path: str | Path, fp32_path: str | Path,
                   inputs_nchw: np.ndarray | list[np.ndarray]) -> LayerReport:
    """Per-layer SQNR and cosine of ``int8_path`` against ``fp32_path`` (same format) on ``inputs_nchw``: one
    array, or for a model of several inputs a list of them, one per input in the file's order (forward()'s)."""
    int8_path, fp32_path = Path(int8_path), Path(fp32_path)
    inputs = [inputs_nchw] if isinstance(inputs_nchw, np.ndarray) else list(inputs_nchw)
    for path in (int8_path, fp32_path):
        if not path.is_file():
            raise EdgekitError(f"model file {path} does not exist; check the path")
    if int8_path.suffix.lower() != fp32_path.suffix.lower():
        raise EdgekitError(f"{int8_path.name} and {fp32_path.name} are different formats; compare an int8 file "
                           "with the fp32 file it was made from")
    if not inputs or len(inputs[0]) == 0:
        raise EdgekitError("no input images to compare layers on")
    if len({len(x) for x in inputs}) != 1:
        raise EdgekitError(f"the model's {len(inputs)} inputs got different numbers of pictures "
                           f"({', '.join(str(len(x)) for x in inputs)}); give each input as many")
    suffix = int8_path.suffix.lower()
    if suffix == ".onnx":
        return _compare_onnx(int8_path, fp32_path, inputs)
    if suffix == ".tflite":
        return _compare_tflite(int8_path, fp32_path, inputs)
    raise EdgekitError(f"unsupported model file {int8_path.name}: layer comparison reads .onnx and .tflite files")


def _report(int8_path: Path, fp32_path: Path, fmt: str, samples: int, order: list[tuple[str, str, str]],
            shapes: dict[str, tuple], stats: dict[str, _Accumulator],
            producers: dict[str, list[str]]) -> LayerReport:
    sqnr = {name: acc.sqnr_db for name, acc in stats.items()}
    report = LayerReport(str(int8_path), str(fp32_path), fmt, samples)
    for index, (tensor, op, label) in enumerate(order):
        if tensor not in stats:
            continue
        path = module_path(label)
        layer = label if op == "input" else path or (tensor if len(tensor) <= 48 else f"{op.lower()} #{index}")
        report.layers.append(LayerError(index, layer, op, tensor, tuple(shapes.get(tensor, ())),
                                        sqnr[tensor], stats[tensor].cosine, _loss(tensor, producers, sqnr),
                                        stats[tensor].psnr_db))
    if not report.layers:
        raise EdgekitError(f"no activation of {int8_path.name} matches a tensor of {fp32_path.name}; was the int8 "
                           "file made from this fp32 file?")
    return report


_PER_INPUT = "give one array of pictures per model input, in forward()'s order"


# ------------------------------------------------------------------------------------------------- ONNX
def _input_labels(names: list[str]) -> list[str]:
    """The rows of the model's inputs: "input", or "input NAME" for each of several."""
    return ["input"] if len(names) == 1 else [f"input {name}" for name in names]


def _fed_inputs(model) -> list[str]:
    """The graph inputs a run feeds: a graph may list its weights among its inputs too."""
    weights = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in weights]


def _compare_onnx(int8_path: Path, fp32_path: Path, inputs: list[np.ndarray]) -> LayerReport:
    import onnx

    fp32 = onnx.load(str(fp32_path))
    int8 = onnx.load(str(int8_path))
    produced_by = {out: node for node in fp32.graph.node for out in node.output}
    graph_inputs = _fed_inputs(fp32)
    for path, model in ((fp32_path, fp32), (int8_path, int8)):
        check_input_count(path, len(inputs), len(_fed_inputs(model)), _PER_INPUT)
    int8_nodes = {out: node for node in int8.graph.node for out in node.output}
    # X -> QuantizeLinear -> DequantizeLinear: map X to the DequantizeLinear output
    dequantized: dict[str, str] = {}
    for node in int8.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = int8_nodes.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            source = q.input[0]
            if source in produced_by or source in graph_inputs:
                dequantized.setdefault(source, node.output[0])
            elif node.output[0] in produced_by:  # a graph output keeps its name on the DequantizeLinear side
                dequantized.setdefault(node.output[0], node.output[0])
    if not dequantized:
        raise EdgekitError(f"{int8_path.name} has no QuantizeLinear/DequantizeLinear pairs on activations; "
                           "it is not a static QDQ int8 model")
    names = list(dequantized)
    ref_outputs = _run_onnx_with_outputs(fp32, names, inputs)
    out_outputs = _run_onnx_with_outputs(int8, [dequantized[n] for n in names], inputs)
    stats = {n: _Accumulator() for n in names}
    shapes: dict[str, tuple] = {}
    for ref_batch, out_batch in zip(ref_outputs, out_outputs):
        for name, ref, out in zip(names, ref_batch, out_batch):
            shapes[name] = tuple(ref.shape[1:])
            for r, o in zip(ref, out):  # per image
                stats[name].add(r, o)
    order = [(name, "input", label) for name, label in zip(graph_inputs, _input_labels(graph_inputs))]
    order += [(out, node.op_type, node.name or out) for node in fp32.graph.node for out in node.output]
    producers = {out: [i for i in node.input if i in produced_by or i in graph_inputs]
                 for node in fp32.graph.node for out in node.output}
    return _report(int8_path, fp32_path, "onnx", len(inputs[0]), order, shapes, stats, producers)


def _run_onnx_with_outputs(model, names: list[str], inputs: list[np.ndarray], batch: int = 4):
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]
    fixed = isinstance(session.get_inputs()[0].shape[0], int)
    step = 1 if fixed else batch
    for start in range(0, len(inputs[0]), step):
        yield session.run(names, {feed: x[start:start + step].astype(np.float32) for feed, x in zip(feeds, inputs)})


# ----------------------------------------------------------------------------------------------- TFLite
def _compare_tflite(int8_path: Path, fp32_path: Path, inputs: list[np.ndarray]) -> LayerReport:
    from .tflite_model import TFLiteModel

    fp32 = TFLiteModel.from_file(fp32_path)
    int8 = TFLiteModel.from_file(int8_path)
    for path, model in ((fp32_path, fp32), (int8_path, int8)):
        check_input_count(path, len(inputs), len(model.inputs), _PER_INPUT)
    fp32_by_name = {t.name: t for t in fp32.tensors if t.data is None}
    matched = [t for t in int8.tensors
               if t.data is None and t.dtype in ("INT8", "UINT8", "INT16") and t.quantization is not None
               and t.name in fp32_by_name and fp32_by_name[t.name].shape == t.shape]
    if not matched:
        raise EdgekitError(f"no int8 activation of {int8_path.name} has a namesake in {fp32_path.name}; was it "
                           "quantized from this file?")
    ref_run, out_run = _PreservingInterpreter(fp32_path), _PreservingInterpreter(int8_path)
    stats = {t.name: _Accumulator() for t in matched}
    pictures = [np.moveaxis(x, 1, -1) for x in inputs]  # NHWC, as the files take them
    for k in range(len(pictures[0])):  # TFLite files are exported with batch 1
        ref_run.invoke([x[k][None] for x in pictures])
        out_run.invoke([x[k][None] for x in pictures])
        for t in matched:
            reference = ref_run.tensor(fp32_by_name[t.name].index)
            q = t.quantization
            shape = [1] * len(t.shape)
            if q.per_channel:
                shape[q.axis] = -1
            values = (out_run.tensor(t.index).astype(np.float64) - q.zero_point.reshape(shape)) \
                * q.scale.reshape(shape).astype(np.float64)
            stats[t.name].add(reference, values)
    input_names = [fp32.tensors[i].name for i in fp32.inputs]
    order = [(name, "input", label) for name, label in zip(input_names, _input_labels(input_names))]
    order += [(fp32.tensors[o].name, op.opcode, fp32.tensors[o].name) for op in fp32.operators for o in op.outputs]
    activations = {t.name for t in fp32.tensors if t.data is None}
    producers = {fp32.tensors[o].name: [fp32.tensors[i].name for i in op.inputs
                                         if i >= 0 and fp32.tensors[i].name in activations]
                 for op in fp32.operators for o in op.outputs}
    shapes = {t.name: t.shape for t in matched}
    return _report(int8_path, fp32_path, "tflite", len(inputs[0]), order, shapes, stats, producers)


class _PreservingInterpreter:
    """A LiteRT interpreter that keeps every intermediate tensor readable after ``invoke``."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # XNNPACK fuses ops and never materialises their outputs: the built-in kernels keep all of them
        self.interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()

    def invoke(self, xs_nhwc: list[np.ndarray]) -> None:
        """One picture per input, in the file's input order."""
        for x_nhwc, detail in zip(xs_nhwc, self.inputs):
            dtype = np.dtype(detail["dtype"])
            scale, zero_point = detail["quantization"]
            if dtype.kind in "iu" and scale:
                x_nhwc = quantize(x_nhwc, scale, zero_point, dtype)
            self.interpreter.set_tensor(detail["index"], x_nhwc.astype(dtype))
        self.interpreter.invoke()

    def tensor(self, index: int) -> np.ndarray:
        return self.interpreter.get_tensor(index)


# ------------------------------------------------------------------------------------------------ tables
LAYER_HEADERS = ("#", "layer", "op", "shape", "SQNR dB", "cosine mean", "loss dB")  # names as parity's


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) and value > 0 else f"{value:.1f}"


def layer_rows(layers: list[LayerError]) -> list[list[str]]:
    """Rows for ``format_table``/``markdown_table`` under ``LAYER_HEADERS`` (report.md and `edgekit inspect`)."""
    return [[str(e.index), e.layer, e.op, "x".join(map(str, e.shape)), _db(e.sqnr_db), f"{e.cosine:.4f}",
             _db(e.loss_db)] for e in layers]


def summary(report: LayerReport) -> str:
    """One line: which file, against what, on how many images, and how close its output is. The output's PSNR
    comes first: it is the figure parity gates on (a file's logits against the peak logit), while SQNR, the
    per-layer measure, reads lower on the same tensor (docs/quality-measures.md)."""
    out = report.output
    if out is None:
        tail = "no output compared"
    elif out.psnr_db is None:
        tail = f"output SQNR {_db(out.sqnr_db)} dB, cosine mean {out.cosine:.4f}"
    else:
        tail = (f"output PSNR {_db(out.psnr_db)} dB (parity's measure; SQNR {_db(out.sqnr_db)} dB), "
                f"cosine mean {out.cosine:.4f}")
    return (f"{Path(report.artifact).name} vs {Path(report.reference).name}: {len(report.layers)} activations "
            f"compared on {report.samples} images; {tail}")
