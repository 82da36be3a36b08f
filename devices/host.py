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

from edgekit.cpu import DOT_PRODUCT_CPUS, describe, missing_dot_product
from edgekit.errors import EdgekitError

from .base import BenchSettings
from .profiles import LOCAL, LocalProfile, load_profiles
from .runner import cpu_info

THREADS = 1  # one core: the figure least disturbed by other work, and the one the goals are set for
DEFAULT_RUNS = 25
WARMUP = 3

# Measured on an Intel Xeon with AVX-512 VNNI and AMX (benchmarks/results/int8_intel_xeon_vnni_amx.md), MobileNet v1 0.25/128:
# XNNPACK's int8 convolutions use AMX tiles 64 output channels wide when the CPU has AMX, and the thin first layers
# then cost up to 6x their float time; with AMX masked the same file ran at 0.80-0.81x of fp32. Said with the
# slowdown so the user knows what the file will do elsewhere instead of reading "defect" and guessing.
AMX_CAUSE = ("this CPU has Intel AMX, and LiteRT's XNNPACK then runs every int8 convolution on AMX tiles 64 output "
             "channels wide: layers with few channels (the first layers of thin models such as MobileNet v1 "
             "0.25) take longer than in float. CPUs with other int8 dot products (VNNI without AMX, ARM phones and "
             "boards with dotprod) do not do this: measure there with `edgekit bench --device`, and keep the fp32 "
             "file for AMX servers")


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this machine's CPU has Intel AMX for int8 (Sapphire Rapids and later Xeons); False where the
    kernel does not say (not Linux, no /proc)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return "amx_int8" in cpu_info(text)["features"]


def int8_speed_note(cpu: dict) -> str:
    """The one line said instead of SLOWER where the CPU has no 8-bit dot product: int8 then runs about as fast
    as fp32 by design (XNNPACK and MLAS widen to 16 bits), so a ratio near or above 1 is expected, not a defect."""
    return (f"int8 is not expected to be faster than fp32 on {describe(cpu)}: it has {missing_dot_product(cpu)}. "
            f"int8 runs faster on {DOT_PRODUCT_CPUS}")


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

    @property
    def dot_product(self) -> bool | None:
        """Whether the measuring CPU has 8-bit dot products (None: not recorded)."""
        return (self.machine.get("cpu") or {}).get("int8_dot_product")

    def comparisons(self) -> list[dict]:
        """int8 against fp32 of the same format, p50 and p90, where both were measured; a slower int8 TFLite
        file on an AMX CPU carries the known cause, and a CPU without 8-bit dot products says int8 is not
        expected to be faster there."""
        measured = {(r["format"], r["precision"]): r for r in self.rows if r.get("p50_ms") is not None}
        pairs = []
        for fmt in dict.fromkeys(r["format"] for r in self.rows):
            int8, fp32 = measured.get((fmt, "int8")), measured.get((fmt, "fp32"))
            if int8 and fp32:
                pairs.append({"format": fmt, "int8": int8["artifact"], "fp32": fp32["artifact"],
                              "int8_p50_ms": int8["p50_ms"], "fp32_p50_ms": fp32["p50_ms"],
                              "ratio_p50": round(int8["p50_ms"] / fp32["p50_ms"], 4),
                              "ratio_p90": round(int8["p90_ms"] / fp32["p90_ms"], 4)})
                pairs[-1]["int8_dot_product"] = self.dot_product
                if fmt == "tflite" and pairs[-1]["ratio_p50"] > 1.0 and self.machine.get("amx_int8"):
                    pairs[-1]["cause"] = AMX_CAUSE
        return pairs

    def slower(self) -> list[dict]:
        """The int8 files slower than their fp32 twin (median latency) on a CPU with 8-bit dot products (or one
        that did not say): a defect to fix, never to ship quietly. Without dot products see ``speed_note``."""
        return [c for c in self.comparisons() if c["ratio_p50"] > 1.0 and self.dot_product is not False]

    def speed_note(self) -> str | None:
        """The line said on a CPU without 8-bit dot products, where int8 is not expected to be faster."""
        return int8_speed_note(self.machine["cpu"]) if self.dot_product is False and self.comparisons() else None

    def errors(self) -> list[dict]:
        return [r for r in self.rows if r.get("error")]

    def to_dict(self) -> dict:
        return {"device": self.device, "threads": self.threads, "runs": self.runs, "warmup": self.warmup,
                "machine": self.machine, "note": self.note, "results": self.rows,
                "int8_vs_fp32": self.comparisons(), "int8_speed_note": self.speed_note()}


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
            result.machine = result.machine or dict(r.machine)
        else:
            row["error"] = r.error
        result.rows.append(row)
    if result.machine:
        result.machine["amx_int8"] = cpu_has_amx()  # the local device is this machine
    return result
