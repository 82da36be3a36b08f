"""The pictures of a fine-tune: classes, the stratified train/validation split, decoding and augmentation.

Classes come from a folder with one sub-folder per class (sorted folder names = class order; the names become
labels.txt) or from a CSV with file,class_index (labels from ``--labels FILE`` or ``class_0..``). Every
picture is decoded once: its exact evaluation crop (``edgekit.images``, what validation and the exported
model see) and a copy scaled to the crop's shorter side, from which the training augmentation cuts its views.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..console import Progress, warn
from ..errors import EdgekitError
from ..images import LabelledImage, UnreadableImage, find_images, load_rgb, read_labelled_set, resize_and_crop
from ..types import Preprocessing

# Augmentation of the training split. Lighter than ImageNet training's crop (area 0.08-1): with a few dozen
# pictures per class the object must stay in view; jitter small enough that colour stays a usable cue.
CROP_AREA = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.2  # brightness, contrast and saturation each scaled by a factor in [1 - JITTER, 1 + JITTER]


@dataclass
class FinetuneData:
    """Labelled pictures with class names; ``items`` hold class indices into ``classes``."""

    items: list[LabelledImage]
    classes: tuple[str, ...]
    source: Path
    layout: str  # "class-folders" or "csv"

    @property
    def files_sha256(self) -> str:
        """sha256 of the sorted ``class<TAB>path`` lines (paths relative to the data): the same pictures in the same
        classes give the same hash wherever the folder lives."""
        root = self.source if self.source.is_dir() else self.source.parent
        lines = sorted(f"{self.classes[item.label]}\t{_relative(item.path, root)}" for item in self.items)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _relative(path: Path, root: Path) -> str:
    # absolute(), not resolve(): a class folder of symbolic links is hashed by its own names
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def read_data(source: Path, labels_file: Path | None = None) -> FinetuneData:
    """Class sub-folders or a labelled CSV (a folder holding labels.csv counts as the CSV)."""
    source = Path(source)
    if source.is_dir() and not (source / "labels.csv").is_file():
        if labels_file is not None:
            raise EdgekitError(f"--labels names the classes of a CSV; {source} is a folder whose sub-folder names "
                               "are the class names: drop --labels")
        return _read_class_folders(source)
    if not source.exists():
        raise EdgekitError(f"--data {source} does not exist; give a folder with one sub-folder per class or a CSV "
                           "with file,class_index")
    dataset = read_labelled_set(source)
    return _from_csv(list(dataset), dataset.source, labels_file)


def _read_class_folders(source: Path) -> FinetuneData:
    folders = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise EdgekitError(f"{source} has no class sub-folders; put the pictures of each class in "
                           f"{source}/<class name>/ (or give a CSV with file,class_index)")
    loose = [p for p in source.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")]
    if loose:
        warn(f"{len(loose)} picture(s) directly in {source} (e.g. {loose[0].name}) belong to no class folder and "
             "are ignored")
    items: list[LabelledImage] = []
    for index, folder in enumerate(folders):
        files = find_images(folder)
        if not files:
            raise EdgekitError(f"class folder {folder} has no readable image (no jpg, jpeg, png or bmp file); add "
                               "pictures of that class or remove the folder")
        items += [LabelledImage(path, index) for path in files]
    _check_classes(tuple(f.name for f in folders), source)
    return FinetuneData(items, tuple(f.name for f in folders), source, "class-folders")


def _from_csv(items: list[LabelledImage], csv_path: Path, labels_file: Path | None) -> FinetuneData:
    if labels_file is not None:
        if not labels_file.is_file():
            raise EdgekitError(f"--labels {labels_file} does not exist; give a text file with one class name per "
                               "line (line k = class k)")
        names = tuple(line.strip() for line in labels_file.read_text("utf-8").splitlines() if line.strip())
        where = f"the {len(names)} names of --labels {labels_file}"
    else:
        names = None
        where = "0 and up (pass --labels FILE with one class name per line to name them)"
    count = len(names) if names is not None else max(item.label for item in items) + 1
    bad = next((item for item in items if not 0 <= item.label < count), None)
    if bad is not None:
        raise EdgekitError(f"{csv_path}: class_index {bad.label} of {bad.path.name} is out of range: classes are "
                           f"numbered 0..{count - 1} ({where}); fix the row or the labels")
    empty = sorted(set(range(count)) - {item.label for item in items})
    if empty:
        raise EdgekitError(f"{csv_path}: no picture has class_index {', '.join(map(str, empty[:5]))}; every class "
                           f"0..{count - 1} needs pictures (renumber the classes, or fix --labels)")
    missing = next((item.path for item in items if not item.path.is_file()), None)
    if missing is not None:
        raise EdgekitError(f"{csv_path} lists {missing}, which does not exist; fix the row (paths are relative to "
                           "the CSV or to an images/ folder beside it)")
    classes = names if names is not None else tuple(f"class_{i}" for i in range(count))
    _check_classes(classes, csv_path)
    return FinetuneData(items, classes, csv_path, "csv")


def _check_classes(classes: tuple[str, ...], source: Path) -> None:
    if len(classes) < 2:
        raise EdgekitError(f"{source} holds one class ({classes[0] if classes else 'none'}); a classifier needs at "
                           "least two: add a folder (or rows) for each class the app must tell apart")


def split(items: list[LabelledImage], num_classes: int, val_fraction: float, seed: int,
          classes: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Stratified split: per class, ``round(val_fraction * n)`` pictures (at least one) for validation, the rest
    (at least one) for training; a seeded shuffle within each class. Returns item indices."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in range(num_classes):
        members = [i for i, item in enumerate(items) if item.label == label]
        need = 2
        if len(members) < need:
            raise EdgekitError(f"class {classes[label]!r} has {len(members)} readable picture(s): a {val_fraction:.0%} "
                               f"validation split needs at least {need} per class (one to train on, one to "
                               "validate); add pictures of that class")
        members = [members[i] for i in rng.permutation(len(members))]
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val += members[:n_val]
        train += members[n_val:]
    return sorted(train), sorted(val)


@dataclass
class DecodedPicture:
    """One picture decoded once: ``centre`` is the exact evaluation crop (uint8 HWC), ``scaled`` the whole picture
    with its shorter side at the crop's resize size, for augmented views."""

    centre: np.ndarray
    scaled: object  # PIL.Image


