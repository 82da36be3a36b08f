"""`edgekit finetune` in order: data and model checked -> pictures decoded -> split and schedule -> prefix
features cached -> epochs (checkpointed) -> outputs -> optionally an export bundle of the result.

Everything that can be wrong with the input is found before DIR is touched, so bad input leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import __version__
from ..console import info
from ..errors import EdgekitError
from ..fileio import ensure_writable_dir, sha256_file
from ..types import WeightsInfo
from . import outputs
from .data import CROP_AREA, CROP_RATIO, JITTER, check_readable, decode, read_data, split
from .network import Split, check_classifier, check_family, default_schedule, replace_head

FORMATS = ("onnx", "tflite")
CALIBRATION_LIMIT = 500  # int8 calibration images: training pictures first, then augmented views of them
CALIBRATION_VIEWS = 4  # augmented views per training picture added to the calibration set


@dataclass(frozen=True)
class FinetuneSpec:
    """Everything `edgekit finetune` was asked to do; None means "choose from the data" (see default_schedule)."""

    name: str
    data: Path
    out: Path
    weights: str = "default"
    width: float | None = None
    resolution: int | None = None
    labels: Path | None = None
    val_split: float = 0.2
    freeze: str | None = None
    unfreeze_last: int | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    views: int | None = None
    seed: int = 0
    export: bool = False
    int8: bool = False
    formats: tuple[str, ...] = FORMATS
    latency_runs: int = 25

    def __post_init__(self):
        if not 0.0 < self.val_split < 1.0:
            raise EdgekitError(f"--val-split is the validation fraction of each class: give a value between 0 and 1 "
                               f"(default 0.2), got {self.val_split:g}")
        if self.freeze not in (None, "backbone", "none"):
            raise EdgekitError(f"--freeze must be backbone or none, got {self.freeze!r}")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise EdgekitError(f"{flag} must be at least 1, got {value}")
        for flag, value in (("--unfreeze-last", self.unfreeze_last), ("--views", self.views)):
            if value is not None and value < 0:
                raise EdgekitError(f"{flag} must be 0 or more, got {value}")
        if self.lr is not None and not 0.0 < self.lr < 10.0:
            raise EdgekitError(f"--lr must be a positive learning rate such as 0.001, got {self.lr:g}")
        if (self.int8 or tuple(self.formats) != FORMATS) and not self.export:
            raise EdgekitError("--int8 and --formats shape the export bundle: add --export, or drop them")


@dataclass
class FinetuneResult:
    out: Path
    record: dict
    weights: Path
    model: object = None
    manifest: object = None  # the export's, with --export
    evaluation: dict = field(default_factory=dict)  # accuracy of the bundle's files on the validation split


def run_finetune(spec: FinetuneSpec) -> FinetuneResult:
    import torch

    out = Path(spec.out)
    _check_out(out)
    data = read_data(spec.data, spec.labels)
    from ..models import create_model

    model = create_model(spec.name, width=spec.width, resolution=spec.resolution, weights=_starting_weights(spec))
    check_classifier(model)
    start = model.edgekit_config
    timings = {}
    started = time.perf_counter()
    info(f"[edgekit] finetune {start.variant} from {start.weights.source} weights on {len(data.items)} pictures in "
         f"{len(data.classes)} classes ({data.layout}: {data.source})")
    decoded = decode(data.items, start.resolution, start.preprocessing)
    check_readable(data.items, decoded, data.classes, data.source)
    timings["decode"] = time.perf_counter() - started
    readable = [i for i in range(len(data.items)) if i in decoded.pictures]
    labels = [item.label for item in data.items]
    train_pos, val_pos = split([data.items[i] for i in readable], len(data.classes), spec.val_split, spec.seed,
                               data.classes)
    train_items, val_items = [readable[i] for i in train_pos], [readable[i] for i in val_pos]
    counts = {name: {"train": sum(labels[i] == k for i in train_items), "val": sum(labels[i] == k for i in val_items)}
              for k, name in enumerate(data.classes)}
    smallest = min(c["train"] for c in counts.values())
    has_blocks = isinstance(getattr(model, "features", None), torch.nn.Sequential)
    schedule = default_schedule(smallest, has_blocks=has_blocks, freeze=spec.freeze,
                                unfreeze_last=spec.unfreeze_last, epochs=spec.epochs, lr=spec.lr,
                                batch_size=spec.batch_size, views=spec.views)
    replace_head(model, len(data.classes), spec.seed)
    parts = Split(model, schedule.freeze, schedule.unfreeze_last)  # refuses --unfreeze-last it cannot honour
    key = _run_key(data, start, schedule, spec)
    finished = outputs.read_record(out / outputs.RECORD_NAME) if (out / outputs.RECORD_NAME).exists() else None
    if (out / outputs.RECORD_NAME).exists() and (finished is None or finished["key"] != key):
        raise EdgekitError(f"{out} holds a finished fine-tune of other data or options ({outputs.RECORD_NAME}); "
                           "choose another --out, or remove that folder to train again")
    info(f"[edgekit] {len(train_items)} training and {len(val_items)} validation pictures "
         f"(stratified {spec.val_split:.0%}, seed {spec.seed}); smallest class {smallest} training pictures")
    info(f"[edgekit] schedule: {_describe(schedule)}" + (f"; defaults: {'; '.join(schedule.reasons)}"
                                                          if schedule.reasons else ""))
    weights_path = out / outputs.WEIGHTS_NAME
    if finished is not None:
        info(f"[edgekit] {out} already holds this fine-tune (same data and options, {outputs.RECORD_NAME}); "
             "not training again")
        state = _finished_state(weights_path, finished)
        model.load_state_dict(state)
        record = finished
    else:
        record = _train_and_write(spec, out, data, model, parts, schedule, decoded, labels, train_items, val_items,
                                  counts, key, start, timings, started)
    model = _with_finetune_record(model, data, weights_path, record, out)
    result = FinetuneResult(out, record, weights_path, model)
    if spec.export:
        _export(spec, result, data, decoded, train_items, val_items)
    return result


def _starting_weights(spec: FinetuneSpec) -> str:
    """Trained weights or a one-line refusal, before any model is built: no silent fall-back to random weights."""
    from ..models.registry import get_spec

    check_family(get_spec(spec.name))
    if spec.weights == "random":
        raise EdgekitError("fine-tuning starts from trained weights, not random ones: pass --weights imagenet or a "
                           "weights file (e.g. Google's mobilenet .tflite)")
    return "imagenet" if spec.weights == "default" else spec.weights


def _check_out(out: Path) -> None:
    """Before any work: DIR is new, empty, or a finetune folder (finished or interrupted)."""
    if out.exists() and not out.is_dir():
        raise EdgekitError(f"--out {out} is a file; give a folder for the fine-tuned model")
    if out.is_dir():
        ours = {outputs.RECORD_NAME, outputs.WORK_NAME}
        names = {p.name for p in out.iterdir()}
        if names and not names & ours:
            raise EdgekitError(f"--out {out} holds other files and no fine-tune ({', '.join(sorted(names)[:3])}); "
                               "choose a new or empty folder")


def _run_key(data, start, schedule, spec: FinetuneSpec) -> str:
    """What a resume must share with the interrupted run: the pictures and classes, the starting model and weights,
    the split and every training option."""
    fields = {"files_sha256": data.files_sha256, "classes": list(data.classes), "model": start.name,
              "width": start.width, "resolution": start.resolution,
              "weights": start.weights.sha256 or start.weights.requested, "val_split": spec.val_split,
              "seed": spec.seed, "schedule": {k: v for k, v in schedule.to_dict().items() if k != "defaults"},
              "edgekit": __version__}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def _describe(schedule) -> str:
    frozen = ("head only (backbone frozen)" if schedule.freeze == "backbone" and not schedule.unfreeze_last else
              f"head + last {schedule.unfreeze_last} blocks" if schedule.freeze == "backbone" else "every layer")
    return (f"{frozen}, {schedule.epochs} epochs, lr {schedule.lr:g}, batch {schedule.batch_size}, "
            f"{schedule.views} augmented view{'' if schedule.views == 1 else 's'} per picture")


def _finished_state(weights_path: Path, record: dict) -> dict:
    from safetensors.torch import load_file

    if not weights_path.is_file() or sha256_file(weights_path) != record.get("outputs", {}).get("weights_sha256"):
        raise EdgekitError(f"{weights_path} is missing or differs from the one {outputs.RECORD_NAME} records; remove "
                           f"{weights_path.parent} and train again")
    return load_file(str(weights_path))


def _train_and_write(spec, out, data, model, parts, schedule, decoded, labels, train_items, val_items, counts, key,
                     start, timings, started) -> dict:
    import torch

    from ..cpu import describe, host_cpu
    from .training import WEIGHT_DECAY, build_examples, train

    work = out / outputs.WORK_NAME
    ensure_writable_dir(work)  # the first write: everything above can still refuse the input
    config = start
    cache_started = time.perf_counter()
    examples, cache = build_examples(parts, decoded, train_items, val_items, labels, schedule, config.resolution,
                                     config.preprocessing, spec.seed, work / "features.pt", key)
    timings["features"] = time.perf_counter() - cache_started
    info(f"[edgekit] {cache}")
    train_started = time.perf_counter()
    try:
        outcome = train(parts, examples, decoded, schedule, config.preprocessing, spec.seed, work / "checkpoint.pt",
                        key)
    except KeyboardInterrupt:
        info(f"[edgekit] interrupted: the finished epochs are checkpointed in {work}; the same command resumes")
        raise
    timings["training"] = time.perf_counter() - train_started
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in outcome.best_state.items():
            params[name].copy_(value)
    best = outcome.history[outcome.best_epoch - 1]
    final = replace(config, num_classes=len(data.classes), labels=data.classes)
    weights_sha = outputs.write_weights(model, out / outputs.WEIGHTS_NAME, {
        "model": final.name, "width": final.width, "resolution": final.resolution, "padding": final.padding,
        "num_classes": final.num_classes, "preprocessing": final.preprocessing.to_dict(),
        "labels": list(data.classes), "record": outputs.RECORD_NAME})
    outputs.write_labels(out / outputs.LABELS_NAME, data.classes)
    outputs.write_curve(out / outputs.CURVE_NAME, outcome.history, outcome.best_epoch,
                        f"{final.variant} fine-tuned on {len(train_items)} pictures, {len(data.classes)} classes: "
                        f"best validation top-1 {100 * best['val_top1']:.1f}% (epoch {outcome.best_epoch})")
    timings["total"] = time.perf_counter() - started
    record = {
        "producer": f"edgekit {__version__}", "kind": "edgekit finetune", "key": key,
        "model": final.to_dict() | {"variant": final.variant},
        "start_weights": config.weights.to_dict(),
        "data": {"source": str(data.source), "layout": data.layout, "classes": list(data.classes), "counts": counts,
                 "files": len(data.items), "files_sha256": data.files_sha256,
                 "files_sha256_of": "sorted lines 'class<TAB>path relative to the data'",
                 "unreadable": decoded.unreadable[:100], "val_split": spec.val_split, "seed": spec.seed},
        "schedule": schedule.to_dict() | {"cache": cache, "optimizer": "AdamW", "weight_decay": WEIGHT_DECAY,
                                          "loss": "cross-entropy", "batch_norm": "frozen (eval mode)"},
        "augmentation": {"random_resized_crop": {"area": list(CROP_AREA), "aspect": [round(r, 4) for r in CROP_RATIO]},
                         "horizontal_flip": 0.5, "colour_jitter": {"brightness": JITTER, "contrast": JITTER,
                                                                  "saturation": JITTER},
                         "validation": "none: the model's recorded preprocessing (resize, centre crop, mean/std)"},
        "epochs": outcome.history,
        "best": {"epoch": outcome.best_epoch, "val_top1": best["val_top1"], "val_loss": best["val_loss"],
                 "val_correct": best["val_correct"], "val_pictures": len(val_items)},
        "resumed_after_epoch": outcome.resumed_from or None,
        "outputs": {"weights": outputs.WEIGHTS_NAME, "weights_sha256": weights_sha, "labels": outputs.LABELS_NAME,
                    "curve": outputs.CURVE_NAME},
        "host": {"cpu": describe(host_cpu()), "torch_threads": torch.get_num_threads()},
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    outputs.write_record(out / outputs.RECORD_NAME, record)
    shutil.rmtree(work, ignore_errors=True)
    info(f"[edgekit] best epoch {outcome.best_epoch}/{schedule.epochs}: validation top-1 "
         f"{100 * best['val_top1']:.1f}% ({best['val_correct']}/{len(val_items)}); wrote {out}/"
         f"{{{outputs.WEIGHTS_NAME}, {outputs.LABELS_NAME}, {outputs.CURVE_NAME}, {outputs.RECORD_NAME}}}")
    return record


def _with_finetune_record(model, data, weights_path: Path, record: dict, out: Path):
    """The fine-tuned model's config: its classes and labels, and weights that name the finetune record, so an
    export bundle says where its weights came from (and `edgekit eval BUNDLE` can rebuild them)."""
    best = record["best"]
    start = record["start_weights"]
    note = (f"edgekit finetune of {Path(str(start['requested'])).name} ({start['source']} weights) on "
            f"{sum(c['train'] for c in record['data']['counts'].values())} pictures in {len(data.classes)} classes; "
            f"best epoch {best['epoch']}/{len(record['epochs'])}, validation top-1 {100 * best['val_top1']:.1f}% on "
            f"{best['val_pictures']} pictures; {outputs.RECORD_NAME} sha256 {sha256_file(out / outputs.RECORD_NAME)}")
    weights = WeightsInfo(str(weights_path), "file", str(weights_path.absolute()),
                          record["outputs"]["weights_sha256"], trained=True, note=note)
    model.edgekit_config = replace(model.edgekit_config, num_classes=len(data.classes), labels=data.classes,
                                   weights=weights)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _export(spec: FinetuneSpec, result: FinetuneResult, data, decoded, train_items, val_items) -> None:
    """An export bundle of the fine-tuned model in DIR/export/, int8 calibrated on the training pictures, then its
    files scored on the validation pictures."""
    from ..bundle_eval import evaluate_bundle, open_bundle
    from ..pipeline import ExportSpec, run_export

    pictures = result.out / outputs.WORK_NAME / "training-pictures"
    _link_pictures(pictures, [data.items[i].path for i in train_items])
    calibration = result.out / outputs.WORK_NAME / "calibration"
    if spec.int8:
        calib_samples = _calibration_folder(calibration, data, decoded, train_items, result.model.edgekit_config,
                                            spec.seed)
    try:
        export_spec = ExportSpec(name=result.model.edgekit_config.name, weights=str(result.weights),
                                 formats=tuple(spec.formats), int8=spec.int8, calib=calibration if spec.int8 else None,
                                 calib_samples=calib_samples if spec.int8 else 1, data=pictures,
                                 latency_runs=spec.latency_runs, out=result.out / "export")
        result.manifest = run_export(export_spec, model=result.model)
    finally:
        shutil.rmtree(result.out / outputs.WORK_NAME, ignore_errors=True)
    bundle = result.manifest.published
    opened = open_bundle(bundle)
    items = [data.items[i] for i in val_items]
    scored = evaluate_bundle(opened, items, data={"source": str(data.source), "split": "validation"})
    result.evaluation = scored.to_dict()


def _calibration_folder(folder: Path, data, decoded, train_items: list[int], config, seed: int) -> int:
    """The training pictures plus CALIBRATION_VIEWS augmented views of each (up to CALIBRATION_LIMIT images in all):
    returns how many. With a few dozen pictures, their plain crops alone set activation ranges that random inputs and
    other framings exceed; on benchmarks/finetune_groups.py's task the views lifted the ONNX int8 file over the 32 dB
    PSNR gate in all 3 folds, mostly on the random-pixel parity inputs (docs/finetune.md). Views are written at the
    resize size, so the export's centre crop keeps most of each."""
    import math

    import numpy as np
    from PIL import Image

    from ..export_spec import CALIBRATION_MINIMUM
    from .data import augmented_view

    # all of them: above CALIBRATION_LIMIT the export draws a seeded sample across classes, as with --calib
    _link_pictures(folder, [data.items[i].path for i in train_items])
    per_picture = min(CALIBRATION_VIEWS, max(0, CALIBRATION_LIMIT - len(train_items)) // len(train_items))
    short = int(math.floor(config.resolution / config.preprocessing.crop_fraction))
    for number, item in enumerate(train_items if per_picture else []):
        for view in range(1, per_picture + 1):
            pixels = augmented_view(decoded.pictures[item], short, np.random.default_rng((seed, item, 10_000 + view)))
            Image.fromarray(np.round(pixels).astype(np.uint8)).save(
                folder / f"{number:05d}_view{view}_{data.items[item].path.stem}.png")
    total = min(len(train_items), CALIBRATION_LIMIT) * (1 + per_picture)
    info(f"[edgekit] int8 calibration: {min(len(train_items), CALIBRATION_LIMIT)} training pictures"
         + (f" and {per_picture} augmented views of each ({total} images)" if per_picture else ""))
    if len(train_items) < CALIBRATION_MINIMUM:
        info(f"[edgekit] note: {len(train_items)} distinct pictures are fewer than {CALIBRATION_MINIMUM}; augmented "
             "views widen the ranges, but more pictures of your own data would set them better")
    return total


def _link_pictures(folder: Path, paths: list[Path]) -> None:
    """The training pictures as one folder (symbolic links; copies where links are not allowed), for the export's
    --calib, which takes a folder."""
    shutil.rmtree(folder, ignore_errors=True)
    ensure_writable_dir(folder)
    for number, path in enumerate(paths):
        target = folder / f"{number:05d}_{path.name}"
        try:
            os.symlink(path.absolute(), target)
        except OSError:
            shutil.copyfile(path, target)
