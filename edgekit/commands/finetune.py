"""`edgekit finetune MODEL --data FOLDER --out DIR`: a new classifier head (and optionally the last blocks) trained
on the user's own pictures, from trained weights; with --export, straight on to an export bundle.

Exit codes: 0 done (and, with --export, every parity gate passes), 1 a parity gate of the export failed, 2 bad
usage or input (nothing written), 3 an export step failed.
"""

from __future__ import annotations

from pathlib import Path

from .common import positive_int


def _formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip().lower() for f in text.split(",") if f.strip())


def _fraction(text: str) -> float:
    import argparse

    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number such as 0.2") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune", help="train a new classifier head on your own pictures (transfer learning)",
        description="Replaces MODEL's classifier with one for your classes and trains it on your pictures, starting "
                    "from trained weights. Writes DIR/model.safetensors (the best validation epoch), labels.txt, "
                    "training.json (every epoch, class counts, hash of the file list) and training.png. An "
                    "interrupted run resumes when the same command runs again. Defaults for freezing and the "
                    "schedule follow from the pictures per class and are printed.")
    p.add_argument("name", metavar="MODEL", help="registered image classifier (see `edgekit models`)")
    p.add_argument("--data", type=Path, required=True, metavar="FOLDER|CSV",
                   help="a folder with one sub-folder of pictures per class (folder names become the labels, in "
                        "sorted order), or a CSV with file,class_index columns (a folder holding labels.csv counts "
                        "as that CSV)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the fine-tuned model")
    p.add_argument("--weights", default="default",
                   help="starting weights: imagenet | FILE (.pt/.pth/.safetensors, or Google's MobileNet .tflite); "
                        "default: ImageNet where it can be had (random weights are refused)")
    p.add_argument("--width", type=float, help="width multiplier (MobileNets)")
    p.add_argument("--resolution", type=int, help="input size in pixels (square)")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="with a CSV: class names, one per line (line k = class k); default class_0, class_1, ...")
    p.add_argument("--val-split", type=_fraction, default=0.2, metavar="F",
                   help="validation fraction of each class (stratified; default 0.2); the best epoch on it is kept")
    t = p.add_argument_group("training (defaults follow from the pictures per class, and are printed)")
    t.add_argument("--freeze", choices=("backbone", "none"),
                   help="backbone: train the head (and --unfreeze-last blocks) on cached features; none: train "
                        "every layer. Default backbone")
    t.add_argument("--unfreeze-last", type=int, metavar="N",
                   help="also train the last N blocks of the backbone, at a tenth of --lr (default 0 below 100 "
                        "training pictures per class, 2 below 500, else 4)")
    t.add_argument("--epochs", type=positive_int, help="default 30 for the head alone, 12 with blocks")
    t.add_argument("--lr", type=float, help="learning rate of the new head (AdamW; default 0.003 for the head alone, 0.001 with blocks)")
    t.add_argument("--batch-size", type=positive_int, help="pictures per step (default 32)")
    t.add_argument("--views", type=int, metavar="K",
                   help="augmented views per training picture (random resized crop, flip, colour jitter) whose "
                        "frozen-layer features are computed once and cached, besides the plain crop; 0: no "
                        "augmentation (default 4)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the augmentation and the head (default 0)")
    e = p.add_argument_group("export")
    e.add_argument("--export", action="store_true",
                   help="then write an export bundle to DIR/export/ (like `edgekit export`), parity checked on the "
                        "training pictures, and score its files on the validation pictures")
    e.add_argument("--int8", action="store_true", help="with --export: int8 files too, calibrated on the training "
                                                      "pictures")
    e.add_argument("--formats", type=_formats, default=("onnx", "tflite"), metavar="LIST",
                   help="with --export: onnx,tflite (default both)")
    e.add_argument("--latency-runs", type=int, default=25, metavar="N",
                   help="with --export: timed runs of each file on this machine; 0 skips (default 25)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..finetune import FinetuneSpec, run_finetune

    spec = FinetuneSpec(
        name=args.name, data=args.data, out=args.out, weights=args.weights, width=args.width,
        resolution=args.resolution, labels=args.labels, val_split=args.val_split, freeze=args.freeze,
        unfreeze_last=args.unfreeze_last, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        views=args.views, seed=args.seed, export=args.export, int8=args.int8, formats=args.formats,
        latency_runs=args.latency_runs)
    result = run_finetune(spec)
    best = result.record["best"]
    print(f"fine-tuned {result.record['model']['variant']}: validation top-1 {100 * best['val_top1']:.1f}% "
          f"({best['val_correct']}/{best['val_pictures']}) at epoch {best['epoch']}; {result.out}/"
          "{model.safetensors, labels.txt, training.json, training.png}")
    if result.manifest is None:
        print("next: the same command with --export --int8 writes an export bundle (without training again)")
        return 0
    from ..report import summary_table

    print(summary_table(result.manifest))
    print()
    print(_accuracy_table(result.evaluation))
    failed = [p.artifact for p in result.manifest.parity if not p.passed]
    bundle = result.manifest.published
    if failed:
        print(f"parity FAILED for {', '.join(failed)}: see {bundle / 'report.md'}")
        return 1
    print(f"bundle: {bundle}  (manifest.json, report.md)")
    print(f"next: edgekit validate {bundle}   then   edgekit bench {bundle}")
    return 0


def _accuracy_table(evaluation: dict) -> str:
    from ..table import format_table

    rows = [[t["name"], t["format"], t["precision"], f"{100 * t['top1']:.1f}% ({t['correct_top1']}/{t['images']})",
             "-" if t["top1_agreement"] is None else f"{100 * t['top1_agreement']:.1f}%"]
            for t in evaluation["targets"]]
    return ("accuracy on the validation pictures (they chose the epoch, so the absolute figure is optimistic; the "
            "fp32-int8 gap is fair):\n" + format_table(["target", "format", "precision", "top-1", "top-1 agreement"],
                                                       rows))
