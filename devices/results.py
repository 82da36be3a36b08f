"""One latency measurement (artifact x device x threads) and the statistics every device reports alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from edgekit.table import format_ms

__all__ = ["LatencyResult", "format_ms", "latency_stats"]

# Short names for tables and charts.
RUNTIME_NAMES = {"ai_edge_litert": "LiteRT", "onnxruntime": "ORT", "tflite_runtime": "tflite_runtime",
                 "benchmark_model": "benchmark_model", "onnxruntime_perf_test": "ort_perf_test",
                 "executorch": "ExecuTorch"}
STAT_KEYS = ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """Mean, population std, min, percentiles (linear interpolation) and max of per-inference times."""
    import numpy as np

    if not samples_ms:
        raise ValueError("no latency samples")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean_ms": float(a.mean()), "std_ms": float(a.std()), "min_ms": float(a.min()), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(a.max())}


@dataclass
class LatencyResult:
    """What ``edgekit bench`` reports for one artifact on one device at one thread count.

    Times in milliseconds. A field a device cannot measure stays None (LiteRT's benchmark_model prints no
    p90/p99); a failed measurement keeps its identity fields and carries ``error``.
    """

    artifact: str
    format: str
    precision: str
    model_bytes: int
    device: str
    device_kind: str
    threads: int
    runtime: str | None = None
    runtime_version: str | None = None
    runs: int | None = None
    warmup: int | None = None
    load_ms: float | None = None
    first_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    peak_rss_mb: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    machine: dict = field(default_factory=dict)  # python, machine (aarch64...), cpu_count, hostname
    extra: dict = field(default_factory=dict)  # device-specific facts: delegate, p5/p95, memory deltas
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def inferences_per_s(self) -> float | None:
        return 1000.0 / self.mean_ms if self.mean_ms else None

    @property
    def runtime_label(self) -> str | None:
        """'LiteRT 2.3.0', 'ORT 1.31.1', 'benchmark_model 2.15.0'; None before anything ran."""
        if not self.runtime:
            return None
        name = RUNTIME_NAMES.get(self.runtime, self.runtime)
        return f"{name} {self.runtime_version}" if self.runtime_version else name

    def with_samples(self, samples_ms: list[float]) -> "LatencyResult":
        self.samples_ms = list(samples_ms)
        self.runs = len(samples_ms)
        for key, value in latency_stats(samples_ms).items():
            setattr(self, key, value)
        return self

    def to_dict(self) -> dict:
        data = asdict(self)
        data["inferences_per_s"] = self.inferences_per_s
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
