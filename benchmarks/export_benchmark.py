"""Export cost and exported-model speed, in one run.

1. `edgekit export mobilenet_v2` end to end (both formats, parity included; default weights, which offline
   means a failed download and random weights) in a fresh process: wall time against the 60 s goal, peak RSS.
   Then the same with real weights (Google's MobileNet v2 file imported) and the shared ImageNet photos.
2. Per model and format, each in a fresh process: conversion time and peak memory of the conversion alone
   (the model is built and prepared first; the kernel's peak-RSS counter is reset just before converting).
   Formats: ONNX with the legacy (TorchScript) exporter edgekit uses, ONNX with the dynamo exporter (the
   measurement behind that choice), TFLite fp32 (litert-torch), TFLite fp16 weights (from the fp32 file).
3. Latency of the real-weights MobileNetV2 bundle: LiteRT and ONNX Runtime fp32 against PyTorch eager (the
   same imported model), in this one process, interleaved rounds, 1 and 2 threads; ratios to eager. Real
   weights because an untrained network fills its activations with denormal floats, which some kernels
   run many times slower: a latency figure must not depend on that.

    .venv/bin/python benchmarks/export_benchmark.py [--models mobilenet_v2,efficientnet_b0] [--runs 50]
                                                    [--data ../shared/data]

Writes benchmarks/results/export.md and export.json. Other work on this 2-core machine only ever adds time:
the load average before and after is recorded, and latency keeps the best of the interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekit.cpu import describe, host_cpu

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("mobilenet_v1", "mobilenet_v2", "efficientnet_lite0", "efficientnet_b0")
FORMATS = ("onnx", "onnx-dynamo", "tflite", "tflite-fp16")
GOAL_SECONDS = 60.0


# ---------------------------------------------------------------------------------------------- worker
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak belongs to the next step alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(name: str, fmt: str, out_dir: Path) -> dict:
    """One conversion in this (fresh) process; prints nothing but the JSON result."""
    from edgekit.capture import captured_output
    from edgekit.exporters.common import edgekit_metadata, export_ready
    from edgekit.labels import default_labels

    started = time.perf_counter()
    import edgekit

    model = edgekit.create_model(name, weights="random")
    config = model.edgekit_config
    ready = export_ready(model, config.resolution)
    metadata = edgekit_metadata(config, default_labels(config.num_classes))
    setup_s = time.perf_counter() - started
    out = out_dir / f"{config.variant}.{fmt.split('-')[0]}"
    import_s = 0.0
    if fmt.startswith("tflite"):
        t = time.perf_counter()
        with captured_output():
            import litert_torch  # noqa: F401  (import cost reported apart from conversion)
        import_s = time.perf_counter() - t
    from edgekit.exporters import onnx as onnx_exporter
    from edgekit.exporters import tflite as tflite_exporter

    if fmt == "tflite-fp16":
        fp32 = out_dir / f"{config.variant}_fp32.tflite"
        tflite_exporter.torch_to_tflite(ready, fp32, resolution=config.resolution, metadata=metadata)
    rss_before = _status_kb("VmRSS")
    exact_peak = _reset_peak()
    t = time.perf_counter()
    if fmt == "onnx":
        onnx_exporter.torch_to_onnx(ready, out, resolution=config.resolution, metadata=metadata)
    elif fmt == "onnx-dynamo":
        onnx_exporter.torch_to_onnx(ready, out, resolution=config.resolution, metadata=metadata, exporter="dynamo")
    elif fmt == "tflite":
        tflite_exporter.torch_to_tflite(ready, out, resolution=config.resolution, metadata=metadata)
    else:
        out = out_dir / f"{config.variant}_fp16.tflite"
        tflite_exporter.to_fp16(fp32, out, metadata)
    seconds = time.perf_counter() - t
    peak = _status_kb("VmHWM")
    return {"model": name, "variant": config.variant, "resolution": config.resolution, "format": fmt,
            "seconds": seconds, "import_seconds": import_s, "setup_seconds": setup_s,
            "rss_before_mb": rss_before / 1024, "peak_rss_mb": peak / 1024,
            "peak_increase_mb": (peak - rss_before) / 1024, "peak_exact": exact_peak,
            "bytes": out.stat().st_size}


# ---------------------------------------------------------------------------------------------- driver
def _run_child(command: list[str]) -> tuple[int, float, float, str, str]:
    """Exit code, wall seconds, the child's own peak RSS in MB (wait4), stdout, stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return proc.returncode, seconds, usage.ru_maxrss / 1024, out.read(), err.read()


