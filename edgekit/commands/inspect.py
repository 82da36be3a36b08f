"""`edgekit inspect DIR|FILE`: where an int8 file loses accuracy, layer by layer, against its fp32 file.

DIR is an export bundle (every int8 file is compared with the fp32 file of its format, on the bundle's real
parity images); FILE is one int8 .onnx/.tflite (its fp32 file is the sibling without ``_int8``, or --fp32).
The table lists the layers that lose most (SQNR of a layer's inputs minus its own); --all lists every
compared activation in graph order. Needs no PyTorch.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..console import info, step, warn
from ..errors import EdgekitError
from ..exporters.backend import backend_for
from ..fileio import check_output_file
from ..formats import FORMAT_NAMES, FORMATS, format_of
from ..images import find_images, load_batch
from ..layerwise import LAYER_HEADERS, compare_layers, layer_rows, summary
from ..manifest import MANIFEST_NAME, Manifest, Reference, integrity_problems
from ..quantize.calibration import CalibrationSet, per_input
from ..sample_images import sample_image_paths
from ..table import format_table
from ..types import Preprocessing
from .common import positive_int, write_json


def comparable_formats() -> tuple[str, ...]:
    """The formats whose int8 files can be compared layer by layer with their fp32 files (asked of the back-ends
    when the command runs: loading them while the CLI builds its parser would slow every command)."""
    return tuple(name for name in FORMAT_NAMES if backend_for(name).layer_comparison)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect", help="per-layer int8 error against the fp32 file (which layers lose most)",
        description="Compare each activation of an int8 .onnx/.tflite with the fp32 file's on real images: "
                    "SQNR (dB), cosine, and the loss each layer adds; for the output also PSNR, the measure parity "
                    "gates on. PATH is an export bundle or an int8 file.")
    p.add_argument("path", type=Path, metavar="DIR|FILE", help="export bundle folder, or an int8 .onnx/.tflite")
    p.add_argument("--fp32", type=Path, metavar="FILE",
                   help="the fp32 file to compare with (default: the int8 file's name without _int8)")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="pictures to compare on (default: the bundle's parity photos, else edgekit's built-in "
                        "photos)")
    p.add_argument("--samples", type=positive_int, default=8, help="images to compare on (default 8)")
    p.add_argument("--top", type=positive_int, default=10, help="layers listed, largest loss first (default 10)")
    p.add_argument("--all", action="store_true", help="list every compared activation in graph order")
    p.add_argument("--json", metavar="FILE", help="write every layer's figures as JSON (- for stdout)")
    p.set_defaults(run=run)


@dataclass
class _Pair:
    int8: Path
    fp32: Path


def run(args) -> int:
    if args.json and args.json != "-":
        check_output_file(Path(args.json), "--json")
    pairs, inputs = _targets(args)
    reports = []
    # with --json -, stdout carries the JSON alone: the tables go to stderr
    human = contextlib.redirect_stdout(sys.stderr) if args.json == "-" else contextlib.nullcontext()
    for pair in pairs:
        with step(f"comparing {pair.int8.name} with {pair.fp32.name} layer by layer"):
            report = compare_layers(pair.int8, pair.fp32, inputs)
        reports.append(report)
        with human:
            print(summary(report))
            census = backend_for(format_of(pair.int8).name).census(pair.int8)
            if census is not None:
                print(_integer_line(census))
            layers = report.layers if args.all else report.worst(args.top)
            title = "every compared activation, graph order" if args.all else f"{len(layers)} layers that lose most"
            print(f"{title} (loss = SQNR of the layer's inputs - its own SQNR):")
            print(format_table(LAYER_HEADERS, layer_rows(layers)))
            print()
    if args.json:
        write_json(args.json, [r.to_dict(worst=args.top) for r in reports])
    return 0


def _integer_line(report: dict) -> str:
    if report["fully_integer"]:
        ops = ", ".join(f"{k} {v}" for k, v in report["required_int8_ops"].items() if v)
        return f"fully integer: yes ({ops} on int8; input {report['inputs'][0]['dtype']})"
    return f"fully integer: NO ({'; '.join(report['problems'][:3])})"


def _targets(args) -> tuple[list[_Pair], list[np.ndarray]]:
    path: Path = args.path
    if path.is_dir():
        return _bundle_targets(path, args)
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist; give an export bundle folder or an int8 .onnx/.tflite file")
    suffixes = [FORMATS[name].suffix for name in comparable_formats()]
    if path.suffix.lower() not in suffixes:
        raise EdgekitError(f"{path.name} is not a {' or '.join(suffixes)} file; give an int8 model file or a bundle")
    fp32 = args.fp32 or path.with_name(path.name.replace("_int8", "", 1))
    if fp32 == path:
        raise EdgekitError(f"cannot tell which fp32 file {path.name} was made from; pass --fp32 FILE")
    if not fp32.is_file():
        raise EdgekitError(f"fp32 file {fp32} not found beside {path.name}; pass --fp32 FILE")
    preprocessing, resolution, count = _file_preprocessing(path)
    return [_Pair(path, fp32)], _images(args, preprocessing, resolution, None, count)


def _input_count(io: dict | None) -> int:
    """How many pictures the model takes at once: its ``io`` record (the manifest's model entry or the file's
    metadata) lists the inputs of a model of several; anything else takes one."""
    return len((io or {}).get("inputs") or [0])


def _bundle_targets(bundle: Path, args) -> tuple[list[_Pair], list[np.ndarray]]:
    manifest = Manifest.read(bundle)
    pairs = []
    for artifact in manifest.artifacts:
        if artifact.precision != "int8":
            continue
        if artifact.format not in comparable_formats():
            warn(f"{artifact.path}: {artifact.format} files cannot be compared layer by layer; skipped")
            continue
        fp32 = next((a for a in manifest.artifacts if a.format == artifact.format and a.precision == "fp32"), None)
        if fp32 is None:
            warn(f"{artifact.path} has no fp32 {artifact.format} file in the bundle to compare with; skipped")
            continue
        pairs.append(_Pair(bundle / artifact.path, bundle / fp32.path))
    if not pairs:
        raise EdgekitError(f"{bundle} holds no int8 file; export with --int8 first")
    problems = integrity_problems(bundle, manifest)  # the figures must be about the files exported, not others
    if problems:
        raise EdgekitError(f"{bundle}: {problems[0]}")
    preprocessing = Preprocessing.from_dict(manifest.preprocessing)
    resolution = int(manifest.model["resolution"])
    stored = None
    if args.images is None:  # the parity pictures, each input's own
        stored = Reference.read(bundle, manifest.reference.get("sha256")).real_inputs()
    return pairs, _images(args, preprocessing, resolution, stored, _input_count(manifest.model))


def _file_preprocessing(path: Path) -> tuple[Preprocessing, int, int]:
    """What the file's embedded edgekit metadata says (or the bundle manifest beside it): preprocessing,
    resolution and how many picture inputs the model takes."""
    if (path.parent / MANIFEST_NAME).is_file():
        manifest = Manifest.read(path.parent)
        return (Preprocessing.from_dict(manifest.preprocessing), int(manifest.model["resolution"]),
                _input_count(manifest.model))
    metadata = backend_for(format_of(path).name).read_metadata(path)
    if not isinstance(metadata.get("preprocessing"), dict) or "resolution" not in metadata:
        raise EdgekitError(f"{path.name} carries no edgekit metadata (preprocessing, resolution); inspect a file "
                           "exported by edgekit, or its bundle folder")
    return (Preprocessing.from_dict(metadata["preprocessing"]), int(metadata["resolution"]),
            _input_count(metadata.get("io")))


def _images(args, preprocessing: Preprocessing, resolution: int, stored: list[np.ndarray] | None,
            count: int) -> list[np.ndarray]:
    """The pictures to compare on, one array per model input: --images, else the bundle's parity pictures, else
    edgekit's built-in photos; a model of several inputs takes its own pictures as calibration does
    (``per_input``: input K sees them shifted by K)."""
    if args.images is not None:
        candidates = find_images(args.images)
        if not candidates:
            raise EdgekitError(f"--images {args.images} holds no pictures (jpg, jpeg, png, bmp, searched "
                               "recursively); point --images at a folder of pictures")
        loaded = load_batch(candidates, resolution, preprocessing, limit=args.samples)
        if loaded.skipped:
            warn(f"skipped {len(loaded.skipped)} unreadable image(s) in --images, e.g. {loaded.skipped[0]}")
        if not len(loaded.nchw):
            raise EdgekitError(f"none of the {len(candidates)} pictures in --images {args.images} could be read "
                               f"(first: {loaded.skipped[0]}); give valid jpg/png/bmp pictures")
        return per_input(loaded.nchw, count)
    if stored is not None and len(stored[0]):
        return [x[:args.samples] for x in stored]
    info("comparing on edgekit's built-in photos; --images DIR compares on your own pictures")
    return CalibrationSet.from_files(sample_image_paths()[:args.samples], preprocessing, resolution,
                                     source="builtin sample photos").inputs(count)
