"""Calibration images for post-training quantization: real pictures, preprocessed exactly as the weights require.

Both int8 back-ends (ONNX Runtime and ai-edge-quantizer) read activation ranges from these tensors, so the
preprocessing here is the one parity and evaluation use (``edgekit.images``): a different crop or mean would
calibrate ranges the deployed model never sees.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..console import warn
from ..errors import EdgekitError
from ..images import find_images, load_batch
from ..types import Preprocessing

# Files are drawn in a seeded shuffle so that a folder sorted by class still gives every class a chance
# when --calib-samples is smaller than the folder; the seed keeps the choice (and the int8 file) reproducible.
_SHUFFLE_SEED = 0


def input_range(calibration: "CalibrationSet") -> tuple[float, float]:
    """The model input's quantization range: every value the preprocessing can produce, not only those the
    calibration images happened to reach (a camera frame may be pure black or white).

    When mean and std are the same for the three channels this range puts the quantization grid on the pixel
    grid: scale = 1 / std, zero point = mean (uint8), so a uint8 input is the raw camera byte and an int8
    input is the byte - 128, with no rounding at all (Google's MobileNets: scale 1/128, zero point 128).
    """
    p = calibration.preprocessing
    # not Preprocessing.value_range, which rounds to 6 decimals: the grid must be exact
    return (min((0.0 - m) / s for m, s in zip(p.mean, p.std)), max((255.0 - m) / s for m, s in zip(p.mean, p.std)))


def per_input(nchw: np.ndarray, count: int) -> list[np.ndarray]:
    """Pictures for a model of ``count`` picture inputs: input K sees them shifted by K, so every input gets a
    different picture than input 0 (a pair model sees pairs), each with the same preprocessing. One input: the
    pictures as they are."""
    return [nchw] + [np.roll(nchw, -k, axis=0) for k in range(1, count)]


@dataclass
class CalibrationSet:
    """Preprocessed calibration images, ``nchw`` float32 [N, 3, H, W], and where they came from."""

    nchw: np.ndarray
    source: str
    files: list[Path]
    preprocessing: Preprocessing
    resolution: int
    skipped: list[str] = field(default_factory=list)  # "path: reason" of each unreadable file
    # not named `builtin`: that name is the constructor below, which a field would shadow on instances
    from_builtin_photos: bool = False

    @property
    def batches(self) -> np.ndarray:
        return self.nchw

    @property
    def nhwc(self) -> np.ndarray:
        """The same images channels-last, as a TFLite model's [1, H, W, 3] input takes them."""
        return np.ascontiguousarray(np.moveaxis(self.nchw, 1, -1))

    def __len__(self) -> int:
        return len(self.nchw)

    def inputs(self, count: int) -> list[np.ndarray]:
        """What a model of ``count`` picture inputs is calibrated on (``per_input``)."""
        return per_input(self.nchw, count)

    def to_dict(self) -> dict:
        """What the manifest records: enough to tell which pictures set the int8 ranges."""
        return {
            "source": self.source,
            "builtin": self.from_builtin_photos,
            "samples": len(self.nchw),
            "resolution": self.resolution,
            "files": [f.name for f in self.files],
            "skipped": len(self.skipped),
            "skipped_files": self.skipped[:20],
        }

    @classmethod
    def from_folder(cls, folder: Path, preprocessing: Preprocessing, resolution: int, samples: int) -> "CalibrationSet":
        """Up to ``samples`` pictures from ``folder`` (recursive; jpg, jpeg, png, bmp); unreadable files are
        counted, skipped and reported; a folder without one usable picture is an error."""
        folder = Path(folder)
        if samples < 1:
            raise EdgekitError(f"calibration needs at least 1 sample, got {samples}; raise --calib-samples")
        candidates = find_images(folder)
        if not candidates:
            raise EdgekitError(f"calibration folder {folder} holds no images (jpg, jpeg, png, bmp, searched "
                               "recursively); point --calib at a folder of representative pictures")
        random.Random(_SHUFFLE_SEED).shuffle(candidates)
        return cls._load(candidates, str(folder), preprocessing, resolution, samples, builtin=False)

    @classmethod
    def from_files(cls, files: list[Path], preprocessing: Preprocessing, resolution: int,
                   source: str | None = None) -> "CalibrationSet":
        """Exactly these pictures, in this order (tests and benchmarks that hold out a scored slice)."""
        if not files:
            raise EdgekitError("no calibration images given; pass at least one picture")
        return cls._load(list(files), source or f"{len(files)} files", preprocessing, resolution, len(files),
                         builtin=False)

    @classmethod
    def builtin(cls, preprocessing: Preprocessing, resolution: int, samples: int,
                warned: bool = False) -> "CalibrationSet":
        """The real photos shipped with edgekit: a fallback that works offline, with a warning (unless the caller
        ``warned`` already), because pictures from the user's own domain set better ranges."""
        from ..sample_images import sample_image_paths

        files = list(sample_image_paths())
        if not warned:
            warn(f"calibrating int8 on edgekit's {len(files)} built-in photos; pass --calib DIR with a few hundred "
                 "pictures from your own data for better int8 accuracy")
        return cls._load(files, "builtin sample photos", preprocessing, resolution, min(samples, len(files)),
                         builtin=True)

    @classmethod
    def _load(cls, candidates: list[Path], source: str, preprocessing: Preprocessing, resolution: int,
              samples: int, builtin: bool) -> "CalibrationSet":
        loaded = load_batch(candidates, resolution, preprocessing, limit=samples, progress_label="calibration images")
        if loaded.skipped:
            warn(f"skipped {len(loaded.skipped)} unreadable image(s) in {source}, e.g. {loaded.skipped[0]}")
        if not loaded.files:
            raise EdgekitError(f"none of the {len(candidates)} images in {source} could be read "
                               f"(first: {loaded.skipped[0]}); give a folder of valid jpg/png/bmp pictures")
        return cls(loaded.nchw, source, loaded.files, preprocessing, resolution, loaded.skipped, builtin)
