"""Small models trained on real data on this machine, so that int8 is judged on trained weights. Shared by
tests/test_trained_int8.py (short runs) and benchmarks/train_lenet_digits.py / train_unet_shapes.py (full runs).

- Digits: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels, from 43 writers), upsampled to LeNet-5's
  32x32 and split in a seeded, class-stratified way into training and held-out images.
- Shapes: a segmentation task made from the shared everyday photos: circles, squares and triangles in random
  colours and sizes are painted onto random crops of the photos, and the mask is the painted pixels themselves
  (no anti-aliasing), so every label is exact. The held-out images use photos the network never saw in training.

Everything is seeded; the training loops use one thread count and a fixed order, so a run is repeatable on one CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DIGIT_SIDE = 32
SHAPE_CLASSES = ("background", "circle", "square", "triangle")
# Held-out backgrounds: never used for training images (cat.bmp and resized_cat.bmp are one photo, both in training)
HELD_OUT_PHOTOS = ("grace_hopper.bmp", "owl.jpg", "sunflower.bmp")


# ---------------------------------------------------------------------------------------------- digits
@dataclass
class Split:
    """Images as uint8 pixels (N, H, W) or (N, H, W, 3), labels or masks, for training and held out."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def digits_split(held_out: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's digits as 32x32 uint8 greyscale pixels (0..255, ink bright), stratified split."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    # 8x8 -> 32x32 with bilinear interpolation: the digit fills the frame, as LeNet-5's 32x32 input expects
    big = F.interpolate(pixels, size=(DIGIT_SIDE, DIGIT_SIDE), mode="bilinear", align_corners=False)
    images = big[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):  # stratified: the same share of every digit held out
        members = np.flatnonzero(labels == digit)
        test[rng.choice(members, size=round(len(members) * held_out), replace=False)] = True
    return Split(images[~test], labels[~test], images[test], labels[test])


def digit_inputs(pixels: np.ndarray, preprocessing) -> np.ndarray:
    """uint8 (N, 32, 32) grey digits -> float32 (N, 1, 32, 32) LeNet-5 inputs, normalised as edgekit normalises a
    picture for the model (lenet5's preprocessing is greyscale: luma, which is the grey value itself here)."""
    from edgekit.images import normalize

    return normalize(digit_pictures(pixels, pixels.shape[1]), preprocessing)


def digit_pictures(pixels: np.ndarray, side: int = 36) -> np.ndarray:
    """Grey digits as RGB pictures on a black border of ``side``: edgekit's resize (shorter side to
    floor(32 / 0.875) = 36) then leaves them alone and its centre crop gives back the 32x32 digit exactly."""
    pad = (side - pixels.shape[1]) // 2
    framed = np.pad(pixels, ((0, 0), (pad, side - pixels.shape[1] - pad), (pad, side - pixels.shape[2] - pad)))
    return np.repeat(framed[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------- shapes
def _photos(data: Path, held_out: bool) -> list[np.ndarray]:
    from PIL import Image

    folder = Path(data) / "photos"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".bmp", ".jpg", ".jpeg", ".png"))
    chosen = [p for p in files if (p.name in HELD_OUT_PHOTOS) == held_out]
    if not chosen:
        raise FileNotFoundError(f"no photos for the shapes task in {folder}")
    photos = []
    for path in chosen:
        with Image.open(path) as image:
            photos.append(np.asarray(image.convert("RGB")))
    return photos


def _crop(photo: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of 30-100% of the photo's shorter side, resized to ``side``."""
    from PIL import Image

    h, w = photo.shape[:2]
    size = int(rng.uniform(0.3, 1.0) * min(h, w))
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    crop = Image.fromarray(photo[top:top + size, left:left + size])
    return np.asarray(crop.resize((side, side), Image.BILINEAR))


def _shape_mask(kind: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one shape, decided at pixel centres: exact by construction."""
    y, x = np.mgrid[0:side, 0:side] + 0.5
    radius = rng.uniform(0.12, 0.3) * side
    cy, cx = rng.uniform(radius, side - radius, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == 1:  # circle
        return (y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2
    # square and triangle: rotated, inscribed in the same circle; inside = on the inner side of every edge
    corners = 4 if kind == 2 else 3
    angles = angle + 2 * math.pi * np.arange(corners) / corners
    vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
    inside = np.ones((side, side), dtype=bool)
    for i in range(corners):
        ay, ax, by, bx = vy[i], vx[i], vy[(i + 1) % corners], vx[(i + 1) % corners]
        inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0
    return inside


def shapes_images(count: int, side: int, data: Path, held_out: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` RGB images (N, side, side, 3) uint8 and their masks (N, side, side) int64 of SHAPE_CLASSES indices:
    one to three shapes, each a random solid colour with a little pixel noise, painted over a photo crop; a later
    shape covers an earlier one, and the mask says what is visible."""
    rng = np.random.default_rng(seed)
    photos = _photos(data, held_out)
    images = np.empty((count, side, side, 3), dtype=np.uint8)
    masks = np.zeros((count, side, side), dtype=np.int64)
    for n in range(count):
        image = _crop(photos[rng.integers(len(photos))], side, rng).astype(np.int16)
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, len(SHAPE_CLASSES)))
            inside = _shape_mask(kind, side, rng)
            colour = rng.integers(0, 256, size=3)
            noise = rng.integers(-12, 13, size=(int(inside.sum()), 3))
            image[inside] = np.clip(colour + noise, 0, 255)
            masks[n][inside] = kind
        images[n] = image.astype(np.uint8)
    return images, masks


