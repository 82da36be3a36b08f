"""Host latency of the model zoo: fp32 and int8, LiteRT and ONNX Runtime, 1 and 2 threads.

Each model is exported once with ``edgekit export NAME --int8`` (random weights: latency does not depend on
the weights' values; int8 calibrated on the shared ImageNet samples), then every file is timed with
``edgekit bench``'s local device: a fresh process per measurement running only the runtime and numpy.
Google's hosted uint8 MobileNet v2 is timed alongside as an outside reference.

    .venv/bin/python benchmarks/host_latency.py [--models mobilenet_v2,efficientnet_b0] [--runs 100]
                                                [--data ../shared/data] [--work DIR]

Writes benchmarks/results/host_latency.md and .json (with the command that made them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from edgekit.cpu import describe, host_cpu

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("mobilenet_v1", "mobilenet_v2", "efficientnet_lite0", "efficientnet_b0")
REFERENCE_FILE = "mobilenet_v2_1.0_224_quant.tflite"
THREADS = (1, 2)


def export_bundles(models: list[str], work: Path, data: Path) -> dict[str, str]:
    """Bundles under ``work``; returns the export failures by model name (those are left out of the table)."""
    failures = {}
    for name in models:
        if (work / name / "manifest.json").is_file():
            print(f"[host_latency] reusing {work / name}", file=sys.stderr)
            continue
        command = [sys.executable, "-m", "edgekit.cli", "-q", "export", name, "--int8", "--weights", "random",
                   "--out", str(work), "--calib", str(data / "imagenet-samples" / "images"),
                   "--calib-samples", "32", "--parity-samples", "4"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        print(f"[host_latency] export {name}: exit {done.returncode} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        if done.returncode not in (0, 1):  # 1 = a parity gate failed; the files still exist and run
            failures[name] = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return failures


def measure(models: list[str], work: Path, data: Path, runs: int, warmup: int, passes: int):
    """``passes`` sweeps over every file; per (file, threads) the pass with the lowest p50 is kept.

    On a shared machine other work only ever adds time, so the best of a few interleaved passes is the
    figure least disturbed by it, and ratios between rows compare like with like.
    """
    from edgekit.devices.artifacts import load_target, model_file
    from edgekit.devices.base import BenchSettings
    from edgekit.devices.profiles import LOCAL
    from edgekit.devices.session import run_benchmarks

    # The work folder holds one bundle per model; its labels read "model/file".
    files = [f for f in load_target(work) if f.label.split("/")[0] in models]
    files.append(model_file(data / "tflite" / REFERENCE_FILE, label=f"google/{REFERENCE_FILE}"))

    def report(r):
        state = f"p50 {r.p50_ms:.2f} ms" if r.ok else f"FAILED {r.error}"
        print(f"  {r.artifact} {r.threads} thr: {state}", file=sys.stderr)

    every_pass = []
    for number in range(passes):
        print(f"[host_latency] pass {number + 1} of {passes}", file=sys.stderr)
        every_pass.append(run_benchmarks(files, [LOCAL], BenchSettings(runs=runs, warmup=warmup, threads=THREADS),
                                         report))
    best = []
    for rows in zip(*every_pass):
        good = [r for r in rows if r.ok]
        best.append(min(good, key=lambda r: r.p50_ms) if good else rows[0])
    return best, every_pass


def _cell(results, model: str, fmt: str, precision: str, threads: int):
    for r in results:
        if r.artifact.startswith(f"{model}/") and r.format == fmt and r.precision == precision and r.threads == threads:
            return r
    return None


def write(results, every_pass, failures: dict, models: list[str], out: Path, command: str, meta: dict) -> str:
    from edgekit.devices.results import format_ms
    from edgekit.fileio import atomic_write_text
    from edgekit.table import human_bytes, markdown_table

    def p50(r) -> str:
        return format_ms(r.p50_ms) if r is not None and r.ok else "-"

    def ratio(a, b) -> str:
        return f"{a.p50_ms / b.p50_ms:.2f}x" if a is not None and b is not None and a.ok and b.ok else "-"

    summary = []
    for model in models:
        if model in failures:
            continue
        cells = {(fmt, prec, t): _cell(results, model, fmt, prec, t)
                 for fmt in ("tflite", "onnx") for prec in ("fp32", "int8") for t in THREADS}
        summary.append([model]
                       + [p50(cells[(fmt, prec, t)]) for fmt in ("tflite", "onnx") for prec in ("fp32", "int8")
                          for t in THREADS]
                       + [ratio(cells[(fmt, "fp32", 1)], cells[(fmt, "int8", 1)]) for fmt in ("tflite", "onnx")]
                       + [ratio(cells[("tflite", "fp32", 1)], cells[("onnx", "fp32", 1)])])
    headers = (["model"] + [f"{'LiteRT' if fmt == 'tflite' else 'ORT'} {prec} {t}t" for fmt in ("tflite", "onnx")
                            for prec in ("fp32", "int8") for t in THREADS]
               + ["LiteRT int8 speed-up", "ORT int8 speed-up", "LiteRT / ORT fp32"])
    detail = markdown_table(
        ["file", "precision", "runtime", "threads", "load ms", "first ms", "mean", "std", "p50", "p90", "p99", "max",
         "inf/s", "peak RSS MB", "size"],
        [[r.artifact, r.precision, r.runtime_label or "FAILED", r.threads, format_ms(r.load_ms),
          format_ms(r.first_ms), format_ms(r.mean_ms), format_ms(r.std_ms), format_ms(r.p50_ms), format_ms(r.p90_ms),
          format_ms(r.p99_ms), format_ms(r.max_ms), f"{r.inferences_per_s:.1f}" if r.ok else "-",
          f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb else "-", human_bytes(r.model_bytes)] for r in results])
    reference = [r for r in results if r.artifact.startswith("google/")]
    failed_lines = [f"- {m}: export failed: {e}" for m, e in failures.items()]
    failed_lines += [f"- {r.artifact} {r.threads}t: {r.error}" for r in results if not r.ok]
    text = "\n".join([
        "# Host latency of the zoo: LiteRT and ONNX Runtime, fp32 and int8, 1 and 2 threads",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {meta['machine']}, {meta['cpu_count']} cores, Python {meta['python']}; "
        f"load average {meta['load_before']} before, {meta['load_after']} after (other work on the machine "
        f"shows up in the spread and in the 2-thread figures); {meta['date']}.",
        "",
        "p50 latency per inference in ms at the default resolution (224 px), batch 1, best of "
        f"{meta['passes']} interleaved passes; speed-ups are fp32 p50 / int8 p50 at 1 thread.",
        "",
        markdown_table(headers, summary),
        "",
        "Reference, Google's hosted uint8 file (LiteRT): "
        + ", ".join(f"{r.threads} thread{'s' * (r.threads > 1)} p50 {format_ms(r.p50_ms)} ms" for r in reference
                    if r.ok),
        "",
        "## Every measurement",
        "",
        detail,
        "",
        f"{meta['runs']} timed runs after {meta['warmup']} warm-up runs per row and pass, each in a fresh process "
        "(edgekit bench's local device). LiteRT times `invoke()` (XNNPACK), ONNX Runtime times `session.run()` "
        "(CPU provider, sequential execution). Weights are random: latency does not depend on their values. "
        "int8 files come from `edgekit export --int8` (LiteRT: fully integer with int8 input/output; ORT: QDQ "
        "with uint8 activations).",
        *([""] + ["Failures:"] + failed_lines if failed_lines else []),
        "",
    ])
    atomic_write_text(out.with_suffix(".md"), text)
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"command": command, **meta, "export_failures": failures, "results": [r.to_dict() for r in results],
         "passes": [[r.to_dict() for r in rows] for rows in every_pass]},
        indent=2) + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--passes", type=int, default=3, help="sweeps over all files; the best p50 is kept")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgekit-host-latency"),
                        help="where the exported bundles go (reused when present)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "host_latency")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    command = shlex.join([".venv/bin/python", "benchmarks/host_latency.py", *sys.argv[1:]])
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    failures = export_bundles(models, args.work, args.data)
    results, every_pass = measure(models, args.work, args.data, args.runs, args.warmup, args.passes)
    meta = {"machine": describe(host_cpu()), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_before": load_before, "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "runs": args.runs, "warmup": args.warmup, "passes": args.passes}
    print(write(results, every_pass, failures, models, args.out, command, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
