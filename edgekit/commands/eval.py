"""`edgekit eval TARGET --data SET`: top-1 and top-5 of a model with its weights, of an .onnx/.tflite/.pte file, or
of an export bundle (its PyTorch model and every file in it, one table).

TARGET is dispatched on what it names: a registered model (built with --weights etc.), a model file, or a
folder (a bundle, ``edgekit.bundle_eval``). All are scored by ``edgekit.evaluate`` on images preprocessed by
``edgekit.images``, so figures from different targets are comparable.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..bundle_eval import PYTORCH_MODES, evaluate_bundle, open_bundle, resolve_bundle, scored_output
from ..console import info, warn
from ..errors import EdgekitError
from ..evaluate import (BACKGROUND_MODES, chance_problem, evaluate, file_target, image_batches, model_target,
                        scored_classes)
from ..fileio import check_output_file
from ..formats import FORMAT_NAMES
from ..formats import SUFFIXES as MODEL_FILE_SUFFIXES
from ..images import read_labelled_set
from ..manifest import Manifest
from ..table import format_table
from ..types import Preprocessing
from .common import (add_model_arguments, add_preprocessing_arguments, model_from_args, positive_int,
                     preprocessing_from_args, write_json)
from .validate import formats_filter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="top-1/top-5 accuracy on labelled images",
        description="Top-1 and top-5 accuracy of a model (TARGET a registered name, with --weights), of an "
                    ".onnx/.tflite/.pte file (TARGET its path), or of an export bundle (TARGET its folder: the PyTorch "
                    "model and every file, one table) on a labelled image set. Images are decoded with "
                    "Pillow, converted to RGB, resized and centre-cropped (crop fraction 0.875 unless the weights "
                    "say otherwise); files that cannot be decoded are counted and skipped.")
    add_model_arguments(p, metavar="TARGET",
                        name_help="registered model name (see `edgekit models`), an .onnx/.tflite/.pte file, or an "
                                  "export bundle folder (with a bundle, --weights FILE points at the weights "
                                  "file when it moved since the export)")
    p.add_argument("--data", type=Path, required=True,
                   help="CSV with file,class_index (or file,synset) columns; a folder holding labels.csv; a folder "
                        "of ImageNet synset sub-folders (n01440764/...) or synset-named files, mapped to ImageNet-1k "
                        "indices; or a folder with one sub-folder per class, numbered in sorted folder order (their "
                        "count must be the model's classes, else give --class-map)")
    p.add_argument("--class-map", type=Path, metavar="FILE",
                   help="class sub-folder names to class indices: one name per line (line k = class k, like a "
                        "bundle's labels.txt) or lines name,class_index")
    p.add_argument("--allow-chance", action="store_true",
                   help="score random weights, and exit 0 on a score at or below chance (default: random weights "
                        "are refused before scoring, and a chance-level score exits 1)")
    p.add_argument("--limit", type=positive_int, help="score only the first N images")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch / the runtime")
    add_preprocessing_arguments(p, "what the weights record; for a file, the preprocessing edgekit recorded in it, "
                                   "else what its integer input implies")
    p.add_argument("--crop-fraction", type=float, help="centre crop as a fraction of the resized image (0.875)")
    p.add_argument("--background", choices=BACKGROUND_MODES, default="auto",
                   help="output 0 of TF's 1001-class ImageNet models is 'background': auto drops it when the "
                        "model has 1001 outputs (class k is then output k+1); drop / none force it")
    p.add_argument("--pytorch", choices=PYTORCH_MODES, default="auto",
                   help="bundles: the PyTorch row. auto (default): rebuilt from the manifest's weights when they "
                        "can be had and reproduce the bundle's reference outputs, else a warning and the files "
                        "alone; require: fail instead; skip: files alone, torch never imported")
    p.add_argument("--formats", type=formats_filter, metavar="LIST",
                   help="bundles: score only the files of these formats, comma-separated: "
                        f"{','.join(FORMAT_NAMES)} (default every file; the PyTorch row stays)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON (- for stdout)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.json and args.json != "-":
        check_output_file(Path(args.json), "--json")
    dataset = read_labelled_set(args.data, args.class_map)
    items = list(dataset)[:args.limit] if args.limit else list(dataset)
    data = {"source": str(args.data), "limit": args.limit, "layout": dataset.layout}
    if Path(args.name).is_dir():
        return _run_bundle(args, dataset, items, data)
    for flag, used in (("--pytorch", args.pytorch != "auto"), ("--formats", args.formats)):
        if used:
            raise EdgekitError(f"{flag} applies to an export bundle, not to {args.name}; drop it")
    target = _open_target(args)
    if target.trained is False:
        _refuse_random(args, f"{target.name} has random (untrained) weights"
                             + (" by its edgekit metadata" if target.kind == "file" else ""))
    classes = scored_classes(target.outputs, args.background) if target.outputs else None
    _check_data_fits(dataset, items, classes, target.outputs, target.name)
    p = target.preprocessing
    info(f"[edgekit] eval {target.name} on {len(items)} images of {args.data} at {target.resolution}px; "
         f"classes from {dataset.describe()}; preprocessing {_describe(p)} ({target.preprocessing_source})")
    batches = image_batches(items, target.resolution, target.preprocessing, args.batch_size)
    result = evaluate(target.predictor, batches, total=len(items), background=args.background)
    if result.unreadable:
        warn(f"skipped {len(result.unreadable)} unreadable image(s) of {len(items)}, e.g. {result.unreadable[0]}")
    if result.background_dropped:
        info(f"[edgekit] the model has {result.num_outputs} outputs: output 0 taken as 'background' and dropped "
             "(class k = output k+1)")
    chance = chance_problem(result.correct_top1, result.images, result.num_outputs - int(result.background_dropped))
    if chance:
        _warn_chance([f"{target.name}: {chance}"], args.allow_chance)
    if args.json == "-":
        info(_table(target, result))  # stdout carries the JSON alone, so a program can parse it
    else:
        print(_table(target, result))
    if args.json:
        write_json(args.json, {"target": target.to_dict(), "data": data, **result.to_dict(), "chance": chance})
    return 1 if chance and not args.allow_chance else 0


def _refuse_random(args, what: str) -> None:
    """Random weights score chance: refused before any scoring unless --allow-chance asks for it."""
    if args.allow_chance:
        warn(f"{what}: scoring them anyway (--allow-chance); expect chance, 1 in the number of classes")
        return
    raise EdgekitError(f"{what}: their accuracy is chance and measures nothing; give trained weights (--weights "
                       "FILE|imagenet, or a bundle exported with them), or --allow-chance to score them anyway")


def _warn_chance(problems: list[str], allowed: bool) -> None:
    for problem in problems:
        warn(problem + ("" if allowed else "; exit 1 (--allow-chance accepts it)"))


def _run_bundle(args, dataset, items, data) -> int:

    model_only = [flag for flag, used in (("--width", args.width), ("--resolution", args.resolution),
                                          ("--num-classes", args.num_classes),
                                          ("--keep-background", args.keep_background)) if used]
    if model_only:
        raise EdgekitError(f"{', '.join(model_only)}: a bundle's model and files are fixed by its manifest; drop "
                           f"{'them' if len(model_only) > 1 else 'it'}")
    weights = None if args.weights == "default" else Path(args.weights)
    if weights is not None and args.pytorch == "skip":
        raise EdgekitError("--weights rebuilds the PyTorch row, which --pytorch skip leaves out; drop one of them")
    override = _preprocessing_override(args)
    bundle = resolve_bundle(Path(args.name))
    manifest = Manifest.read(bundle)
    scored_output(manifest, bundle)  # a model eval cannot score fails first
    if not manifest.weights.get("trained", False):
        _refuse_random(args, f"{manifest.variant} was exported with random (untrained) weights")
    outputs = _manifest_classes(manifest)
    _check_data_fits(dataset, items, scored_classes(outputs, args.background) if outputs else None, outputs,
                     manifest.variant)
    opened = open_bundle(Path(args.name), pytorch=args.pytorch, weights=weights, preprocessing=override,
                         threads=args.threads, formats=args.formats)
    recorded = Preprocessing.from_dict(opened.manifest.preprocessing)
    if args.crop_fraction is not None:
        opened.preprocessing = replace(opened.preprocessing, crop_fraction=args.crop_fraction)
        opened.preprocessing_source += "; crop from --crop-fraction"
    if (opened.preprocessing.mean, opened.preprocessing.std) != (recorded.mean, recorded.std):
        warn(f"feeding the bundle with {_describe(opened.preprocessing)}, not the {_describe(recorded)} its "
             "manifest records: accuracy will reflect the mismatch")
    info(f"[edgekit] preprocessing {_describe(opened.preprocessing)} ({opened.preprocessing_source}); classes from "
         f"{dataset.describe()}")
    result = evaluate_bundle(opened, items, batch_size=args.batch_size, background=args.background, data=data)
    first = result.any_result
    if first.unreadable:
        warn(f"skipped {len(first.unreadable)} unreadable image(s) of {len(items)}, e.g. {first.unreadable[0]}")
    dropped = [name for name, r in result.results.items() if r.background_dropped]
    if dropped:
        info(f"[edgekit] output 0 taken as 'background' and dropped for {', '.join(dropped)} (1001 outputs)")
    chance = {name: problem for name, r in result.results.items()
              if (problem := chance_problem(r.correct_top1, r.images, r.num_outputs - int(r.background_dropped)))}
    if chance:
        _warn_chance([f"{name}: {problem}" for name, problem in chance.items()], args.allow_chance)
    table = _bundle_table(result)
    if args.json == "-":
        info(table)
    else:
        print(table)
    if args.json:
        write_json(args.json, result.to_dict() | {"chance": chance})
    return 1 if chance and not args.allow_chance else 0


def _manifest_classes(manifest) -> int | None:
    try:
        classes = int(manifest.model["num_classes"])
    except (KeyError, TypeError, ValueError):
        return None  # a damaged manifest: the files' own outputs are checked while scoring
    return classes if classes > 0 else None


def _bundle_table(result) -> str:

    def pct(value: float) -> str:
        return f"{100 * value:.1f}%"

    rows = []
    for target in result.opened.targets:
        r = result.results[target.name]
        agreement = result.agreement(target.name)
        shown = "reference" if target.name == result.agreement_with else "-" if agreement is None else pct(agreement)
        rows.append([target.name, target.format, target.precision, pct(r.top1), pct(r.top5), shown, r.images,
                     len(r.unreadable)])
    table = format_table(["target", "format", "precision", "top-1", "top-5", "top-1 agreement", "images",
                          "unreadable"], rows)
    pytorch = result.opened.pytorch
    if pytorch.status != "rebuilt":
        versus = (f"top-1 agreement is with {result.agreement_with}, which parity tied to PyTorch at export"
                  if result.agreement_with else "no fp32 file to measure top-1 agreement against")
        table += f"\n(no PyTorch row: {pytorch.reason}; {versus})"
    return table


def _open_target(args):
    """Model file, export folder or registered name -> EvalTarget, with the user's preprocessing applied."""

    path = Path(args.name)
    override = _preprocessing_override(args)
    if path.suffix.lower() in MODEL_FILE_SUFFIXES:
        model_only = [flag for flag, used in (("--weights", args.weights != "default"), ("--width", args.width),
                                              ("--num-classes", args.num_classes),
                                              ("--keep-background", args.keep_background)) if used]
        if model_only:
            raise EdgekitError(f"{', '.join(model_only)} only appl{'y' if len(model_only) > 1 else 'ies'} to a "
                               f"model name, not to the file {path.name}; drop "
                               f"{'them' if len(model_only) > 1 else 'it'}")
        target = file_target(path, resolution=args.resolution, preprocessing=override, threads=args.threads)
    elif path.suffix or len(path.parts) > 1:
        raise EdgekitError(f"{args.name} is neither a registered model nor an existing "
                           f"{'/'.join(MODEL_FILE_SUFFIXES)} file or folder; check the path")
    else:
        target = _model_target(args, override)
    if args.crop_fraction is not None:
        target = replace(target, preprocessing=replace(target.preprocessing, crop_fraction=args.crop_fraction),
                         preprocessing_source=f"{target.preprocessing_source}; crop from --crop-fraction")
    return target


