"""Export time and file size of the classic zoo, fp32 and int8, ONNX and TFLite, each at its default resolution.

Every model goes through ``edgekit.pipeline.run_export`` (prepare, fp32 ONNX and TFLite, int8 calibrated on
edgekit's 12 built-in photos, parity on 2 of them), each in a fresh process so that one model's memory is
returned before the next. Weights are random (no checkpoint is stored on this machine): size and time do not
depend on the values, and int8 figures of random weights are not gated, so only the files' facts are reported.
For each int8 TFLite file the table gives its size against the fp32 file and whether it is fully integer (read
back from the flatbuffer). ``--models`` with a subset re-measures those models and keeps the others' rows.

    .venv/bin/python benchmarks/export_cost.py [--models vgg16,resnet18] [--resolution N] [--work DIR]

Writes benchmarks/results/export_cost.md and .json (or export_cost_rN.* with --resolution). Timed on a machine
shared with other engineers: times are what they were under that load (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from scratch import work_folder  # benchmarks/scratch.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("lenet5", "alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50", "resnet152", "googlenet", "unet",
          "siamese")


def export_one(name: str, resolution: int | None, work: Path) -> dict:
    """One model through run_export; returns its files' facts."""
    import torch

    from edgekit.models import create_model
    from edgekit.pipeline import ExportSpec, run_export

    torch.manual_seed(0)
    model = create_model(name, resolution=resolution, weights="random")
    config = model.edgekit_config
    params = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    manifest = run_export(ExportSpec(config.name, width=config.width, resolution=config.resolution,
                                     num_classes=config.num_classes, int8=True, parity_samples=2, parity_random=0,
                                     latency_runs=0, layer_samples=0, out=work), model=model)
    total = time.perf_counter() - started
    steps = {s.name: s.seconds for s in manifest.steps}
    files = {}
    for a in manifest.artifacts:
        files[f"{a.format} {a.precision}"] = {"bytes": a.bytes, "seconds": a.seconds,
                                              "fully_integer": (a.details.get("integer") or {}).get("fully_integer")}
    return {"model": name, "variant": config.variant, "resolution": config.resolution, "parameters": params,
            "seconds_total": round(total, 1), "steps": steps, "files": files,
            "prepare": manifest.model.get("prepare"), "passed": manifest.passed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--resolution", type=int, default=None, help="one resolution for all (default: each one's)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process: one model, JSON out
    args = parser.parse_args()
    work = work_folder(args.work, "export_cost.")
    if args.one:
        print("RESULT " + json.dumps(export_one(args.one, args.resolution, work)), flush=True)
        return 0

    from edgekit.cpu import describe, host_cpu

    suffix = f"_r{args.resolution}" if args.resolution else ""
    result = {"cpu": describe(host_cpu()), "load_average_start": os.getloadavg(), "models": []}
    names = args.models.split(",")
    earlier = RESULTS / f"export_cost{suffix}.json"
    if earlier.exists():  # a subset re-measured: the other models keep their rows (and the CPU they name)
        previous = json.loads(earlier.read_text())
        if previous.get("cpu") == result["cpu"]:
            result["models"] = [m for m in previous["models"] if m["model"] not in names]
    for name in names:
        print(f"{name} ...", flush=True)
        command = [sys.executable, __file__, "--one", name, "--work", str(work)]
        if args.resolution:
            command += ["--resolution", str(args.resolution)]
        run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
        if run.returncode or line is None:
            tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            entry = {"model": name, "error": tail}
        else:
            entry = json.loads(line[len("RESULT "):])
        result["models"].append(entry)
        print(f"  {json.dumps(entry)[:300]}", flush=True)
        result["load_average_end"] = os.getloadavg()
        write_results(result, suffix)
    return 0 if all("error" not in m for m in result["models"]) else 1


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def write_results(result: dict, suffix: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"export_cost{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Export time and size of the classic zoo{' at ' + suffix[2:] + ' px' if suffix else ''}", "",
             f"CPU: {result['cpu']}, 2 cores shared with other engineers' jobs during the run (load average "
             f"{result['load_average_start'][0]:.1f} at the start, {result['load_average_end'][0]:.1f} at the end): "
             "times are what they were under that load. Produced by `benchmarks/export_cost.py` "
             "(random weights; int8 calibrated on 12 built-in photos; parity on 2).", "",
             "| model | px | params | ONNX fp32 | ONNX int8 | TFLite fp32 | TFLite int8 | TFLite int8/fp32 | "
             "fully integer | export total |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        if "error" in m:
            lines.append(f"| {m['model']} | | | failed: {m['error'][:120]} | | | | | | |")
            continue
        f = m["files"]

        def cell(key):
            entry = f.get(key)
            return "-" if entry is None else f"{_mb(entry['bytes'])}, {entry['seconds']:.0f} s"

        fp32, int8 = f.get("tflite fp32"), f.get("tflite int8")
        ratio = f"{int8['bytes'] / fp32['bytes']:.3f}x" if fp32 and int8 else "-"
        integer = "-" if not int8 else "yes" if int8.get("fully_integer") else "NO"
        lines.append(f"| {m['model']} | {m['resolution']} | {m['parameters'] / 1e6:.2f} M | {cell('onnx fp32')} | "
                     f"{cell('onnx int8')} | {cell('tflite fp32')} | {cell('tflite int8')} | {ratio} | {integer} | "
                     f"{m['seconds_total']:.0f} s |")
    lines += ["", "Each cell: file size, then the time of that step (fp32: conversion; int8: quantization with its "
              "calibration). Export total includes the reference, calibration and parity steps."]
    (RESULTS / f"export_cost{suffix}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
