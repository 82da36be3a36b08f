"""Decoding and preprocessing pictures the one standard way, everywhere edgekit feeds a model.

Pillow decodes; greyscale, CMYK, palette and alpha images become RGB; the shorter side is resized to
``floor(resolution / crop_fraction)`` and the centre ``resolution`` square is cut (torchvision's eval
transform). Calibration, parity and evaluation all go through here, so they agree to the pixel.
"""

from __future__ import annotations

import csv
import math
import os
import stat
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


# Pillow's own decompression-bomb threshold (89.5 megapixels): above it a picture is refused before decoding
MAX_PIXELS = 89_478_485
# What the resize before the centre crop may allocate: a 200000x1 strip would otherwise become 51 million pixels
# wide at 256 px high (13 GB of RGB) to keep one 224 px square
MAX_RESIZED_PIXELS = 50_000_000
# Modes Pillow converts to 8-bit RGB exactly; 16-bit and float greyscale (I;16, I, F) would be clipped, not scaled
_EXACT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


def load_rgb(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            raise UnreadableImage(f"{path}: not a regular file")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UnreadableImage(f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                                      f"{MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb or a scan); downscale it")
            if image.mode not in _EXACT_MODES:
                raise UnreadableImage(f"{path}: mode {image.mode} (16-bit or float pixels) has no exact 8-bit RGB "
                                      "conversion; save it as 8-bit")
            image.load()
            if image.mode != "RGB":
                # palette/alpha images go through RGBA so transparency does not turn into palette noise
                image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "PA", "LA") else image.convert("RGB")
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
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
    if new_w * new_h > MAX_RESIZED_PIXELS:
        raise UnreadableImage(f"{getattr(image, 'filename', '') or 'image'}: {w}x{h} is too elongated to resize "
                              f"to {short} px on its shorter side ({new_w}x{new_h}); crop it first")
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
    try:
        return normalize(resize_and_crop(load_rgb(path), resolution, preprocessing), preprocessing)
    except UnreadableImage as e:
        if str(e).startswith("image:"):  # resize_and_crop cannot always know the file's name
            raise UnreadableImage(f"{path}{str(e)[len('image'):]}") from None
        raise


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
    # utf-8-sig: a byte-order mark (Excel writes one) is read as such, not as part of the first column's name
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"file", "class_index"} <= set(reader.fieldnames):
                raise EdgekitError(f"{path} needs the columns file,class_index (found {reader.fieldnames}); "
                                   "fix the header")
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except csv.Error as e:
        raise EdgekitError(f"{path} is not a readable CSV ({e}); fix the file") from None
    if not rows:
        raise EdgekitError(f"{path} lists no images; add rows file,class_index")
    items = []
    for line, row in enumerate(rows, start=2):
        if not (row.get("file") or "").strip() or not (row.get("class_index") or "").strip():
            raise EdgekitError(f"{path}, line {line}: the row needs both a file and a class_index; fix the row")
        name = Path(row["file"])
        candidates = [name] if name.is_absolute() else [path.parent / name, path.parent / "images" / name]
        file = next((c for c in candidates if c.exists()), candidates[0])
        try:
            items.append(LabelledImage(file, int(row["class_index"])))
        except ValueError:
            raise EdgekitError(f"{path}: class_index {row['class_index']!r} of {row['file']} is not a "
                               "number; fix the row") from None
    return items
