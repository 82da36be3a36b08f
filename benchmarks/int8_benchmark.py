"""int8 against fp32: accuracy on real weights, quantization error, and latency, in one process.

1. Accuracy (real weights only): Google's ImageNet MobileNet v2 1.0/224 and v1 0.25/128, 0.5/160, 0.75/192
   files imported into edgekit models, exported with edgekit's exporters, quantized with edgekit's int8
   back-ends. Calibration: the 9 everyday photos plus every 5th of the 250 shared ImageNet samples (59
   images); top-1/top-5 are scored on the other 200, against the PyTorch fp32 model on the same images.
   Parity (cosine, PSNR, top-k agreement vs PyTorch) is measured on those 200 and on the export pipeline's
   default parity inputs (the 12 built-in photos + 4 random pictures), which is what the int8 gates see.
2. Calibration methods (ONNX, MobileNet v2): minmax, percentile, entropy; and what an int8 file calibrated
   on the built-in photos alone scores.
3. EfficientNet-B0 and EfficientNet-Lite0: no trained weights exist offline, so no accuracy. Their random
   weights get batch-norm statistics re-estimated on real photos (so activations have realistic scales and no
   denormal floats, which would slow fp32 kernels and flatter int8); quantization error vs fp32 is reported
   as such, not as accuracy.
4. Latency: fp32 vs int8 in LiteRT (XNNPACK) and ONNX Runtime, 1 and 2 threads, interleaved rounds in this
   one process, plus Google's mobilenet_v2_1.0_224_quant.tflite in the same interpreter. Also the ONNX
   Runtime choices behind edgekit's defaults: int8 activations (S8S8) vs uint8 (U8S8), and EfficientNet-B0
   with Sigmoid/Mul kept in float.

    .venv/bin/python benchmarks/int8_benchmark.py [--data ../shared/data] [--runs 40] [--rounds 5]
                                                  [--skip-entropy] [--work DIR]

Writes benchmarks/results/int8_<cpu>.md and .json (one per CPU class). Other engineers share this machine's 2 cores: timings are
medians over interleaved rounds, and the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.cpu import describe, file_slug, host_cpu
from scratch import work_folder  # benchmarks/scratch.py, beside this script

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CALIBRATION_STRIDE = 5

REAL_MODELS = {  # label: (registry name, shared .tflite, width, resolution)
    "mobilenet_v2_1.0_224": ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite", None, None),
    "mobilenet_v1_0.25_128": ("mobilenet_v1", "mobilenet_v1_0.25_128_quant.tflite", 0.25, 128),
    "mobilenet_v1_0.5_160": ("mobilenet_v1", "mobilenet_v1_0.5_160_quant.tflite", 0.5, 160),
    "mobilenet_v1_0.75_192": ("mobilenet_v1", "mobilenet_v1_0.75_192_quant.tflite", 0.75, 192),
}
UNTRAINED_MODELS = ("efficientnet_b0", "efficientnet_lite0")
LATENCY_MODELS = ("mobilenet_v2_1.0_224", "mobilenet_v1_0.75_192", "efficientnet_b0", "efficientnet_lite0")
GOOGLE_V2 = "mobilenet_v2_1.0_224_quant.tflite"


@dataclass
class Prepared:
    label: str
    model: object
    fp32: dict[str, Path]
    int8: dict[str, Path] = field(default_factory=dict)
    trained: bool = True
    quantize_seconds: dict[str, float] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[int8-bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ models
def export_fp32(model, folder: Path, label: str) -> dict[str, Path]:
    from edgekit.exporters.common import edgekit_metadata, export_ready
    from edgekit.exporters.onnx import torch_to_onnx
    from edgekit.exporters.tflite import torch_to_tflite
    from edgekit.labels import default_labels

    config = model.edgekit_config
    ready = export_ready(model, config.resolution)
    metadata = edgekit_metadata(config, default_labels(config.num_classes))
    paths = {"onnx": folder / f"{label}.onnx", "tflite": folder / f"{label}.tflite"}
    torch_to_onnx(ready, paths["onnx"], resolution=config.resolution, metadata=metadata)
    torch_to_tflite(ready, paths["tflite"], resolution=config.resolution, metadata=metadata)
    return paths


def reestimate_batch_norm(model, images: np.ndarray) -> None:
    """Untrained network, realistic activations: batch-norm statistics from real photos (cumulative average),
    every other module in eval mode (no stochastic depth, no dropout)."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for chunk in np.array_split(images, max(1, len(images) // 8)):
            model(torch.from_numpy(chunk))
    model.eval()


