"""Models of several inputs or outputs through edgekit export: each output's parity, and what int8 does to it.

The model of tests/test_multi_io.py, on trained weights (the zoo's MobileNet v1 0.25/128 with Google's ImageNet
weights, imported from its .tflite): a Siamese pair that also names what the first picture shows,
``forward(left, right)`` -> the 1000 ImageNet class scores of ``left`` and an L2-normalised embedding of each
picture. It goes through ``edgekit.export`` (fp32 and int8; ONNX, TFLite and ExecuTorch; int8 calibrated on 128 of
the shared ImageNet samples, parity on 16 others). Then every file runs on the ImageNet samples neither used, as
pairs of consecutive pictures: top-1 accuracy of output_0 (labels.csv) and agreement with PyTorch's top-1, and the
same/different decision (distance between output_1 and output_2 at the threshold the manifest records) against
PyTorch's.

    .venv/bin/python benchmarks/multi_io_parity.py [--work DIR]

Writes benchmarks/results/multi_io_parity.md and .json (figures name the CPU and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("EDGEKIT_DATA", "../shared/data"))
sys.path.insert(0, str(ROOT / "tests"))

from test_multi_io import MODELS, V1_SMALL  # noqa: E402  (the same models the tests export)
from scratch import work_folder  # noqa: E402  (benchmarks/scratch.py, beside this script)


def _load_models(work: Path):
    import importlib.util

    path = work / "pairs.py"
    path.write_text(MODELS.format(weights=str((DATA / "tflite" / V1_SMALL).resolve())))
    spec = importlib.util.spec_from_file_location("multi_io_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    import torch

    import edgekit
    from edgekit.cpu import describe, host_cpu
    from edgekit.images import load_batch, read_labelled_set
    from edgekit.runtimes import open_runtime
    from edgekit.types import GOOGLE_QUANT_PREPROCESSING

    torch.set_num_threads(1)
    work = work_folder(args.work, "multi_io.")
    work.mkdir(parents=True, exist_ok=True)
    labelled = read_labelled_set(DATA / "imagenet-samples")
    items = sorted(labelled, key=lambda item: item.path.name)
    # calibration, parity and scoring use disjoint pictures: every other one for calibration, the rest split
    calib, parity, held_out = items[0::2][:128], items[1::2][:16], items[1::2][16:]
    for folder, chosen in ((work / "calib", calib), (work / "parity", parity)):
        folder.mkdir(exist_ok=True)
        for item in chosen:
            target = folder / item.path.name
            if not target.exists():
                target.symlink_to(item.path.resolve())
    models = _load_models(work)
    sample = torch.zeros(1, 3, 128, 128)
    manifest = edgekit.export(models.PairNet(), (sample, sample), task="classifier,embedding,embedding",
                              preprocessing="tf", int8=True, calib=work / "calib", data=work / "parity",
                              formats=("onnx", "tflite", "pte"), latency_runs=0, out=work / "out")
    bundle = work / "out" / "pair_net"
    loaded = load_batch([item.path for item in held_out], 128, GOOGLE_QUANT_PREPROCESSING)
    labels = {item.path.name: item.label for item in held_out}
    truth = np.array([labels[path.name] for path in loaded.files])  # the zoo drops Google's background class
    pictures = loaded.nchw.astype(np.float32)
    left, right = pictures[:-1], pictures[1:]  # consecutive held-out pictures: a pair each
    threshold = manifest.model["outputs"][1]["task"]["distance_threshold"]

    def scored(name: str, scores, a, b) -> dict:
        return {"artifact": name, "top1": float(np.mean(scores.argmax(1) == truth[:-1])),
                "same": np.linalg.norm(a - b, axis=1) < threshold, "scores": scores}

    with torch.no_grad():
        reference = scored("PyTorch", *(t.numpy() for t in models.PairNet().eval()(torch.from_numpy(left),
                                                                                    torch.from_numpy(right))))
    held = [reference] + [scored(a.path, *open_runtime(bundle / a.path).run([left, right]))
                          for a in manifest.artifacts]
    for row in held:
        row["top1_agreement_pytorch"] = float(np.mean(row.pop("scores").argmax(1) ==
                                                      reference["scores"].argmax(1))) if row is not reference else None
        row["decisions_as_pytorch"] = float(np.mean(row["same"] == reference["same"]))
    reference.pop("scores")
    same_share = float(reference["same"].mean())
    for row in held:
        row.pop("same")
    rows = [{"artifact": p.artifact, "output": p.output, "precision": p.precision, "task": p.metrics.task,
             "cosine_mean": p.metrics.cosine_mean, "psnr_db": p.metrics.psnr_db,
             "top1_agreement": p.metrics.top1_agreement, "decision_agreement": p.metrics.decision_agreement,
             "verdict": p.verdict} for p in manifest.parity]
    result = {"cpu": describe(host_cpu()), "held_out_images": len(pictures), "pairs": len(left),
              "threshold": threshold, "pytorch_same_share": same_share, "passed": manifest.passed,
              "parity": rows, "held_out": held}
    print("pair_net", "passed" if manifest.passed else "FAILED", held)
    result["load_average"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "multi_io_parity.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "multi_io_parity.md").write_text(render(result))
    return 0


def _share(value) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


def render(result: dict) -> str:
    lines = ["# A model of several inputs and outputs: parity per output, fp32 and int8, three formats", "",
             f"CPU: {result['cpu']}; 2 cores (load average {result['load_average'][0]:.1f} at the end). Produced by "
             "`benchmarks/multi_io_parity.py`.", "",
             textwrap.fill("Backbone: the zoo's MobileNet v1 0.25/128 with Google's ImageNet weights (imported from "
                           "mobilenet_v1_0.25_128_quant.tflite). pair_net: forward(left, right) -> output_0, the 1000 "
                           "ImageNet class scores of left; output_1 and output_2, an L2-normalised 256-d embedding of "
                           "each picture. int8 calibrated on 128 ImageNet samples, parity on 16 others (input K of a "
                           "sample is the picture K further on) + 4 random; each output is gated on its own task with "
                           "edgekit's default gates.", 116), "",
             "## Export parity, one row per file and output", "",
             "| file | output | task | cosine mean | PSNR dB | top-1 agreement | pair decisions | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["parity"]:
        lines.append(f"| {r['artifact']} | {r['output']} | {r['task']} | {r['cosine_mean']:.4f} | "
                     f"{r['psnr_db']:.1f} | {_share(r['top1_agreement'])} | {_share(r['decision_agreement'])} | "
                     f"{r['verdict']} |")
    lines += ["", f"## On {result['pairs']} pairs of consecutive held-out ImageNet samples (neither calibration nor "
              "parity)", "",
              f"output_0: top-1 accuracy of the left picture against labels.csv, and agreement with PyTorch's top-1. "
              f"Pair decisions: same/different at the manifest's threshold {result['threshold']:.4g} (PyTorch calls "
              f"{result['pytorch_same_share']:.1%} of the pairs same), as PyTorch decides them.", "",
              "| file | top-1 | top-1 as PyTorch | pair decisions as PyTorch |", "|---|---|---|---|"]
    for r in result["held_out"]:
        lines.append(f"| {r['artifact']} | {r['top1']:.1%} | {_share(r.get('top1_agreement_pytorch'))} | "
                     f"{r['decisions_as_pytorch']:.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
