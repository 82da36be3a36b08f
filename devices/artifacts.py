"""What ``edgekit bench`` measures: the artifacts of an exported bundle, or any .tflite / .onnx file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.console import warn
from edgekit.errors import EdgekitError
from edgekit.formats import FORMATS as REGISTERED_FORMATS
from edgekit.formats import suffix_list

FORMATS = {f.suffix: f.name for f in REGISTERED_FORMATS.values()}
RUNTIME_FORMATS = {f.runtime: f.name for f in REGISTERED_FORMATS.values()}
_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


@dataclass(frozen=True)
class ModelFile:
    path: Path
    label: str  # as the table shows it: the path inside the bundle, or the file name
    format: str  # "tflite" | "onnx"
    precision: str  # fp32 | fp16 | int8 | uint8 | int8-weights (dynamic range) | mixed
    bytes: int
    external_data: bool = False  # ONNX weights in side files: only the local device can load those


def _tflite_precision(path: Path) -> str:
    from edgekit.tflite_model import TFLiteModel

    model = TFLiteModel.from_file(path)
    kinds = set()
    for op in model.operators:
        if op.opcode not in _COMPUTE_OPS or len(op.inputs) < 2:
            continue
        activation, weights = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
        if activation.dtype in ("INT8", "UINT8", "INT16"):
            kinds.add(activation.dtype.lower() if activation.dtype != "INT16" else "int16x8")
        elif weights.dtype in ("INT8", "UINT8", "INT4"):
            kinds.add("int8-weights")
        else:
            kinds.add("float")
    if len(kinds) > 1:
        return "mixed"
    kind = kinds.pop() if kinds else "float"
    if kind != "float":
        return kind
    # fp16 files keep FLOAT16 constants and DEQUANTIZE them at load time.
    return "fp16" if any(t.dtype == "FLOAT16" and t.data is not None for t in model.tensors) else "fp32"


def _onnx_precision(path: Path) -> tuple[str, bool]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise EdgekitError(f"{path} is not a readable ONNX model ({type(e).__name__}); the file is corrupt or "
                           "of another format") from None
    graph = model.graph
    ops = {n.op_type for n in graph.node}
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    if "DynamicQuantizeLinear" in ops or ops & {"ConvInteger", "MatMulInteger"}:
        return "int8-dynamic", external
    if ops & {"QuantizeLinear", "QLinearConv", "QLinearMatMul"}:
        return "int8", external
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        return "fp16", external
    return "fp32", external


def _pte_precision(path: Path) -> str:
    """What edgekit's metadata in the program says; a .pte edgekit did not write counts as fp32."""
    from edgekit.exporters.pte import read_metadata

    try:
        return read_metadata(path).get("precision", "fp32")
    except Exception:  # noqa: BLE001 - a program without readable metadata is timed all the same
        return "fp32"


def model_file(path: Path, label: str | None = None, precision: str | None = None) -> ModelFile:
    """A single model file; precision read from the file unless a manifest states it."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EdgekitError(f"cannot benchmark {path.name}: edgekit bench takes a bundle folder or a "
                           f"{suffix_list()} file")
    if not path.is_file():
        raise EdgekitError(f"model file {path} does not exist; check the path")
    external = False
    if fmt == "onnx":
        detected, external = _onnx_precision(path)
    elif fmt == "pte":
        detected = precision or _pte_precision(path)
    else:
        detected = precision or _tflite_precision(path)
    return ModelFile(path, label or path.name, fmt, precision or detected, path.stat().st_size, external)


def _from_bundle(bundle: Path, label_prefix: str = "", only: str | None = None) -> list[ModelFile]:
    """The artifacts a bundle's manifest lists, each checked against its recorded size and sha256; ``only`` (a
    format) keeps that format's files, and a file of another format that is missing or altered is not held
    against the bundle (what a project that ships one format has)."""
    from edgekit.manifest import Manifest, integrity_problems

    manifest = Manifest.read(bundle)
    if manifest.status != "complete":
        raise EdgekitError(f"{bundle}: its export failed at step {manifest.failed_step or '?'}; export it again "
                           "before benchmarking")
    if not manifest.artifacts:
        raise EdgekitError(f"{bundle}/manifest.json lists no model files; export the bundle again")
    problems = integrity_problems(bundle, manifest)
    artifacts = manifest.artifacts
    if only:
        left_out = {a.path for a in artifacts if a.format != only}
        problems = [p for p in problems if not any(p.startswith((f"{path}: sha256 mismatch", f"{path} is missing"))
                                                   for path in left_out)]
        artifacts = [a for a in artifacts if a.format == only] or artifacts  # none: load_target names the problem
    if problems:
        raise EdgekitError(f"{bundle}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                                          else ""))
    return [model_file(bundle / a.path, label=label_prefix + a.path, precision=a.precision)
            for a in artifacts]


def load_target(target: str | Path, runtime: str | None = None) -> list[ModelFile]:
    """The files a bench run measures. ``runtime`` ("litert" | "onnxruntime") keeps that runtime's format."""
    from edgekit.manifest import MANIFEST_NAME

    target = Path(target)
    if target.is_dir():
        bundles = sorted(p for p in target.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
        paths = sorted(p for p in target.iterdir() if p.suffix.lower() in FORMATS and p.is_file())
        only = RUNTIME_FORMATS[runtime] if runtime else None
        if (target / MANIFEST_NAME).is_file():
            files = _from_bundle(target, only=only)
        elif bundles:  # the --out folder of several exports: every usable bundle in it
            files, problems = [], []
            for bundle in bundles:
                try:
                    files += _from_bundle(bundle, label_prefix=f"{bundle.name}/", only=only)
                except EdgekitError as e:
                    problems.append(str(e))
                    warn(f"skipping bundle {bundle.name}: {e}")
            if not files:
                raise EdgekitError(problems[0])
        elif paths:  # a plain folder of models, file by file
            files = [model_file(p) for p in paths]
        else:
            raise EdgekitError(f"{target} holds no {MANIFEST_NAME}, no bundles and no {suffix_list('/')} files; pass a "
                               "bundle made by edgekit export or a model file")
    elif target.exists():
        files = [model_file(target)]
    else:
        raise EdgekitError(f"{target} does not exist; pass a bundle folder or a {suffix_list('/')} file")
    if runtime:
        kept = [f for f in files if f.format == RUNTIME_FORMATS[runtime]]
        if not kept:
            raise EdgekitError(f"{target} has no {RUNTIME_FORMATS[runtime]} file for --runtime {runtime}")
        files = kept
    return files