def quantize_both(prepared: Prepared, calibration, folder: Path, suffix: str = "int8", **onnx_options) -> dict:
    from edgekit.quantize.onnx_int8 import quantize_onnx
    from edgekit.quantize.tflite_int8 import quantize_tflite

    paths = {"onnx": folder / f"{prepared.label}_{suffix}.onnx", "tflite": folder / f"{prepared.label}_{suffix}.tflite"}
    started = time.perf_counter()
    quantize_onnx(prepared.fp32["onnx"], paths["onnx"], calibration, **onnx_options)
    prepared.quantize_seconds[f"onnx_{suffix}"] = time.perf_counter() - started
    started = time.perf_counter()
    quantize_tflite(prepared.fp32["tflite"], paths["tflite"], calibration)
    prepared.quantize_seconds[f"tflite_{suffix}"] = time.perf_counter() - started
    return paths


# --------------------------------------------------------------------------------------------- accuracy
def top_k(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    order = np.argsort(-logits, axis=1)[:, :5]
    return float((order[:, 0] == labels).mean()), float((order == labels[:, None]).any(axis=1).mean())


def torch_logits(model, inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch.cat([model(torch.from_numpy(c)) for c in np.array_split(inputs, max(1, len(inputs) // 32))]).numpy()


def parity(reference: np.ndarray, outputs: np.ndarray, real: np.ndarray | None = None) -> dict:
    from edgekit.parity import compare

    m = compare(reference, outputs, real)
    return {"top1_agreement": m.top1_agreement, "top5_agreement": m.top5_agreement, "cosine_min": m.cosine_min,
            "cosine_mean": m.cosine_mean, "psnr_db": m.psnr_db}


def loss_by_op(model, prepared: Prepared, inputs: np.ndarray) -> list[dict]:
    """Mean and worst per-layer loss (dB, edgekit.layerwise) of the int8 ONNX file, grouped by op type and the
    PyTorch module it belongs to: how much SiLU and squeeze-and-excite cost next to the convolutions."""
    from edgekit.layerwise import compare_layers

    report = compare_layers(prepared.int8["onnx"], prepared.fp32["onnx"], inputs)
    groups: dict[str, list[float]] = {}
    for layer in report.layers:
        if layer.loss_db is None:
            continue
        try:
            owner = type(model.get_submodule(layer.layer)).__name__
        except AttributeError:
            owner = "-"
        if layer.op == "Conv":
            conv = model.get_submodule(layer.layer)
            parent = model.get_submodule(layer.layer.rsplit(".", 1)[0]) if "." in layer.layer else None
            owner = "SqueezeExcitation" if type(parent).__name__ == "SqueezeExcitation" else \
                ("depthwise" if conv.groups > 1 else "conv")
        groups.setdefault(f"{layer.op} ({owner})", []).append(layer.loss_db)
    return [{"model": prepared.label, "group": group, "layers": len(losses), "mean_loss_db": float(np.mean(losses)),
             "max_loss_db": float(np.max(losses))} for group, losses in sorted(groups.items())]


# ---------------------------------------------------------------------------------------------- latency
class Timed:
    """One file in one runtime with a fixed real input; ``once()`` runs it, ``times`` collects seconds."""

    def __init__(self, label: str, path: Path, runtime: str, threads: int, image_nchw: np.ndarray):
        self.label, self.path, self.runtime, self.threads = label, path, runtime, threads
        self.times: list[float] = []
        if runtime == "litert":
            from ai_edge_litert.interpreter import Interpreter

            from edgekit.runtimes import quantize

            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
            detail = self.interpreter.get_input_details()[0]
            x = np.moveaxis(image_nchw, 1, -1)
            scale, zero_point = detail["quantization"]
            if np.dtype(detail["dtype"]).kind in "iu" and scale:
                x = quantize(x, scale, zero_point, np.dtype(detail["dtype"]))
            self.interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
            self.once = self.interpreter.invoke
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: image_nchw.astype(np.float32)}
            self.once = lambda: session.run(None, feed)

    def round(self, runs: int) -> None:
        self.once()  # warm the caches after the other files ran
        for _ in range(runs):
            started = time.perf_counter()
            self.once()
            self.times.append(time.perf_counter() - started)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1000.0

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.times, 90)) * 1000.0


def measure(timed: list[Timed], runs: int, rounds: int) -> None:
    for t in timed:  # warm-up: first invokes allocate and pack weights
        for _ in range(5):
            t.once()
    for r in range(rounds):
        log(f"latency round {r + 1}/{rounds}")
        for t in timed:
            t.round(runs)


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=int, default=40, help="timed invokes per file per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--skip-entropy", action="store_true", help="entropy calibration takes ~2 min")
    parser.add_argument("--work", type=Path, help="keep the exported files here")
    args = parser.parse_args(argv)

    import torch

    import edgekit
    from edgekit.images import preprocess_file, read_labelled_set
    from edgekit.parity import build_inputs, is_real
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.tflite_int8 import integer_report
    from edgekit.runtimes import open_runtime
    from edgekit.sample_images import sample_image_paths

    torch.set_num_threads(2)
    load_before = os.getloadavg()
    started_all = time.perf_counter()
    work = work_folder(args.work, "edgekit-int8-bench-")
    items = read_labelled_set(args.data / "imagenet-samples" / "labels.csv")
    calibration_files = sorted((args.data / "photos").iterdir()) + [it.path for it in items[::CALIBRATION_STRIDE]]
    scored = [it for i, it in enumerate(items) if i % CALIBRATION_STRIDE]
    labels = np.array([it.label for it in scored])
    results: dict = {"accuracy": [], "parity_builtin_photos": [], "methods": [], "untrained": [], "latency": [],
                     "sizes": [], "integer": {}, "loss_by_op": []}
    prepared: dict[str, Prepared] = {}

    # 1. real weights: accuracy and parity
    for label, (name, weights, width, resolution) in REAL_MODELS.items():
        log(f"{label}: import, export, quantize")
        model = edgekit.create_model(name, weights=args.data / "tflite" / weights, width=width, resolution=resolution)
        config = model.edgekit_config
        p = Prepared(label, model, export_fp32(model, work, label))
        calibration = CalibrationSet.from_files(calibration_files, config.preprocessing, config.resolution,
                                                source="photos + every 5th ImageNet sample")
        p.int8 = quantize_both(p, calibration, work)
        prepared[label] = p
        inputs = np.stack([preprocess_file(it.path, config.resolution, config.preprocessing) for it in scored])
        reference = torch_logits(model, inputs)
        row = {"model": label, "images": len(labels), "calibration_images": len(calibration),
               "pytorch_fp32": dict(zip(("top1", "top5"), top_k(reference, labels)))}
        for kind, paths in (("fp32", p.fp32), ("int8", p.int8)):
            for fmt, path in paths.items():
                outputs = open_runtime(path)(inputs)
                row[f"{fmt}_{kind}"] = dict(zip(("top1", "top5"), top_k(outputs, labels))) | (
                    parity(reference, outputs) if kind == "int8" else {})
        row["quantize_seconds"] = p.quantize_seconds
        results["accuracy"].append(row)
        results["integer"][label] = integer_report(p.int8["tflite"])
        results["sizes"].append({"model": label, **{f"{fmt}_{kind}": paths[fmt].stat().st_size
                                                    for kind, paths in (("fp32", p.fp32), ("int8", p.int8))
                                                    for fmt in ("onnx", "tflite")}})
        pipeline_inputs = build_inputs(sample_image_paths(), config.preprocessing, config.resolution, 16, 4)
        pipeline_reference = torch_logits(model, pipeline_inputs.nchw)
        real = is_real(pipeline_inputs.sources)
        for fmt, path in p.int8.items():
            results["parity_builtin_photos"].append(
                {"model": label, "format": fmt, "inputs": f"{int(real.sum())} built-in photos + {int((~real).sum())} random",
                 **parity(pipeline_reference, open_runtime(path)(pipeline_inputs.nchw), real)})

        if label == "mobilenet_v2_1.0_224":
            # 2. calibration choices on the flagship model
            from edgekit.quantize.onnx_int8 import quantize_onnx
            from edgekit.quantize.tflite_int8 import quantize_tflite

            methods = ["minmax", "percentile"] + ([] if args.skip_entropy else ["entropy"])
            for method in methods:
                path = work / f"{label}_{method}.onnx"
                started = time.perf_counter()
                quantize_onnx(p.fp32["onnx"], path, calibration, method=method)
                seconds = time.perf_counter() - started
                outputs = open_runtime(path)(inputs)
                results["methods"].append({"model": label, "format": "onnx", "calibration": f"{method}, 59 images",
                                           "seconds": seconds, **dict(zip(("top1", "top5"), top_k(outputs, labels))),
                                           **parity(reference, outputs)})
            builtin = CalibrationSet.from_files(sample_image_paths(), config.preprocessing, config.resolution,
                                                source="builtin")
            for fmt in ("onnx", "tflite"):
                path = work / f"{label}_builtin_calibration.{fmt}"
                started = time.perf_counter()
                (quantize_onnx if fmt == "onnx" else quantize_tflite)(p.fp32[fmt], path, builtin)
                seconds = time.perf_counter() - started
                outputs = open_runtime(path)(inputs)
                results["methods"].append({"model": label, "format": fmt,
                                           "calibration": "minmax, 12 built-in photos only", "seconds": seconds,
                                           **dict(zip(("top1", "top5"), top_k(outputs, labels))),
                                           **parity(reference, outputs)})

    # 3. untrained EfficientNets: quantization error only
    for name in UNTRAINED_MODELS:
        log(f"{name}: random weights, batch-norm statistics from real photos, export, quantize")
        torch.manual_seed(0)  # the same untrained network on every run
        model = edgekit.create_model(name, weights="random")
        config = model.edgekit_config
        reestimate_batch_norm(model, np.stack([preprocess_file(f, config.resolution, config.preprocessing)
                                               for f in calibration_files[:48]]))
        p = Prepared(name, model, export_fp32(model, work, name), trained=False)
        calibration = CalibrationSet.from_files(calibration_files, config.preprocessing, config.resolution)
        p.int8 = quantize_both(p, calibration, work)
        if name == "efficientnet_b0":
            from edgekit.quantize.onnx_int8 import quantize_onnx

            p.int8["onnx_s8s8"] = work / f"{name}_s8s8.onnx"
            quantize_onnx(p.fp32["onnx"], p.int8["onnx_s8s8"], calibration, activation_type="int8")
            p.int8["onnx_float_silu"] = work / f"{name}_float_silu.onnx"
            ops = ("Conv", "Gemm", "Add", "GlobalAveragePool", "Flatten")
            quantize_onnx(p.fp32["onnx"], p.int8["onnx_float_silu"], calibration, op_types=ops)
        prepared[name] = p
        inputs = np.stack([preprocess_file(it.path, config.resolution, config.preprocessing) for it in scored[:64]])
        reference = torch_logits(model, inputs)
        for fmt in ("onnx", "tflite"):
            results["untrained"].append({"model": name, "format": fmt, "images": len(inputs),
                                         **parity(reference, open_runtime(p.int8[fmt])(inputs))})
        results["loss_by_op"] += loss_by_op(model, p, inputs[:8])
        results["integer"][name] = integer_report(p.int8["tflite"])
        results["sizes"].append({"model": name, **{f"{fmt}_{kind}": paths[fmt].stat().st_size
                                                   for kind, paths in (("fp32", p.fp32), ("int8", p.int8))
                                                   for fmt in ("onnx", "tflite")}})

    # 4. latency, interleaved
    timed: list[Timed] = []
    for label in LATENCY_MODELS:
        p = prepared[label]
        config = p.model.edgekit_config
        image = preprocess_file(calibration_files[0], config.resolution, config.preprocessing)[None]
        for threads in (1, 2):
            for runtime, fmt in (("litert", "tflite"), ("onnxruntime", "onnx")):
                timed.append(Timed(f"{label}|{runtime}|fp32", p.fp32[fmt], runtime, threads, image))
                timed.append(Timed(f"{label}|{runtime}|int8", p.int8[fmt], runtime, threads, image))
            for variant in ("onnx_s8s8", "onnx_float_silu"):
                if variant in p.int8:
                    timed.append(Timed(f"{label}|onnxruntime|int8 {variant[5:]}", p.int8[variant], "onnxruntime",
                                       threads, image))
            if label == "mobilenet_v2_1.0_224":
                timed.append(Timed(f"{label}|litert|google uint8", args.data / "tflite" / GOOGLE_V2, "litert",
                                   threads, image))
    measure(timed, args.runs, args.rounds)
    for t in timed:
        model_label, runtime, variant = t.label.split("|")
        results["latency"].append({"model": model_label, "runtime": runtime, "variant": variant,
                                   "threads": t.threads, "median_ms": t.median_ms, "p90_ms": t.p90_ms,
                                   "samples": len(t.times)})

    results["environment"] = {
        "command": " ".join(["python", "benchmarks/int8_benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": describe(host_cpu()), "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "seconds": time.perf_counter() - started_all,
        "versions": {m: _version(m) for m in ("onnxruntime", "ai-edge-litert", "ai-edge-quantizer", "litert-torch",
                                               "torch")}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = file_slug(host_cpu())  # one result per CPU class: int8 speed and exactness differ between them
    (RESULTS / f"int8_{slug}.json").write_text(json.dumps(results, indent=2, default=_plain) + "\n")
    (RESULTS / f"int8_{slug}.md").write_text(render(results))
    print(render(results))
    return 0


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


# ----------------------------------------------------------------------------------------------- render
def render(results: dict) -> str:
    from edgekit.table import markdown_table

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = ["# int8 vs fp32: accuracy, quantization error, latency", "",
             f"`{results['environment']['command']}` — {results['environment']['machine']}, "
             f"{results['environment']['cpus']} cores shared with other work (load average "
             f"{results['environment']['load_average_before'][0]:.2f} before, "
             f"{results['environment']['load_average_after'][0]:.2f} after); "
             + ", ".join(f"{k} {v}" for k, v in results["environment"]["versions"].items()), "",
             "## Accuracy on real weights", "",
             "Google's ImageNet MobileNets imported into edgekit models. Calibration: 9 everyday photos + every 5th "
             "shared ImageNet sample (59 images, minmax); scored on the other 200 images (top-1 / top-5 %, "
             "agreement and cosine against PyTorch fp32 on the same images).", ""]
    rows = []
    for r in results["accuracy"]:
        fp = r["pytorch_fp32"]
        cells = [r["model"], f"{pct(fp['top1'])} / {pct(fp['top5'])}"]
        for key in ("onnx_fp32", "tflite_fp32", "onnx_int8", "tflite_int8"):
            cells.append(f"{pct(r[key]['top1'])} / {pct(r[key]['top5'])}")
        for key in ("onnx_int8", "tflite_int8"):
            a = r[key]
            cells.append(f"{pct(a['top1_agreement'])} / {a['cosine_mean']:.4f} / {a['psnr_db']:.1f}")
        cells.append(f"{pct(r['tflite_int8']['top1'] - fp['top1'])} / {pct(r['onnx_int8']['top1'] - fp['top1'])}")
        rows.append(cells)
    lines += [markdown_table(["model", "PyTorch fp32", "ONNX fp32", "TFLite fp32", "ONNX int8", "TFLite int8",
                              "ONNX int8 agree / cos mean / PSNR", "TFLite int8 agree / cos mean / PSNR",
                              "top-1 change TFLite / ONNX (points)"], rows), ""]

    lines += ["## Parity on the export pipeline's default inputs (what the int8 gates see)", "",
              "12 built-in photos (textures, a galaxy, a retina: out of ImageNet's distribution, many near-ties) "
              "+ 4 random pictures; top-k agreement on the photos, cosine and PSNR on all 16.", ""]
    rows = [[r["model"], r["format"], pct(r["top1_agreement"]), pct(r["top5_agreement"]), f"{r['cosine_min']:.4f}",
             f"{r['cosine_mean']:.4f}", f"{r['psnr_db']:.1f}"] for r in results["parity_builtin_photos"]]
    lines += [markdown_table(["model", "format", "top-1 agree %", "top-5 agree %", "cosine min", "cosine mean",
                              "PSNR dB"], rows), ""]

    lines += ["## Calibration choices (MobileNet v2 1.0/224, 200 scored images)", ""]
    rows = [[r["format"], r["calibration"], f"{r['seconds']:.1f}", f"{pct(r['top1'])} / {pct(r['top5'])}",
             pct(r["top1_agreement"]), pct(r["top5_agreement"]), f"{r['cosine_mean']:.4f}", f"{r['psnr_db']:.1f}"]
            for r in results["methods"]]
    lines += [markdown_table(["format", "calibration", "seconds", "top-1 / top-5 %", "top-1 agree %",
                              "top-5 agree %", "cosine mean", "PSNR dB"], rows), ""]

    lines += ["## EfficientNet-B0 and Lite0: quantization error only (no trained weights offline)", "",
              "Random weights with batch-norm statistics re-estimated on 48 real photos, so activations have "
              "realistic scales. Agreement with fp32 on an untrained network says nothing about accuracy; cosine "
              "and PSNR show how much int8 perturbs the logits (64 ImageNet images).", ""]
    rows = [[r["model"], r["format"], f"{r['cosine_min']:.4f}", f"{r['cosine_mean']:.4f}", f"{r['psnr_db']:.1f}",
             pct(r["top1_agreement"])] for r in results["untrained"]]
    lines += [markdown_table(["model", "format", "cosine min", "cosine mean", "PSNR dB", "top-1 agree % (untrained)"],
                             rows), ""]

    lines += ["Per-layer loss (`edgekit.layerwise`, int8 ONNX vs fp32 ONNX, 8 images): dB of SQNR each layer "
              "takes off, grouped by op and the module it belongs to. The loss of SiLU (Sigmoid + Mul) and of "
              "squeeze-and-excite next to the convolutions is what EfficientNet pays for them.", ""]
    rows = [[r["model"], r["group"], str(r["layers"]), f"{r['mean_loss_db']:.2f}", f"{r['max_loss_db']:.2f}"]
            for r in results["loss_by_op"]]
    lines += [markdown_table(["model", "op (module)", "layers", "mean loss dB", "max loss dB"], rows), ""]

    lines += ["## Sizes and integer check", ""]
    rows = []
    for s in results["sizes"]:
        report = results["integer"][s["model"]]
        rows.append([s["model"], f"{s['tflite_fp32'] / 1e6:.2f}", f"{s['tflite_int8'] / 1e6:.2f}",
                     f"{s['tflite_int8'] / s['tflite_fp32']:.3f}", f"{s['onnx_int8'] / s['onnx_fp32']:.3f}",
                     "yes" if report["fully_integer"] else "NO: " + "; ".join(report["problems"][:2]),
                     ", ".join(f"{k} {v}" for k, v in report["required_int8_ops"].items())])
    lines += [markdown_table(["model", "TFLite fp32 MB", "TFLite int8 MB", "TFLite int8/fp32", "ONNX int8/fp32",
                              "TFLite fully integer", "int8 ops"], rows), ""]

    lines += ["## Latency (median ms of interleaved rounds; p90 in JSON)", ""]
    latency = results["latency"]
    by_key = {(r["model"], r["runtime"], r["variant"], r["threads"]): r["median_ms"] for r in latency}
    rows = []
    for r in latency:
        fp32 = by_key.get((r["model"], r["runtime"], "fp32", r["threads"]))
        google = by_key.get((r["model"], "litert", "google uint8", r["threads"]))
        ratio = f"{r['median_ms'] / fp32:.2f}x" if fp32 and r["variant"] != "fp32" else ""
        vs_google = f"{r['median_ms'] / google:.2f}x" if google and r["runtime"] == "litert" and \
            r["variant"] == "int8" else ""
        rows.append([r["model"], r["runtime"], r["variant"], str(r["threads"]), f"{r['median_ms']:.2f}", ratio,
                     vs_google])
    lines += [markdown_table(["model", "runtime", "file", "threads", "median ms", "vs fp32", "vs Google uint8"],
                             rows), "",
              "Goals (issue 5): edgekit's int8 MobileNet v2 at most 0.5x Google's uint8 file and at most 0.6x its "
              "own fp32 file in LiteRT on 1 thread. `int8 s8s8`: int8 activations instead of uint8; "
              "`int8 float_silu`: Sigmoid and Mul left in float (the choices edgekit's defaults avoid).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
