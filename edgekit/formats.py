"""The model formats edgekit writes and runs, registered once, and every option list the commands, ``ExportSpec``
and the back-ends share.

A format is a name (``--formats``, the manifest's ``format``), a file suffix, the runtime that runs it and the
back-end module in ``edgekit.exporters`` that owns its fp32 export, int8 quantization, metadata and integer
census. Adding a format is one entry here, a back-end module and a runner in ``edgekit.runtimes``; the pipeline,
report, manifest and commands ask this registry instead of naming formats. Imports nothing heavy: argparse and
``edgekit validate`` read it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgekitError


@dataclass(frozen=True)
class Format:
    name: str  # --formats word, the manifest's artifact format
    suffix: str
    title: str  # as prose names it
    runtime: str  # the runtime bench reports (and --runtime selects)
    backend: str  # module in edgekit.exporters holding BACKEND
    default: bool = True  # exported when --formats is not given
    modules: tuple[str, ...] = ()  # Python modules the format needs beyond edgekit's core install
    install: str | None = None  # how to get them
    distributions: tuple[str, ...] = ()  # whose versions the manifest records
    android_app: bool = False  # the report's Kotlin snippet loads this format with LiteRT's Interpreter
    fp16: bool = False  # --fp16 writes a float16-weights file of this format (its back-end has export_fp16)
    runtime_needs_torch: bool = False  # its Python runtime imports torch (validate, eval, bench of such a file)

    def missing(self) -> str | None:
        """A one-line error naming the pip command when a module the format needs is not installed, else None."""
        absent = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        return (f"the {self.name} format needs {', '.join(absent)}, which is not installed; "
                f"`{self.install}` adds it")

    def require(self) -> None:
        problem = self.missing()
        if problem:
            raise EdgekitError(problem)


# The order here is the order files are exported, listed and reported in.
_REGISTRY = (
    Format("onnx", ".onnx", "ONNX", "onnxruntime", "onnx", distributions=("onnx", "onnxruntime", "onnxslim")),
    Format("tflite", ".tflite", "TFLite", "litert", "tflite", android_app=True, fp16=True,
           distributions=("ai-edge-litert", "litert-torch", "ai-edge-quantizer")),
    Format("pte", ".pte", "ExecuTorch", "executorch", "pte", default=False, modules=("executorch",),
           runtime_needs_torch=True,
           install="pip install 'edgekit[executorch]'", distributions=("executorch", "torchao")),
)
FORMATS: dict[str, Format] = {f.name: f for f in _REGISTRY}
FORMAT_NAMES = tuple(FORMATS)
DEFAULT_FORMATS = tuple(f.name for f in _REGISTRY if f.default)
SUFFIXES = tuple(f.suffix for f in _REGISTRY)

# --- option lists: argparse, ExportSpec and the back-ends all read these ----------------------------------------
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_METHOD = "minmax"
IO_DTYPES = ("int8", "uint8", "float32")  # the int8 TFLite file's input and output type
DEFAULT_IO_DTYPE = "int8"
ONNX_EXPORTERS = ("legacy", "dynamo")
DEFAULT_ONNX_EXPORTER = "legacy"
PRECISIONS = ("fp32", "fp16", "int8")


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise EdgekitError(f"unknown format {name!r}: choose from {', '.join(FORMAT_NAMES)}") from None


def format_of(path: str | Path) -> Format | None:
    """The format a file's suffix names, or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in _REGISTRY if f.suffix == suffix), None)


def suffix_list(separator: str = " / ") -> str:
    """``.onnx / .tflite / .pte``: for messages that name the files edgekit takes."""
    return separator.join(SUFFIXES)


def parse_formats(text: str) -> tuple[str, ...]:
    """``onnx,tflite``: the comma-separated format names of --formats, lower case, in the order given."""
    return tuple(f.strip().lower() for f in text.split(",") if f.strip())
