"""A small U-Net trained to segment shapes painted onto real photos, exported by edgekit, int8 judged per pixel.

The task (tests/trained_tasks.py): circles, squares and triangles in random colours painted onto random crops of
the shared everyday photos (../shared/data/photos); the mask is the painted pixels, so every label is exact.
Training images use 6 of the photos, held-out images the other 3 (grace_hopper, owl, sunflower), so the held-out
score is on backgrounds the network never saw. The zoo's ``unet`` at width 0.125 (8 base channels, depth 4)
with batch norm after each convolution (folded into the convolutions by edgekit's prepare step) trains with Adam
and class-balanced cross-entropy; its state_dict is saved; ``edgekit.pipeline.run_export`` makes fp32 and int8
ONNX and TFLite files (int8 calibrated on 128 training images, parity on 16 held-out images); then every file
segments the held-out images through edgekit's runtimes and the table gives per-pixel accuracy and IoU per class,
against the PyTorch model's and against the exact masks.

    .venv/bin/python benchmarks/train_unet_shapes.py [--resolution 32] [--epochs 30] [--work DIR]

Writes benchmarks/results/train_unet_shapes.md and .json. The machine is shared with other engineers: the
training time is what it was under that load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from trained_tasks import (SHAPE_CLASSES, as_trained, export_bundle, predict, save_images,  # noqa: E402
                           save_state, score_files, segmentation_scores, shapes_split, train)
from scratch import work_folder  # noqa: E402  (benchmarks/scratch.py, beside this script)

RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("EDGEKIT_DATA", "../shared/data"))


def build_unet(resolution: int, width: float, seed: int):
    """The zoo's U-Net configuration for the shapes classes, with batch norm (helps a short training run)."""
    import torch

    from edgekit.models.registry import resolve_config
    from edgekit.models.unet import UNet

    config = resolve_config("unet", width=width, resolution=resolution, num_classes=len(SHAPE_CLASSES))
    torch.manual_seed(seed)
    model = UNet(3, config.num_classes, base_channels=max(1, round(64 * width)), batch_norm=True)
    model.edgekit_config = replace(config, labels=SHAPE_CLASSES)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--test", type=int, default=300, help="held-out images")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the weights and bundle here")
    args = parser.parse_args()

    import torch

    from edgekit.cpu import describe, host_cpu
    from edgekit.images import normalize

    torch.set_num_threads(1)  # repeatable, and fair to the others sharing this machine
    work = work_folder(args.work, "unet_shapes.")
    split = shapes_split(args.resolution, DATA, train=args.train, test=args.test, seed=args.seed)
    model = build_unet(args.resolution, args.width, args.seed)
    preprocessing = model.edgekit_config.preprocessing
    started = time.perf_counter()
    train(model, normalize(split.train_x, preprocessing), split.train_y, epochs=args.epochs, lr=args.lr,
          seed=args.seed, balance=True, log=lambda line: print(f"  {line}", flush=True))
    train_seconds = time.perf_counter() - started
    weights = save_state(model, work / "unet_shapes.pt")

    held_out = normalize(split.test_x, preprocessing)
    classes = len(SHAPE_CLASSES)
    reference = predict(model, held_out)
    pytorch = segmentation_scores(reference, split.test_y, classes)
    print(f"PyTorch fp32 held-out pixel accuracy {pytorch['pixel_accuracy']:.2%}, mean IoU {pytorch['mean_iou']:.3f} "
          f"after {train_seconds:.0f} s", flush=True)

    # edgekit export resizes these (shorter side to resolution / 0.875) and centre-crops: a slight zoom of the task
    calib = save_images(split.train_x[:128], work / "calib")
    parity = save_images(split.test_x[:16], work / "parity")
    manifest, bundle = export_bundle(as_trained(model, weights), work / "exports", calib, parity)

    def score(outputs):
        truth = segmentation_scores(outputs, split.test_y, classes)
        agreement = segmentation_scores(outputs, reference.reshape(len(reference), classes, -1).argmax(1)
                                        .reshape(split.test_y.shape), classes)
        return {"pixel_accuracy": truth["pixel_accuracy"], "iou": truth["iou"], "mean_iou": truth["mean_iou"],
                "pixel_agreement_with_pytorch": agreement["pixel_accuracy"], "iou_with_pytorch": agreement["iou"]}

    rows = score_files(bundle, manifest, held_out, score)
    fp32 = {r["format"]: r for r in rows if r["precision"] == "fp32"}
    for row in rows:
        row["vs_fp32_points"] = round(100 * (row["pixel_accuracy"] - fp32[row["format"]]["pixel_accuracy"]), 2)
        row["mean_iou_vs_fp32"] = round(row["mean_iou"] - fp32[row["format"]]["mean_iou"], 4)
    parity_figures = {p.artifact: p.metrics.to_dict() for p in manifest.parity}
    result = {"cpu": describe(host_cpu()), "load_average": os.getloadavg(),
              "task": {"classes": list(SHAPE_CLASSES), "resolution": args.resolution, "train_images": args.train,
                       "held_out_images": args.test},
              "train": {"epochs": args.epochs, "lr": args.lr, "seed": args.seed, "width": args.width,
                        "seconds": round(train_seconds, 1)},
              "pytorch_fp32": pytorch, "files": rows, "export_parity": parity_figures,
              "manifest_passed": manifest.passed}
    write_results(result)
    worst = min(r["vs_fp32_points"] for r in rows if r["precision"] == "int8")
    print(f"int8 worst: {worst:+.2f} points of pixel accuracy against its fp32 file")
    return 0 if manifest.passed else 1