@dataclass
class DecodedSet:
    pictures: dict[int, DecodedPicture] = field(default_factory=dict)  # item index -> decoded
    unreadable: list[str] = field(default_factory=list)


def decode(items: list[LabelledImage], resolution: int, preprocessing: Preprocessing) -> DecodedSet:
    """Decode every picture; unreadable ones are listed (the caller decides whether a class is left empty)."""
    from PIL import Image

    decoded = DecodedSet()
    short = int(math.floor(resolution / preprocessing.crop_fraction))
    progress = Progress("decoding pictures", len(items))
    for index, item in enumerate(items):
        try:
            image = load_rgb(item.path)
            centre = resize_and_crop(image, resolution, preprocessing)
        except UnreadableImage as e:
            decoded.unreadable.append(str(e))
            progress.advance()
            continue
        w, h = image.size
        scale = short / min(w, h)
        scaled = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        decoded.pictures[index] = DecodedPicture(centre, scaled)
        progress.advance()
    return decoded


def check_readable(items: list[LabelledImage], decoded: DecodedSet, classes: tuple[str, ...], source: Path) -> None:
    """Every class keeps at least one readable picture; unreadable files are warned about and left out."""
    for label, name in enumerate(classes):
        members = [i for i, item in enumerate(items) if item.label == label]
        if members and not any(i in decoded.pictures for i in members):
            first = next((u for u in decoded.unreadable if str(items[members[0]].path) in u), decoded.unreadable[0])
            what = f"class folder {source / name}" if (source / name).is_dir() else f"class {name!r} of {source}"
            raise EdgekitError(f"{what} has no readable image ({len(members)} file(s), first: {first}); add "
                               "pictures that decode (jpg, png, bmp)")
    if decoded.unreadable:
        warn(f"skipped {len(decoded.unreadable)} unreadable picture(s), e.g. {decoded.unreadable[0]}")


def augmented_view(picture: DecodedPicture, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """A random resized crop (area CROP_AREA of the picture, aspect CROP_RATIO), a horizontal flip half of the
    time, and light brightness/contrast/saturation jitter: float32 HWC on the 0..255 pixel scale."""
    from PIL import Image

    image = picture.scaled
    w, h = image.size
    box = None
    for _ in range(10):
        area = w * h * rng.uniform(*CROP_AREA)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (x, y, x + cw, y + ch)
            break
    if box is None:  # a very elongated picture: its centre square
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    pixels = np.asarray(image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box), np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    pixels = pixels * brightness
    pixels = pixels.mean() + (pixels - pixels.mean()) * contrast
    grey = (pixels @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]
    pixels = grey + (pixels - grey) * saturation
    return np.clip(pixels, 0.0, 255.0)