def _model_target(args, override):

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = model_from_args(args)
    recorded = model.edgekit_config.preprocessing
    if override is not None and (override.mean, override.std) != (recorded.mean, recorded.std):
        warn(f"feeding {args.name} with {_describe(override)}, not the {_describe(recorded)} its weights "
             "record: accuracy will reflect the mismatch")
    return model_target(model, override)


def _preprocessing_override(args):
    """The mean/std the user chose with --preprocessing and/or --mean/--std, or None to use the target's."""
    if args.crop_fraction is not None and not 0.0 < args.crop_fraction <= 1.0:
        raise EdgekitError(f"--crop-fraction must be in (0, 1], got {args.crop_fraction:g}")
    return preprocessing_from_args(args)


def _describe(p) -> str:
    mean = "/".join(f"{m:g}" for m in dict.fromkeys(p.mean))
    std = "/".join(f"{s:g}" for s in dict.fromkeys(p.std))
    return f"mean {mean} std {std} crop {p.crop_fraction:g} {p.interpolation}"


def _check_data_fits(dataset, items, classes: int | None, outputs: int | None, what: str) -> None:
    """Before any scoring: the data's class indices must be classes the model scores. Class folders numbered in
    sorted order must be exactly as many as the model's classes, else the numbering is a guess (give --class-map)."""
    if classes is None:
        return
    if dataset.layout == "class-folders" and dataset.folders != classes:
        raise EdgekitError(f"{dataset.source} has {dataset.folders} class folders but {what} scores {classes} "
                           "classes, so sorted folder k cannot be taken as class k; give --class-map FILE (one "
                           "folder name per line, line k = class k, or lines name,class_index), name the folders by "
                           "ImageNet synset (n01440764), or give a CSV with file,class_index")
    bad = next((item for item in items if not 0 <= item.label < classes), None)
    if bad is not None:
        note = " after dropping the background output" if outputs is not None and outputs != classes else ""
        raise EdgekitError(f"{bad.path} has class {bad.label}, but {what} scores {classes} classes{note}: the labels "
                           f"do not belong to this model (classes from {dataset.describe()})")


def _table(target, result) -> str:

    def pct(correct: int) -> str:
        return f"{100 * correct / result.images:.1f}% ({correct}/{result.images})"

    return format_table(["target", "resolution", "images", "unreadable", "top-1", "top-5"],
                        [[target.name, target.resolution, result.images, len(result.unreadable),
                          pct(result.correct_top1), pct(result.correct_top5)]])
