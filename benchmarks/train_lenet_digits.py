"""LeNet-5 trained on real handwritten digits, exported by edgekit, int8 judged on held-out digits.

scikit-learn's 1,797 digits (8x8, upsampled to 32x32) are split 75/25, stratified and seeded. LeNet-5 (the zoo's
``lenet5``, one grey channel) trains on the 1,347 training digits with Adam; its state_dict is saved; then
``edgekit.pipeline.run_export`` makes fp32 and int8 ONNX and TFLite files, int8 calibrated on 200 training
digits, parity checked on 16 held-out digits. Every file then classifies the 450 held-out digits through edgekit's
runtimes (the host's kernels), and the table gives its accuracy against the PyTorch model's.

The files take one grey channel ([1, 32, 32, 1] in TFLite): edgekit turns a picture into 8-bit luma as Pillow
does, which for these grey digits is the digit itself.

    .venv/bin/python benchmarks/train_lenet_digits.py [--epochs 10] [--work DIR]

Writes benchmarks/results/train_lenet_digits.md and .json. The machine is shared with other engineers: the
training time is what it was under that load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from trained_tasks import (as_trained, digit_inputs, digit_pictures, digits_split, export_bundle,  # noqa: E402
                           predict, save_images, save_state, score_files, train)
from scratch import work_folder  # noqa: E402  (benchmarks/scratch.py, beside this script)

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib", type=int, default=200, help="training digits to calibrate int8 on")
    parser.add_argument("--work", type=Path, default=None, help="keep the weights and bundle here")
    args = parser.parse_args()

    import torch

    from edgekit.cpu import describe, host_cpu
    from edgekit.models import create_model

    torch.set_num_threads(1)  # repeatable, and fair to the others sharing this machine
    work = work_folder(args.work, "lenet_digits.")
    split = digits_split(seed=args.seed)
    torch.manual_seed(args.seed)  # the initial weights too
    model = create_model("lenet5")
    preprocessing = model.edgekit_config.preprocessing
    started = time.perf_counter()
    train(model, digit_inputs(split.train_x, preprocessing), split.train_y, epochs=args.epochs, lr=args.lr,
          seed=args.seed, log=lambda line: print(f"  {line}", flush=True))
    train_seconds = time.perf_counter() - started
    weights = save_state(model, work / "lenet5_digits.pt")

    held_out = digit_inputs(split.test_x, preprocessing)
    pytorch = float(np.mean(predict(model, held_out).argmax(1) == split.test_y))
    print(f"PyTorch fp32 held-out accuracy {pytorch:.2%} after {train_seconds:.0f} s", flush=True)

    rng = np.random.default_rng(args.seed)
    calib = save_images(digit_pictures(split.train_x[rng.choice(len(split.train_x), args.calib, replace=False)]),
                        work / "calib")
    parity = save_images(digit_pictures(split.test_x[::len(split.test_x) // 16][:16]), work / "parity")
    labels = work / "labels.txt"
    labels.write_text("".join(f"{d}\n" for d in range(10)))
    manifest, bundle = export_bundle(as_trained(model, weights), work / "exports", calib, parity, labels,
                                     calib_samples=args.calib)
    rows = score_files(bundle, manifest, held_out,
                       lambda out: {"accuracy": float(np.mean(out.argmax(1) == split.test_y))})
    fp32 = {r["format"]: r["accuracy"] for r in rows if r["precision"] == "fp32"}
    for row in rows:
        row["vs_fp32_points"] = round(100 * (row["accuracy"] - fp32[row["format"]]), 2)
    cpu = describe(host_cpu())
    result = {"cpu": cpu, "load_average": os.getloadavg(), "train": {"digits": len(split.train_y),
              "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "seconds": round(train_seconds, 1)},
              "held_out": len(split.test_y), "pytorch_fp32_accuracy": pytorch, "files": rows,
              "manifest_passed": manifest.passed}
    write_results(result)
    worst = min(r["vs_fp32_points"] for r in rows if r["precision"] == "int8")
    print(f"int8 worst: {worst:+.2f} points against its fp32 file (goal: within 1 point)")
    return 0 if manifest.passed and worst >= -1.0 else 1


def write_results(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_lenet_digits.json").write_text(json.dumps(result, indent=2) + "\n")
    t = result["train"]
    lines = [
        "# LeNet-5 trained on scikit-learn's digits: fp32 and int8 accuracy on held-out digits",
        "",
        f"CPU: {result['cpu']}; the machine was shared with other engineers (load average "
        f"{result['load_average'][0]:.1f} at the end). Produced by `benchmarks/train_lenet_digits.py`.",
        "",
        f"Training: {t['digits']} digits, {t['epochs']} epochs of Adam (lr {t['lr']}, cosine decay, seed {t['seed']}), "
        f"{t['seconds']:.0f} s on one thread. Held out: {result['held_out']} digits (25%, stratified). int8: "
        "calibrated on 200 training digits; parity on 16 held-out digits. The files take one grey channel and run "
        "through edgekit's runtimes with the host's kernels.",
        "",
        f"PyTorch fp32: **{result['pytorch_fp32_accuracy']:.2%}**",
        "",
        "| file | precision | size | held-out accuracy | vs its fp32 file | export parity |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["files"]:
        lines.append(f"| {r['file']} | {r['precision']} | {r['bytes'] / 1024:.1f} kB | {r['accuracy']:.2%} | "
                     f"{r['vs_fp32_points']:+.2f} points | {r['parity']} |")
    (RESULTS / "train_lenet_digits.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
