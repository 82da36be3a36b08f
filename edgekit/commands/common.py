"""Arguments several commands share, declared once."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

from ..errors import EdgekitError
from ..fileio import atomic_write_text
from ..types import PREPROCESSING_PRESETS, Preprocessing, describe_preset


def add_model_arguments(parser: argparse.ArgumentParser, weights_default: str = "default", metavar: str = "NAME",
                        name_help: str = "registered model name (see `edgekit models`)") -> None:
    parser.add_argument("name", metavar=metavar, help=name_help)
    parser.add_argument("--width", type=float, help="width multiplier (MobileNets)")
    parser.add_argument("--resolution", type=int, help="input size in pixels (square)")
    parser.add_argument("--num-classes", type=int, help="classifier outputs (replaces a checkpoint's head)")
    parser.add_argument("--weights", default=weights_default,
                        help="random | imagenet | FILE (.pt/.pth/.safetensors/.tflite); default: ImageNet where "
                             "it can be had, else random with a warning")
    parser.add_argument("--keep-background", action="store_true",
                        help="keep the 'background' class of 1001-class TF files (dropped by default)")


def add_preprocessing_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """--preprocessing, --mean and --std: how a picture becomes the model's input (export and eval alike)."""
    parser.add_argument("--preprocessing", choices=tuple(PREPROCESSING_PRESETS),
                        help="; ".join(describe_preset(name) for name in PREPROCESSING_PRESETS)
                        + f", on 0..255 RGB pixels. Default: {default}")
    parser.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="mean on the 0..255 pixel scale")
    parser.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="std on the 0..255 pixel scale")


def preprocessing_from_args(args: argparse.Namespace) -> Preprocessing | None:
    """The normalisation --preprocessing and/or --mean/--std declare, or None when neither is given."""
    for flag, values in (("--mean", args.mean), ("--std", args.std)):
        if values and not all(math.isfinite(v) for v in values):
            raise EdgekitError(f"{flag} must be finite numbers, got {' '.join(f'{v:g}' for v in values)}")
    if args.std and min(args.std) <= 0:
        raise EdgekitError(f"--std must be positive, got {' '.join(f'{s:g}' for s in args.std)}")
    if not args.preprocessing and bool(args.mean) != bool(args.std):
        raise EdgekitError("give --mean and --std together (or --preprocessing imagenet|tf|none)")
    if not (args.preprocessing or args.mean):
        return None
    base = PREPROCESSING_PRESETS[args.preprocessing or "imagenet"]
    return replace(base, mean=tuple(args.mean or base.mean), std=tuple(args.std or base.std))


def model_from_args(args: argparse.Namespace):
    from ..models import create_model

    return create_model(args.name, width=args.width, resolution=args.resolution, num_classes=args.num_classes,
                        weights=args.weights, keep_background=args.keep_background)


def write_json(path: str | Path, data: object) -> None:
    """``--json FILE`` output; ``-`` prints to stdout."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    if str(path) == "-":
        print(text, end="")
        return
    atomic_write_text(Path(path), text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise EdgekitError(f"{what} {path} is not a folder; check the path")
    return path
