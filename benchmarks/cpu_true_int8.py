"""int8 ONNX on this CPU: the per-channel saturation limit against the alternatives, in one process.

Google's ImageNet MobileNet v2 1.0/224 and v1 0.25/128, imported into edgekit models and exported with edgekit's
exporters; calibration on the 9 everyday photos plus every 5th of the 250 shared ImageNet samples (59 images),
scored on the other 200. Each int8 ONNX variant runs twice: with this host's ONNX Runtime kernels and with graph
optimizations off (QDQ in float, no CPU-specific integer code):

- ``limited``: what edgekit makes, weight levels limited per channel where int16 pair sums could saturate;
- ``unlimited``: the same file without the limit (edgekit before; saturates on x86 without VNNI);
- ``reduce_range``: ORT's 7-bit weights on every layer, the usual advice.

Latency of ``limited`` against ``unlimited`` (1 thread, interleaved rounds): the limit changes weight values
only, so the ratio must stay near 1.00 on every CPU. Every figure is written beside the CPU it was measured on.

    .venv/bin/python benchmarks/cpu_true_int8.py [--data ../shared/data] [--runs 40] [--rounds 5]

Writes benchmarks/results/cpu_true_int8_<cpu>.md and .json (one file per CPU class, so runs on other CPUs add
to the record instead of replacing it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from google_onnx import CALIBRATION_STRIDE, fp32_onnx_and_calibration  # beside this script

from edgekit.cpu import describe, file_slug, host_cpu
from edgekit.parity import compare

ROOT = Path(__file__).resolve().parents[1]

MODELS = {"mobilenet_v2 1.0/224": ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite", None, None),
          "mobilenet_v1 0.25/128": ("mobilenet_v1", "mobilenet_v1_0.25_128_quant.tflite", 0.25, 128)}


def _session(path: Path, float_qdq: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if float_qdq:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: chunk})[0] for chunk in np.array_split(x, max(1, len(x) // 16))])


def _build(key: str, data: Path, work: Path) -> dict:
    import torch

    from edgekit.images import preprocess_file
    from edgekit.quantize.onnx_int8 import quantize_onnx, saturation_summary

    folder = work / re.sub(r"\W+", "_", key)
    folder.mkdir()
    model, fp32, calibration, items = fp32_onnx_and_calibration(*MODELS[key], data, folder)
    config = model.edgekit_config
    scored = [item for i, item in enumerate(items) if i % CALIBRATION_STRIDE]
    inputs = np.stack([preprocess_file(item.path, config.resolution, config.preprocessing) for item in scored])
    with torch.inference_mode():
        reference = torch.cat([model(torch.from_numpy(c)) for c in np.array_split(inputs, 8)]).numpy()
    files = {"limited": folder / "limited.onnx", "unlimited": folder / "unlimited.onnx"}
    started = time.perf_counter()
    limits = quantize_onnx(fp32, files["limited"], calibration)
    seconds = time.perf_counter() - started
    quantize_onnx(fp32, files["unlimited"], calibration, limit_saturation=False)
    files["reduce_range"] = _reduce_range(fp32, folder, calibration, files["unlimited"])
    return {"files": files, "inputs": inputs, "labels": np.array([i.label for i in scored]), "reference": reference,
            "saturation": saturation_summary(limits), "quantize_seconds": seconds}


def _reduce_range(fp32: Path, folder: Path, calibration, like: Path) -> Path:
    """ORT's reduce_range (7-bit weights everywhere), with the same calibrated activation ranges as ``like``."""
    import onnx
    from onnx import numpy_helper

    # rescale every int8 weight channel of the unlimited file to 63 levels: reduce_range's arithmetic, same ranges
    model = onnx.load(str(like))
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not node.input[0].endswith("weight_quantized"):
            continue
        weights = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float64)
        scales = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        shape = (-1,) + (1,) * (weights.ndim - 1)
        real = weights * scales.reshape(shape)
        new_scales = np.where(scales > 0, np.abs(real).reshape(len(scales), -1).max(1) / 63, scales)
        new_scales = np.where(new_scales > 0, new_scales, scales)
        initializers[node.input[0]].CopyFrom(numpy_helper.from_array(
            np.clip(np.round(real / new_scales.reshape(shape)), -63, 63).astype(np.int8), node.input[0]))
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(new_scales.astype(np.float32), node.input[1]))
        bias_name = node.input[0].replace("weight_quantized", "bias_quantized")
        if bias_name in initializers:
            bias_scale = initializers[bias_name + "_scale"]
            old = numpy_helper.to_array(bias_scale).astype(np.float64)
            ratio = new_scales / np.where(scales > 0, scales, 1)
            bias = numpy_helper.to_array(initializers[bias_name]).astype(np.float64) * old
            initializers[bias_name].CopyFrom(numpy_helper.from_array(
                np.round(bias / (old * ratio)).astype(np.int32), bias_name))
            bias_scale.CopyFrom(numpy_helper.from_array((old * ratio).astype(np.float32), bias_scale.name))
    path = folder / "reduce_range.onnx"
    onnx.save(model, str(path))
    return path