def _iou(values) -> str:
    return " / ".join("-" if v is None or v != v else f"{v:.3f}" for v in values)


def write_results(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_unet_shapes.json").write_text(json.dumps(result, indent=2) + "\n")
    t, task, p = result["train"], result["task"], result["pytorch_fp32"]
    lines = [
        "# U-Net trained to segment shapes on real photos: fp32 and int8 per pixel on held-out images",
        "",
        f"CPU: {result['cpu']}; the machine was shared with other engineers (load average "
        f"{result['load_average'][0]:.1f} at the end). Produced by `benchmarks/train_unet_shapes.py`.",
        "",
        f"Task: {', '.join(task['classes'])} at {task['resolution']}x{task['resolution']}; {task['train_images']} "
        f"training images on 6 photos, {task['held_out_images']} held-out images on 3 other photos, exact masks. "
        f"Model: the zoo's U-Net, width {t['width']} (8 base channels), depth 4, batch norm (folded at export); "
        f"{t['epochs']} epochs of Adam (lr {t['lr']}, class-balanced cross-entropy, seed {t['seed']}), "
        f"{t['seconds']:.0f} s on one thread. int8: calibrated on 128 training images; parity on 16 held-out images.",
        "",
        f"PyTorch fp32: pixel accuracy **{p['pixel_accuracy']:.2%}**, IoU per class ({' / '.join(task['classes'])}) "
        f"{_iou(p['iou'])}, mean {p['mean_iou']:.3f}",
        "",
        "| file | precision | size | pixel accuracy | vs its fp32 file | IoU per class | mean IoU | pixels as PyTorch | "
        "export parity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["files"]:
        lines.append(f"| {r['file']} | {r['precision']} | {r['bytes'] / 1024:.1f} kB | {r['pixel_accuracy']:.2%} | "
                     f"{r['vs_fp32_points']:+.2f} points | {_iou(r['iou'])} | {r['mean_iou']:.3f} | "
                     f"{r['pixel_agreement_with_pytorch']:.2%} | {r['parity']} |")
    lines += ["", "Export parity figures (16 held-out images + 4 random inputs, against PyTorch):", "",
              "| file | cosine mean | PSNR dB | pixel agreement | IoU min |", "|---|---|---|---|---|"]
    for name, m in result["export_parity"].items():
        pixel = "-" if m.get("pixel_agreement") is None else f"{m['pixel_agreement']:.2%}"
        iou = "-" if m.get("iou_min") is None else f"{m['iou_min']:.3f}"
        lines.append(f"| {name} | {m['cosine_mean']:.5f} | {m['psnr_db'] if isinstance(m['psnr_db'], str) else round(m['psnr_db'], 1)} "
                     f"| {pixel} | {iou} |")
    (RESULTS / "train_unet_shapes.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
