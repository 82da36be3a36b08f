"""What `edgekit export` is asked to do, checked before any work: ``ExportSpec``, filled in by the CLI or by a
Python caller, and the calibration warning given before the work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgekitError
from .formats import (CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD, DEFAULT_FORMATS, DEFAULT_IO_DTYPE,
                      DEFAULT_ONNX_EXPORTER, FORMAT_NAMES, FORMATS, IO_DTYPES, ONNX_EXPORTERS, PRECISIONS)
from .images import find_images
from .parity import DEFAULT_GATES, GateTable
from .sample_images import sample_image_paths
from .types import Preprocessing


@dataclass(frozen=True)
class ExportSpec:
    """Everything `edgekit export` was asked to do; the CLI only fills this in."""

    name: str
    weights: str = "default"
    width: float | None = None
    resolution: int | None = None
    num_classes: int | None = None
    keep_background: bool = False
    formats: tuple[str, ...] = DEFAULT_FORMATS
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None
    calib_samples: int = 128
    calib_method: str = DEFAULT_CALIBRATION_METHOD
    io_dtype: str = DEFAULT_IO_DTYPE
    data: Path | None = None  # parity pictures: image folder or labelled CSV; default --calib, else built-in
    parity_samples: int = 16
    parity_random: int = 4
    seed: int = 0
    latency_runs: int = 25  # timed runs per file on this machine (1 thread, fresh process); 0 skips
    layer_samples: int = 8  # real pictures for the per-layer int8 error (as many as `edgekit inspect`); 0 skips
    out: Path = Path("exports")
    labels: Path | None = None
    gates: GateTable = field(default=DEFAULT_GATES)
    opset: int = 17
    onnx_exporter: str = DEFAULT_ONNX_EXPORTER
    dynamic_batch: bool = True
    # how pictures become the input, when declared (--preprocessing, --mean/--std): replaces what the weights record
    preprocessing: Preprocessing | None = None
    author: str | None = None  # written into every file's metadata (TFLite ModelMetadata, ONNX model_author)
    license: str | None = None  # default: the licence of the published weights, where edgekit knows it

    def __post_init__(self):
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise EdgekitError(f"unknown format {unknown[0] if unknown else '(none)'!r}: choose from "
                               f"{', '.join(FORMAT_NAMES)} (comma-separated, e.g. --formats "
                               f"{','.join(DEFAULT_FORMATS)})")
        if len(set(self.formats)) != len(self.formats):
            raise EdgekitError(f"--formats lists a format twice: {','.join(self.formats)}")
        with_fp16 = [f for f in FORMATS.values() if f.fp16]
        if self.fp16 and not any(f.name in self.formats for f in with_fp16):
            raise EdgekitError(f"--fp16 makes a float16 {' / '.join(f.title for f in with_fp16)} file; add "
                               f"{' or '.join(f.name for f in with_fp16)} to --formats")
        for name in self.formats:
            FORMATS[name].require()  # an optional format whose extra is missing: the pip command, before any work
        for value, allowed, what in ((self.calib_method, CALIBRATION_METHODS, "calibration method"),
                                     (self.io_dtype, IO_DTYPES, "int8 I/O type"),
                                     (self.onnx_exporter, ONNX_EXPORTERS, "ONNX exporter")):
            if value not in allowed:
                raise EdgekitError(f"unknown {what} {value!r}: choose from {', '.join(allowed)}")
        if self.parity_samples < 0 or self.parity_random < 0:
            raise EdgekitError("--parity-samples and --parity-random count pictures: use 0 or more")
        if self.parity_samples + self.parity_random < 1:
            raise EdgekitError("parity needs at least one input: raise --parity-samples or --parity-random")
        if self.opset < 17:
            raise EdgekitError(f"--opset {self.opset} is too old: edgekit exports ONNX opset 17 or newer")
        if self.calib_samples < 1:
            raise EdgekitError("--calib-samples must be at least 1")
        if self.latency_runs < 0:
            raise EdgekitError("--latency-runs counts timed runs: use 0 (skip) or more")
        if self.layer_samples < 0:
            raise EdgekitError("--layer-samples counts pictures: use 0 (skip) or more")
        for precision in PRECISIONS:
            for metric, problem in self.gates.for_precision(precision).problems():
                raise EdgekitError(f"--gate {precision}.{metric}: {problem}; give a value in range, or 'off'")

    def options(self) -> dict:
        """The options as the manifest records them."""
        return {"formats": list(self.formats), "fp16": self.fp16, "int8": self.int8,
                "calibration": {"folder": str(self.calib) if self.calib else None, "samples": self.calib_samples,
                                "method": self.calib_method, "io_dtype": self.io_dtype} if self.int8 else None,
                "parity": {"data": str(self.data) if self.data else None, "samples": self.parity_samples,
                           "random": self.parity_random, "seed": self.seed},
                "onnx": {"opset": self.opset, "exporter": self.onnx_exporter, "dynamic_batch": self.dynamic_batch},
                "latency": {"runs": self.latency_runs}, "layers": {"samples": self.layer_samples},
                "labels_file": str(self.labels) if self.labels else None, "out": str(self.out)}


# Fewer int8 calibration pictures than this is a warning before the work: TFLite's post-training quantization guide
# asks for a representative dataset of about 100-500 samples; edgekit's default --calib-samples is 128.
CALIBRATION_MINIMUM = 100


def calibration_warning(spec: ExportSpec) -> str | None:
    """Why the int8 calibration ``spec`` asks for is below CALIBRATION_MINIMUM pictures, with the number that would
    do, or None. Counted before any work (the folder's readable-looking files; unreadable ones only lower it)."""
    if not spec.int8:
        return None
    if spec.calib is None:
        available, where = len(list(sample_image_paths())), "edgekit's built-in photos"
    else:
        if not Path(spec.calib).is_dir():
            return None  # the one-line error about the folder comes where it always did
        available, where = len(find_images(Path(spec.calib))), f"--calib {spec.calib}"
    used = min(available, spec.calib_samples)
    if used >= CALIBRATION_MINIMUM or available == 0:
        return None
    if available >= CALIBRATION_MINIMUM:
        fix = f"raise --calib-samples to at least {CALIBRATION_MINIMUM} ({where} holds {available})"
    elif spec.calib is None:
        fix = f"pass --calib DIR with at least {CALIBRATION_MINIMUM} pictures from your own data"
    else:
        fix = f"add at least {CALIBRATION_MINIMUM - available} more representative pictures to {spec.calib}"
    return (f"int8 will be calibrated on {used} pictures from {where}, fewer than edgekit's sound minimum of "
            f"{CALIBRATION_MINIMUM} (TFLite's guide: 100-500 representative pictures); ranges set by few pictures "
            f"can clip what the app will see: {fix}")
