"""The interface every format's back-end implements, and the lookup from a format name to its back-end.

A back-end owns everything format-specific about a file: the fp32 export, the int8 quantization, writing
edgekit's metadata (once, as the file is written), reading it back, and the census of what the file computes
in. The pipeline calls these in order and never asks which format it holds; which formats exist is
``edgekit.formats``. Running a file is ``edgekit.runtimes.open_runtime``, which needs no back-end (and no torch).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..formats import CALIBRATION_METHODS, IO_DTYPES, Format, get_format


class FormatBackend:
    """Defaults for a format that has only an fp32 export; each back-end overrides what it supports."""

    format: Format
    # the --calib-method values this back-end honours; with another it calibrates with the first and says why
    calibration_methods: tuple[str, ...] = CALIBRATION_METHODS
    calibration_note: str | None = None  # why only those (shown in the export's note and the report)
    io_dtypes: tuple[str, ...] = IO_DTYPES[:1]  # the int8 file's input/output types --io-dtype may choose
    layer_comparison = False  # edgekit.layerwise can compare this format's int8 file with its fp32 file

    @property
    def name(self) -> str:
        return self.format.name

    def check(self, spec) -> None:
        """Refuse what this back-end cannot do for ``spec`` (an ExportSpec) before any work starts."""
        self.format.require()

    def export_fp32(self, model, out: Path, *, spec, resolution: int, metadata: dict) -> dict:
        """Write ``out`` from the export-ready ``model`` (input ``resolution`` px square), with ``metadata``
        embedded; return facts for the manifest."""
        raise NotImplementedError

    def export_fp16(self, fp32: Path, out: Path, metadata: dict) -> dict:
        raise NotImplementedError(f"{self.name} has no fp16 export")

    def quantize_int8(self, model, fp32: Path, out: Path, *, calibration, spec, metadata: dict) -> dict:
        """Write ``out``, an int8 file calibrated on ``calibration``, from the export-ready ``model`` or the
        ``fp32`` file (whichever the format's quantizer starts from), with ``metadata`` embedded; return facts."""
        raise NotImplementedError

    def int8_summary(self, details: dict) -> str | None:
        """What the export's progress line adds after the int8 file's size, if anything."""
        return None

    def read_metadata(self, path: Path) -> dict:
        """edgekit's embedded metadata, values decoded; {} for a file without it."""
        return {}

    def operator_counts(self, path: Path) -> dict[str, int]:
        return {}

    def census(self, path: Path) -> dict | None:
        """What the file computes in, read from the file (the integer proof of an int8 TFLite file), or None."""
        return None


def backend_for(name: str) -> FormatBackend:
    """The back-end of a registered format (importing its module, which imports no heavy library itself)."""
    fmt = get_format(name)
    return importlib.import_module(f"{__package__}.{fmt.backend}").BACKEND
