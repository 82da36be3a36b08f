"""ExecuTorch (.pte, XNNPACK delegate) as edgekit's third format, measured on MobileNet v2 with Google's weights:
export time per phase, parity against PyTorch on ImageNet photos, the share of the graph XNNPACK takes, and int8
latency against the int8 TFLite file of the same model in the same process (1 thread, same inputs).

    .venv/bin/python benchmarks/executorch_format.py [--runs 50]

Writes benchmarks/results/executorch_format.md and .json. Needs the edgekit[executorch] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from scratch import work_folder  # benchmarks/scratch.py, beside this script


REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def timed(label, fn, log):
    started = time.perf_counter()
    value = fn()
    log[label] = round(time.perf_counter() - started, 2)
    print(f"{label}: {log[label]} s", flush=True)
    return value


def latency(runner, x, runs):
    sample = x[:1]
    for _ in range(5):
        runner(sample)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner(sample)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 2), "mean_ms": round(statistics.fmean(times), 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    phases: dict[str, float] = {}
    timed("import executorch", lambda: __import__("executorch.exir"), phases)
    import torch

    from edgekit.cpu import describe, host_cpu
    from edgekit.exporters.common import edgekit_metadata, export_ready
    from edgekit.exporters.pte import quantize_pte, torch_to_pte
    from edgekit.exporters.tflite import torch_to_tflite
    from edgekit.images import read_labelled_set
    from edgekit.labels import default_labels
    from edgekit.models import create_model
    from edgekit.parity import compare
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.tflite_int8 import quantize_tflite
    from edgekit.runtimes import open_runtime

    torch.set_num_threads(1)
    model = create_model("mobilenet_v2", weights=str(DATA / "tflite" / "mobilenet_v2_1.0_224_quant.tflite"))
    config = model.edgekit_config
    ready = export_ready(model, config.resolution)
    metadata = edgekit_metadata(config, default_labels(config.num_classes))
    items = list(read_labelled_set(DATA / "imagenet-samples" / "labels.csv"))
    calibration = CalibrationSet.from_files([i.path for i in items[:100]], config.preprocessing, config.resolution)
    scored = CalibrationSet.from_files([i.path for i in items[100:150]] or [i.path for i in items[:50]],
                                       config.preprocessing, config.resolution).nchw
    with torch.no_grad():
        reference = model.eval()(torch.from_numpy(scored)).numpy()
    work = work_folder(None, "edgekit-pte-bench-")
    fp32 = timed("pte fp32 export (first in process)", lambda: torch_to_pte(
        ready, work / "m.pte", resolution=config.resolution, metadata=metadata), phases)
    timed("pte fp32 export (again, same process)", lambda: torch_to_pte(
        ready, work / "m2.pte", resolution=config.resolution, metadata=metadata), phases)
    int8 = timed("pte int8 export (calibrate on 100 photos, lower)", lambda: quantize_pte(
        ready, work / "m_int8.pte", calibration, resolution=config.resolution, metadata=metadata), phases)
    timed("tflite fp32 export", lambda: torch_to_tflite(ready, work / "m.tflite", resolution=config.resolution,
                                                       metadata=metadata), phases)
    timed("tflite int8 quantization", lambda: quantize_tflite(work / "m.tflite", work / "m_int8.tflite",
                                                              calibration), phases)
    rows = []
    for name, path in (("pte fp32", "m.pte"), ("pte int8", "m_int8.pte"), ("tflite fp32", "m.tflite"),
                       ("tflite int8", "m_int8.tflite")):
        runner = open_runtime(work / path, threads=1)
        metrics = compare(reference, runner(scored))
        rows.append({"file": name, "bytes": (work / path).stat().st_size, "cosine_mean": round(metrics.cosine_mean, 5),
                     "psnr_db": round(metrics.psnr_db, 2), "top1_agreement": round(metrics.top1_agreement, 3),
                     **latency(runner, scored, args.runs)})
        print(rows[-1], flush=True)
    cpu = describe(host_cpu())
    inside = {"fp32 (first export in the process)": fp32["seconds"], "int8": int8["seconds"]}
    result = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "phases_s": phases,
              "pte_export_phases_s": inside,
              "files": rows, "delegation": {"fp32": fp32["delegation"], "int8": int8["delegation"]},
              "load_average_after": os.getloadavg(), "note": "latency 1 thread, batch 1, same process"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executorch_format.json").write_text(json.dumps(result, indent=2) + "\n")
    share = {k: v["share_delegated"] for k, v in result["delegation"].items()}
    lines = ["# ExecuTorch (.pte) as edgekit's third format: MobileNet v2, Google's weights", "",
             f"CPU: {cpu}, {os.cpu_count()} cores, load average {result['load_average_after'][0]:.1f} at the end (above "
             "1, other jobs shared the cores and the timings are indicative). Parity on "
             f"{len(scored)} ImageNet photos; int8 calibrated on {len(calibration)}; latency 1 thread, batch 1, "
             f"{args.runs} runs, in one process.", "",
             "| step | seconds |", "|---|---|"] + [f"| {k} | {v} |" for k, v in phases.items()] + [
             "", "Inside each .pte export (seconds):", "",
             "| export | " + " | ".join(int8["seconds"]) + " |", "|---|" + "---|" * len(int8["seconds"])] + [
             f"| {name} | " + " | ".join(str(times.get(k, "-")) for k in int8["seconds"]) + " |"
             for name, times in inside.items()] + [
             "", "| file | size | cosine mean | PSNR dB | top-1 agreement | p50 ms | mean ms |", "|---|---|---|---|---|---|---|"] + [
             f"| {r['file']} | {r['bytes'] / 1e6:.2f} MB | {r['cosine_mean']} | {r['psnr_db']} | {r['top1_agreement']} | "
             f"{r['p50_ms']} | {r['mean_ms']} |" for r in rows] + [
             "", f"Share of operators the XNNPACK delegate takes: fp32 {share['fp32']:.1%}, int8 {share['int8']:.1%} "
             f"(left to portable kernels: fp32 {fp32['delegation']['not_delegated']}, int8 "
             f"{int8['delegation']['not_delegated']}).", ""]
    (RESULTS / "executorch_format.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
