"""Arguments several commands share, declared once."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EdgekitError
from ..fileio import atomic_write_text


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
