"""Real, freely licensed photos available offline: parity inputs and the int8 fallback calibration set.

They are the sample images scikit-image ships inside its wheel (``skimage/data``), read as files: edgekit
never copies them and never downloads anything. Only the public-domain and CC0 pictures are used; the
licence of each is recorded here so a bundle's report can cite it. Several are greyscale on purpose
(``edgekit.images.load_rgb`` turns them into RGB, as a camera app would).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import EdgekitError


@dataclass(frozen=True)
class SamplePhoto:
    file: str
    subject: str
    licence: str


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("astronaut.png", "astronaut Eileen Collins (NASA)", "public domain"),
    SamplePhoto("chelsea.png", "Chelsea the cat (Stefan van der Walt)", "CC0"),
    SamplePhoto("coffee.png", "coffee cup (Rachel Michetti)", "CC0"),
    SamplePhoto("rocket.jpg", "Falcon 9 launch (SpaceX)", "public domain"),
    SamplePhoto("hubble_deep_field.jpg", "Hubble eXtreme Deep Field (NASA)", "public domain"),
    SamplePhoto("retina.jpg", "fundus photograph (Mikael Haggstrom)", "CC0"),
    SamplePhoto("ihc.png", "immunohistochemistry stain (CMMI)", "no known copyright restrictions"),
    SamplePhoto("camera.png", "man with a camera (Lav Varshney), greyscale", "CC0"),
    SamplePhoto("coins.png", "Greek coins from Pompeii (Brooklyn Museum), greyscale", "no known copyright restrictions"),
    SamplePhoto("brick.png", "brick wall (CC0Textures), greyscale", "CC0"),
    SamplePhoto("grass.png", "grass (linolafett), greyscale", "CC0"),
    SamplePhoto("gravel.png", "gravel (CC0Textures), greyscale", "CC0"),
)

SOURCE = "scikit-image sample data (skimage/data)"


@lru_cache(maxsize=1)
def _data_dir() -> Path:
    import importlib.util

    # find_spec locates the package without running its __init__
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise EdgekitError("the built-in sample photos come with scikit-image, which is not installed; "
                           "`pip install scikit-image` or pass an image folder (--data/--calib)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def sample_image_paths() -> list[Path]:
    """Every built-in photo, in a fixed order; an error naming the fix when any is missing."""
    folder = _data_dir()
    paths = [folder / photo.file for photo in SAMPLE_PHOTOS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise EdgekitError(f"scikit-image's sample photos {', '.join(missing)} are missing from {folder}; "
                           "reinstall scikit-image or pass an image folder (--data/--calib)")
    return paths


def licence_of(name: str) -> str | None:
    """Licence of a built-in photo by file name (None for the user's own pictures)."""
    return next((p.licence for p in SAMPLE_PHOTOS if p.file == name), None)