def end_to_end(work: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "edgekit.cli", "export", "mobilenet_v2", "--out", str(work), *extra]
    code, seconds, peak_mb, stdout, stderr = _run_child(command)
    if code not in (0, 1):
        raise SystemExit(f"edgekit export mobilenet_v2 failed ({code}): {stderr.strip().splitlines()[-1:]}")
    manifest = json.loads((work / "mobilenet_v2" / "manifest.json").read_text())
    shown = [os.path.relpath(a, REPO) if os.path.isabs(a) else a for a in extra]
    return {"command": " ".join(["edgekit export mobilenet_v2", *shown]), "exit_code": code, "seconds": seconds,
            "peak_rss_mb": peak_mb, "goal_seconds": GOAL_SECONDS, "weights": manifest["weights"]["source"],
            "steps": {s["name"]: s["seconds"] for s in manifest["steps"]},
            "parity": {p["artifact"]: {"passed": p["passed"], "cosine_min": p["metrics"]["cosine_min"],
                                       "psnr_db": p["metrics"]["psnr_db"],
                                       "top1_agreement": p["metrics"]["top1_agreement"]}
                       for p in manifest["parity"]},
            "sizes": {a["path"]: a["bytes"] for a in manifest["artifacts"]}}


def conversions(models: list[str], formats: list[str], work: Path) -> list[dict]:
    rows = []
    for name in models:
        for fmt in formats:
            out_dir = work / "conversions" / f"{name}-{fmt}"
            out_dir.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--worker", name, fmt, str(out_dir)]
            code, wall, _, stdout, stderr = _run_child(command)
            if code != 0:
                reason = (stderr.strip().splitlines() or ["no output"])[-1]
                print(f"[export_benchmark] {name} {fmt}: FAILED ({reason})", file=sys.stderr)
                rows.append({"model": name, "format": fmt, "error": reason})
                continue
            row = json.loads(stdout.strip().splitlines()[-1]) | {"process_seconds": wall}
            print(f"[export_benchmark] {name} {fmt}: {row['seconds']:.1f} s, peak +{row['peak_increase_mb']:.0f} MB",
                  file=sys.stderr)
            rows.append(row)
    return rows


def latency(bundle: Path, weights: str, runs: int, rounds: int, threads_list: tuple[int, ...]) -> list[dict]:
    """p50/p90/mean per runtime, batch 1; per (runtime, threads) the round with the lowest p50 is kept."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from ai_edge_litert.interpreter import Interpreter

    import edgekit

    model = edgekit.create_model("mobilenet_v2", weights=weights)
    with np.load(bundle / "reference.npz") as reference:
        x = reference["inputs"][:1]  # a real photo, preprocessed
    x_nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    results = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(bundle / "mobilenet_v2.onnx"), options, providers=["CPUExecutionProvider"])
        interpreter = Interpreter(model_path=str(bundle / "mobilenet_v2.tflite"), num_threads=threads)
        interpreter.allocate_tensors()
        tfl_in = interpreter.get_input_details()[0]["index"]
        tensor = torch.from_numpy(x)

        def run_tflite():
            interpreter.set_tensor(tfl_in, x_nhwc)
            interpreter.invoke()

        candidates = {
            "PyTorch eager": lambda: model(tensor),
            "ONNX Runtime": lambda: session.run(None, {"image": x}),
            "LiteRT": run_tflite,
        }
        best: dict[str, list[float]] = {}
        with torch.no_grad():
            for _ in range(rounds):
                for label, call in candidates.items():
                    for _ in range(5):
                        call()  # warm-up
                    times = []
                    for _ in range(runs):
                        t = time.perf_counter()
                        call()
                        times.append((time.perf_counter() - t) * 1000)
                    if label not in best or np.median(times) < np.median(best[label]):
                        best[label] = times
        eager = float(np.median(best["PyTorch eager"]))
        for label, times in best.items():
            p50 = float(np.median(times))
            results.append({"runtime": label, "threads": threads, "runs": runs, "p50_ms": p50,
                            "p90_ms": float(np.percentile(times, 90)), "mean_ms": float(np.mean(times)),
                            "min_ms": float(np.min(times)), "speedup_vs_eager": eager / p50})
    return results


def _versions() -> dict:
    from edgekit.manifest import library_versions

    return library_versions()


def write(data: dict, out_dir: Path) -> Path:
    from edgekit.fileio import atomic_write_text
    from edgekit.table import human_bytes, markdown_table

    e2e_rows = [[f"`{e['command']}`", f"{e['seconds']:.1f}", "yes" if e["seconds"] <= e["goal_seconds"] else "NO",
                 f"{e['peak_rss_mb']:.0f}", e["weights"], e["exit_code"],
                 ", ".join(f"{k} {v:.1f}" for k, v in e["steps"].items())] for e in data["end_to_end"]]
    parity_rows = [[e["weights"], k, f"{v['cosine_min']:.6f}",
                    v["psnr_db"] if isinstance(v["psnr_db"], str) else f"{v['psnr_db']:.1f}",
                    f"{v['top1_agreement']:.0%}", v["passed"]]
                   for e in data["end_to_end"] for k, v in e["parity"].items()]
    conv_rows = []
    for r in data["conversions"]:
        if "error" in r:
            conv_rows.append([r["model"], r["format"], "FAILED", "-", "-", "-", r["error"][:80]])
            continue
        conv_rows.append([r["variant"], r["format"], f"{r['seconds']:.1f}",
                          f"{r['import_seconds']:.1f}" if r["import_seconds"] else "-",
                          f"{r['peak_increase_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", human_bytes(r["bytes"])])
    lat_rows = [[r["runtime"], r["threads"], f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['mean_ms']:.2f}",
                 f"{r['speedup_vs_eager']:.2f}x"] for r in data["latency"]]
    text = f"""# Export cost and exported-model latency

