"""Decoding and preprocessing pictures the one standard way, everywhere edgekit feeds a model.

Pillow decodes; greyscale, CMYK, palette and alpha images become RGB; the shorter side is resized to
``floor(resolution / crop_fraction)`` and the centre ``resolution`` square is cut (torchvision's eval
transform). Calibration, parity and evaluation all go through here, so they agree to the pixel.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .console import Progress
from .errors import EdgekitError
from .types import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_INTERPOLATION = {"bilinear": 2, "bicubic": 3, "nearest": 0}  # PIL.Image.Resampling values


class UnreadableImage(Exception):
    """One file could not be decoded; callers count and skip it."""


def load_rgb(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "RGB":
                # palette/alpha images go through RGBA so transparency does not turn into palette noise
                image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "PA", "LA") else image.convert("RGB")
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(f"{path}: {e}") from None


def resize_and_crop(image, resolution: int, preprocessing: Preprocessing) -> np.ndarray:
    """Standard eval crop as uint8 HWC RGB: what a camera pipeline would hand a uint8-input model."""
    resample = _INTERPOLATION[preprocessing.interpolation]
    short = int(math.floor(resolution / preprocessing.crop_fraction))
    w, h = image.size
    if w <= h:
        new_w, new_h = short, max(short, int(short * h / w))
    else:
        new_w, new_h = max(short, int(short * w / h)), short
    image = image.resize((new_w, new_h), resample=resample)
    left = int(round((new_w - resolution) / 2.0))
    top = int(round((new_h - resolution) / 2.0))
    image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.uint8)


def normalize(pixels_hwc: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """uint8 HWC (or NHWC) RGB -> float32 CHW (or NCHW) model input."""
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    x = (pixels_hwc.astype(np.float32) - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_file(path: Path, resolution: int, preprocessing: Preprocessing) -> np.ndarray:
    return normalize(resize_and_crop(load_rgb(path), resolution, preprocessing), preprocessing)


@dataclass
class LoadedImages:
    """Preprocessed pictures: ``nchw`` float32 [N, 3, H, W], the files they came from and their positions in
    the list asked for, and ``skipped`` ("path: reason") for each file that could not be decoded."""

    nchw: np.ndarray
    files: list[Path]
    indices: list[int]
    skipped: list[str]


def load_batch(paths: Sequence[Path], resolution: int, preprocessing: Preprocessing, *, limit: int | None = None,
               progress_label: str | None = None) -> LoadedImages:
    """Decode and preprocess ``paths`` in order, skipping (and naming) files that cannot be decoded, until
    ``limit`` pictures are loaded (all by default). What to say about skipped files is the caller's business:
    only it knows what the pictures are for."""
    wanted = len(paths) if limit is None else min(limit, len(paths))
    progress = Progress(progress_label, wanted) if progress_label else None
    arrays: list[np.ndarray] = []
    files: list[Path] = []
    indices: list[int] = []
    skipped: list[str] = []
    for index, path in enumerate(paths):
        if len(arrays) == wanted:
            break
        try:
            arrays.append(preprocess_file(path, resolution, preprocessing))
        except UnreadableImage as e:
            skipped.append(str(e))
            continue
        files.append(Path(path))
        indices.append(index)
        if progress:
            progress.advance()
    nchw = np.stack(arrays).astype(np.float32, copy=False) if arrays else \
        np.zeros((0, 3, resolution, resolution), np.float32)
    return LoadedImages(nchw, files, indices, skipped)


def find_images(folder: Path) -> list[Path]:
    """Every picture below ``folder`` (recursive), sorted so runs are reproducible."""
    if not folder.is_dir():
        raise EdgekitError(f"image folder {folder} does not exist; check the path")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int


def read_labelled_set(source: Path) -> list[LabelledImage]:
    """A CSV with ``file,class_index`` columns (paths relative to the CSV or to an ``images/`` folder beside
    it), or a folder with one sub-folder per class (classes numbered in sorted folder order)."""
    if source.is_file():
        return _read_csv(source)
    if not source.is_dir():
        raise EdgekitError(f"labelled data {source} does not exist; give a CSV (file,class_index) or a folder "
                           "with one sub-folder per class")
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    items = [LabelledImage(img, index) for index, folder in enumerate(classes) for img in find_images(folder)]
    if not items:
        raise EdgekitError(f"no images found in class sub-folders of {source}; expected {source}/<class>/*.jpg "
                           "or a CSV with file,class_index")
    return items


def _read_csv(path: Path) -> list[LabelledImage]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "class_index"} <= set(reader.fieldnames):
            raise EdgekitError(f"{path} needs the columns file,class_index (found {reader.fieldnames}); "
                               "fix the header")
        rows = list(reader)
    if not rows:
        raise EdgekitError(f"{path} lists no images; add rows file,class_index")
    items = []
    for row in rows:
        name = Path(row["file"])
        candidates = [name] if name.is_absolute() else [path.parent / name, path.parent / "images" / name]
        file = next((c for c in candidates if c.exists()), candidates[0])
        try:
            items.append(LabelledImage(file, int(row["class_index"])))
        except ValueError:
            raise EdgekitError(f"{path}: class_index {row['class_index']!r} of {row['file']} is not a "
                               "number; fix the row") from None
    return items