def _latency(paths: dict[str, Path], x: np.ndarray, runs: int, rounds: int) -> dict[str, float]:
    sessions = {k: _session(p, False) for k, p in paths.items()}
    name = next(iter(sessions.values())).get_inputs()[0].name
    sample = x[:1]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for session in sessions.values():
        for _ in range(5):
            session.run(None, {name: sample})
    for _ in range(rounds):
        for key, session in sessions.items():
            for _ in range(runs):
                started = time.perf_counter()
                session.run(None, {name: sample})
                times[key].append((time.perf_counter() - started) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpu = host_cpu()
    rows, record = [], {"cpu": cpu, "cpu_described": describe(cpu), "load_before": os.getloadavg(), "models": {}}
    print(f"CPU: {describe(cpu)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgekit-cpu-int8-") as work:
        for key in MODELS:
            print(f"{key}: export and quantize", file=sys.stderr)
            built = _build(key, args.data, Path(work))
            fp32_top1 = float((built["reference"].argmax(1) == built["labels"]).mean())
            entry = {"fp32_top1": fp32_top1, "saturation": built["saturation"],
                     "quantize_seconds": round(built["quantize_seconds"], 1), "variants": {}}
            for variant, path in built["files"].items():
                for route, float_qdq in (("host kernels", False), ("float QDQ", True)):
                    outputs = _run(_session(path, float_qdq), built["inputs"])
                    metrics = compare(built["reference"], outputs)
                    top1 = float((outputs.argmax(1) == built["labels"]).mean())
                    entry["variants"][f"{variant} / {route}"] = {"top1": top1, "cosine_mean": metrics.cosine_mean,
                                                                 "psnr_db": metrics.psnr_db}
                    rows.append([key, variant, route, f"{top1:.1%}", f"{fp32_top1:.1%}",
                                 f"{metrics.cosine_mean:.4f}", f"{metrics.psnr_db:.1f}"])
            latency = _latency({k: built["files"][k] for k in ("limited", "unlimited")}, built["inputs"], args.runs,
                               args.rounds)
            entry["latency_ms_p50_1_thread"] = latency
            entry["limited_vs_unlimited"] = latency["limited"] / latency["unlimited"]
            record["models"][key] = entry
    record["load_after"] = os.getloadavg()
    from edgekit.table import markdown_table

    slug = file_slug(cpu)
    out = ROOT / "benchmarks" / "results"
    lines = [f"# int8 ONNX on {describe(cpu)}", "",
             f"`.venv/bin/python benchmarks/cpu_true_int8.py`; 200 held-out ImageNet samples, 59 calibration images; "
             f"load average {record['load_before'][0]:.1f} before, {record['load_after'][0]:.1f} after.", "",
             markdown_table(["model", "int8 ONNX", "computed by", "top-1", "fp32 top-1", "cosine mean", "PSNR dB"],
                            rows), ""]
    for key, entry in record["models"].items():
        s = entry["saturation"]
        lines += [f"- {key}: {s['channels_limited']} of {s['channels']} weight channels limited in "
                  f"{s['layers_limited']} of {s['layers']} layers (fewest levels {s['min_levels']}); quantization "
                  f"{entry['quantize_seconds']} s; latency p50 1 thread limited {entry['latency_ms_p50_1_thread']['limited']:.2f} ms "
                  f"vs unlimited {entry['latency_ms_p50_1_thread']['unlimited']:.2f} ms "
                  f"({entry['limited_vs_unlimited']:.2f}x)"]
    (out / f"cpu_true_int8_{slug}.md").write_text("\n".join(lines) + "\n")
    (out / f"cpu_true_int8_{slug}.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