Command: `{data['command']}`

Machine: {data['machine']}; load average {data['load_before']} before, {data['load_after']} after
(other engineers share the 2 cores: every figure here is an upper bound); {data['date']}.

## `edgekit export mobilenet_v2`, end to end (goal: under {GOAL_SECONDS:.0f} s)

Fresh process, wall time including Python start-up and imports; steps in seconds from the manifest.

{markdown_table(["command", "wall s", "under goal", "peak RSS MB", "weights", "exit", "steps (s)"], e2e_rows)}

Parity of those exports:

{markdown_table(["weights", "file", "cosine min", "PSNR dB", "top-1 agreement", "passed"], parity_rows)}

## Conversion time and memory per model and format

Fresh process per row; time and peak memory of the conversion alone (model built and prepared before; the
peak-RSS counter is reset just before). `onnx` is the legacy TorchScript exporter edgekit uses, `onnx-dynamo`
the dynamo exporter; both end with onnxslim and `onnx.checker`. `tflite-fp16` converts the fp32 file's weights.
Import: one-time import of litert-torch in that process (not in the conversion time).

{markdown_table(["variant", "format", "convert s", "import s", "peak +MB", "peak RSS MB", "size"], conv_rows)}

## Latency of the exported MobileNetV2 ({data['latency_weights']}; fp32, batch 1, {data['latency_runs']} runs x {data['latency_rounds']} interleaved rounds, best round)

{markdown_table(["runtime", "threads", "p50 ms", "p90 ms", "mean ms", "vs PyTorch eager"], lat_rows)}

Same model, same preprocessed photo, same process; runtimes interleaved round by round.
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "export.md", text)
    atomic_write_text(out_dir / "export.json", json.dumps(data, indent=2) + "\n")
    return out_dir / "export.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--runs", type=int, default=50, help="timed inferences per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data")),
                        help="the shared test data (Google's MobileNet v2 file and ImageNet samples)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "FORMAT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], Path(args.worker[2]))))
        return 0

    work_context = tempfile.TemporaryDirectory(prefix="export_benchmark.") if args.work is None else None
    work = Path(work_context.name) if work_context else args.work
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("[export_benchmark] edgekit export mobilenet_v2 ...", file=sys.stderr)
    e2e = [end_to_end(work / "default", [])]
    weights = args.data / "tflite" / "mobilenet_v2_1.0_224_quant.tflite"
    latency_bundle, latency_weights = work / "default" / "mobilenet_v2", "random"
    if weights.is_file():
        e2e.append(end_to_end(work / "real", ["--weights", str(weights),
                                              "--data", str(args.data / "imagenet-samples" / "images")]))
        latency_bundle, latency_weights = work / "real" / "mobilenet_v2", str(weights)
    else:
        print(f"[export_benchmark] {weights} missing: latency on random weights", file=sys.stderr)
    for e in e2e:
        print(f"[export_benchmark] {e['command']}: {e['seconds']:.1f} s", file=sys.stderr)
    rows = conversions(args.models.split(","), args.formats.split(","), work)
    print("[export_benchmark] latency ...", file=sys.stderr)
    lat = latency(latency_bundle, latency_weights, args.runs, args.rounds, (1, 2))
    data = {
        "command": "python benchmarks/export_benchmark.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": f"{describe(host_cpu())}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()), "versions": _versions(),
        "end_to_end": e2e, "conversions": rows, "latency": lat, "latency_runs": args.runs,
        "latency_rounds": args.rounds,
        "latency_weights": "Google's MobileNet v2 imported" if latency_weights != "random" else "random weights",
    }
    path = write(data, args.out)
    print(path.read_text())
    if work_context:
        work_context.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