def shapes_split(side: int, data: Path, train: int = 2000, test: int = 300, seed: int = 0) -> Split:
    train_x, train_y = shapes_images(train, side, data, held_out=False, seed=seed)
    test_x, test_y = shapes_images(test, side, data, held_out=True, seed=seed + 1)
    return Split(train_x, train_y, test_x, test_y)


# ---------------------------------------------------------------------------------------------- training
def train(model, inputs: np.ndarray, targets: np.ndarray, epochs: int, batch: int = 32, lr: float = 2e-3,
          seed: int = 0, balance: bool = False, log=None):
    """Adam with cross-entropy (per image for classifiers, per pixel for masks), cosine learning-rate decay,
    a seeded order; returns the model in eval mode. ``balance`` weighs each class by 1/sqrt(its share), so
    that a mask that is 80% background does not teach 'everything is background' first."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
    weight = None
    if balance:
        share = np.bincount(targets.ravel()) / targets.size
        weight = torch.from_numpy((1 / np.sqrt(np.maximum(share, 1e-6)) / np.sum(share / np.sqrt(
            np.maximum(share, 1e-6)))).astype(np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(model(x[index]), y[index], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    return model.eval()


def predict(run, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """``run`` (a torch module or an edgekit runtime) on NCHW float32 ``inputs``, as one float32 array."""
    import torch

    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        if isinstance(run, torch.nn.Module):
            with torch.no_grad():
                outputs.append(run(torch.from_numpy(chunk)).numpy())
        else:
            outputs.append(run(chunk))
    return np.concatenate(outputs).astype(np.float32)


def segmentation_scores(logits: np.ndarray, masks: np.ndarray, classes: int) -> dict:
    """Per-pixel accuracy and IoU per class of ``logits`` (N, classes, H, W) against exact ``masks`` (N, H, W)."""
    predicted = logits.reshape(len(masks), classes, *masks.shape[1:]).argmax(axis=1)
    iou = []
    for c in range(classes):
        union = np.logical_or(predicted == c, masks == c).sum()
        iou.append(float(np.logical_and(predicted == c, masks == c).sum() / union) if union else math.nan)
    return {"pixel_accuracy": float(np.mean(predicted == masks)), "iou": iou, "mean_iou": float(np.nanmean(iou))}


def save_images(images: np.ndarray, folder: Path) -> Path:
    """Write uint8 images as PNG files (calibration and parity pictures for edgekit export)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return folder


# ---------------------------------------------------------------------------------------------- export and score
def save_state(model, path: Path) -> Path:
    """The trained state_dict, the file `edgekit export --weights` takes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def as_trained(model, weights: Path):
    """``model`` with its edgekit_config saying its weights are trained and come from ``weights``, so that
    export gates its int8 files."""
    from edgekit.fileio import sha256_file
    from edgekit.models.registry import with_config
    from edgekit.types import WeightsInfo

    info = WeightsInfo(str(weights), "file", str(weights), sha256_file(weights), trained=True)
    return with_config(model, weights=info)


def export_bundle(model, out: Path, calib: Path, data: Path, labels: Path | None = None, **options):
    """``edgekit export`` of ``model`` (carrying its edgekit_config) with fp32 and int8 ONNX and TFLite,
    calibrated on ``calib`` and checked for parity on ``data``; returns (manifest, bundle folder)."""
    from edgekit.pipeline import ExportSpec, run_export

    config = model.edgekit_config
    spec = ExportSpec(config.name, width=config.width, resolution=config.resolution,
                      num_classes=config.num_classes, int8=True, calib=calib, data=data, out=out, labels=labels,
                      **({"latency_runs": 0, "layer_samples": 0} | options))
    manifest = run_export(spec, model=model)
    return manifest, out / config.variant


def score_files(bundle: Path, manifest, inputs: np.ndarray, score) -> list[dict]:
    """``score(outputs)`` (a dict of figures) for every file of the bundle run by edgekit's runtimes (the host's
    kernels) on ``inputs``, with the file's size and its parity verdict."""
    from edgekit.runtimes import open_runtime

    verdicts = {p.artifact: p.verdict for p in manifest.parity}
    rows = []
    for artifact in manifest.artifacts:
        outputs = predict(open_runtime(bundle / artifact.path), inputs)
        rows.append({"file": artifact.path, "format": artifact.format, "precision": artifact.precision,
                     "bytes": artifact.bytes, "parity": verdicts.get(artifact.path, "-")} | score(outputs))
    return rows


# ---------------------------------------------------------------------------------------------- embeddings
def siamese_on_google_weights(tflite: Path, resolution: int, embed_dim: int = 128, seed: int = 0):
    """The zoo's Siamese network on a trained backbone: the features of one of Google's ImageNet MobileNet
    .tflite files (imported by edgekit, TF SAME padding and the file's preprocessing kept), then the zoo's pool
    and a seeded random Linear projection to ``embed_dim``, L2-normalised. No trained Siamese head exists on this
    machine; a random projection keeps the distances of the trained features roughly (Johnson-Lindenstrauss),
    so the embeddings are those of a trained network, as int8 must be judged on."""
    from dataclasses import replace

    from edgekit.models import create_model
    from edgekit.models.registry import resolve_config
    from edgekit.models.siamese import SiameseNet

    family = "mobilenet_v1" if "mobilenet_v1" in Path(tflite).name else "mobilenet_v2"
    classifier = create_model(family, weights=str(tflite), resolution=resolution)
    imported = classifier.edgekit_config
    torch.manual_seed(seed)
    net = SiameseNet(family, embed_dim=embed_dim, width=imported.width)
    net.backbone = classifier.features
    net.edgekit_config = replace(resolve_config("siamese", num_classes=embed_dim, resolution=resolution),
                                 width=imported.width, padding=imported.padding,
                                 preprocessing=imported.preprocessing, weights=imported.weights)
    return net.eval()
