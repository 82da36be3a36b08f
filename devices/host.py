"""Latency of an export's files on the machine that made them, for the bundle's manifest and report.

The measurement is ``edgekit bench``'s local device (``devices.local``): each file in a fresh Python process
that imports only numpy and its runtime, so PyTorch, still loaded in the exporting process, never touches the
figures. Few runs on one thread: enough for the question the bundle answers, "is the int8 file faster than
its fp32 twin here, and by how much"; ``edgekit bench`` gives the full picture (threads, devices, percentiles).

Nothing here may fail an export: a host without a runtime, a crashed runner or an unreadable device file
becomes an error in the figures, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError

from .base import BenchSettings
from .profiles import LOCAL, LocalProfile, load_profiles

THREADS = 1  # one core: the figure least disturbed by other work, and the one the goals are set for
DEFAULT_RUNS = 25
WARMUP = 3


@dataclass(frozen=True)
class HostFile:
    """One file of the bundle to time: its path on disk and how the manifest names it."""

    path: Path
    label: str  # the artifact's path inside the bundle
    format: str  # onnx | tflite
    precision: str  # fp32 | fp16 | int8


@dataclass
class HostLatency:
    """Per-file host latency and the int8/fp32 ratio of each format; what manifest.json stores as ``latency``."""

    threads: int
    runs: int
    warmup: int
    device: str
    rows: list[dict] = field(default_factory=list)  # artifact, format, precision, runtime, p50_ms... or error
    machine: dict = field(default_factory=dict)
    note: str | None = None  # why the local device profile was not used, when it was not

    def comparisons(self) -> list[dict]:
        """int8 against fp32 of the same format, p50 and p90, where both were measured."""
        measured = {(r["format"], r["precision"]): r for r in self.rows if r.get("p50_ms") is not None}
        pairs = []
        for fmt in dict.fromkeys(r["format"] for r in self.rows):
            int8, fp32 = measured.get((fmt, "int8")), measured.get((fmt, "fp32"))
            if int8 and fp32:
                pairs.append({"format": fmt, "int8": int8["artifact"], "fp32": fp32["artifact"],
                              "int8_p50_ms": int8["p50_ms"], "fp32_p50_ms": fp32["p50_ms"],
                              "ratio_p50": round(int8["p50_ms"] / fp32["p50_ms"], 4),
                              "ratio_p90": round(int8["p90_ms"] / fp32["p90_ms"], 4)})
        return pairs

    def slower(self) -> list[dict]:
        """The int8 files slower than their fp32 twin (median latency): a defect to fix, never to ship quietly."""
        return [c for c in self.comparisons() if c["ratio_p50"] > 1.0]

    def errors(self) -> list[dict]:
        return [r for r in self.rows if r.get("error")]

    def to_dict(self) -> dict:
        return {"device": self.device, "threads": self.threads, "runs": self.runs, "warmup": self.warmup,
                "machine": self.machine, "note": self.note, "results": self.rows,
                "int8_vs_fp32": self.comparisons()}


def local_profile() -> tuple[LocalProfile, str | None]:
    """The ``local`` device as the user configured it (its Python, runtime choice, timeout), or the built-in
    one with the reason when the device file cannot be read: a broken devices.toml must not fail an export."""
    try:
        profiles, _ = load_profiles(None)
    except EdgekitError as e:
        return LOCAL, f"device file ignored ({e}); measured with this Python"
    profile = profiles.get("local", LOCAL)
    return (profile if isinstance(profile, LocalProfile) else LOCAL), None


def measure(files: list[HostFile], runs: int = DEFAULT_RUNS, warmup: int = WARMUP,
            profile: LocalProfile | None = None) -> HostLatency:
    """Time each file on this machine, one after another (two files timed at once would slow each other)."""
    from .artifacts import ModelFile
    from .session import run_benchmarks

    note = None
    if profile is None:
        profile, note = local_profile()
    settings = BenchSettings(runs=runs, warmup=warmup, threads=(THREADS,))
    models = [ModelFile(f.path, f.label, f.format, f.precision, f.path.stat().st_size) for f in files]
    result = HostLatency(THREADS, runs, warmup, profile.describe(), note=note)
    for r in run_benchmarks(models, [profile], settings):
        row = {"artifact": r.artifact, "format": r.format, "precision": r.precision, "runtime": r.runtime_label}
        if r.ok:
            row |= {key: round(getattr(r, key), 4) for key in ("p50_ms", "p90_ms", "mean_ms", "min_ms")}
            result.machine = result.machine or r.machine
        else:
            row["error"] = r.error
        result.rows.append(row)
    return result
