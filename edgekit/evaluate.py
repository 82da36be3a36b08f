"""Top-1 and top-5 accuracy on a labelled image set, for anything that maps images to class scores.

A *predictor* is any callable from an NCHW float32 batch to an [N, classes] array of logits or
probabilities: a PyTorch model (``torch_predictor``) or an exported .onnx/.tflite file
(``edgekit.runtimes.open_runtime``, which hides NHWC layout and integer input/output). Images are decoded
and preprocessed once per batch by ``edgekit.images``, so every predictor sees the very same tensors and
two predictors can be compared image by image (``top1_agreement``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .console import Progress
from .errors import EdgekitError
from .exporters.backend import backend_for
from .formats import format_of

__all__ = ["GOOGLE_QUANT_PREPROCESSING", "PREPROCESSING_PRESETS", "TF_SLIM_PREPROCESSING", "describe_preset",
           "quantized_input_preprocessing"]
from .images import LabelledImage, load_batch
from .runtimes import open_runtime
from .types import (GOOGLE_QUANT_PREPROCESSING, PREPROCESSING_PRESETS, TF_SLIM_PREPROCESSING, Preprocessing,
                    describe_preset, quantized_input_preprocessing)

Predictor = Callable[[np.ndarray], np.ndarray]

TOP_K = 5
BACKGROUND_OUTPUTS = 1001  # TF-slim ImageNet models: output 0 is "background", class k is output k + 1
BACKGROUND_MODES = ("auto", "drop", "none")

# TF-slim's eval preprocessing for float-input Google files: pixels / 255 mapped to [-1, 1]


# --- chance: a score that says nothing about the model ---------------------------------------------------------
CHANCE_P = 1e-3  # how unlikely a count must be under the hypothesis before edgekit says so
CHANCE_MARGIN = 0.10  # a model this many points above guessing would have shown on the images scored


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (no scipy in a files-only install)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def chance_problem(correct: int, images: int, classes: int) -> str | None:
    """Why a top-1 count says nothing about a model, or None: far below chance (the labels do not follow the
    model's class order), or indistinguishable from guessing on enough images that a model CHANCE_MARGIN above
    guessing would have been told apart. Both are judged at CHANCE_P, so a weak model on a handful of images is
    never accused."""
    if images <= 0 or classes < 2:
        return None
    chance = 1.0 / classes
    shown = f"top-1 {correct}/{images} ({100 * correct / images:.1f}%)"
    if _binomial_cdf(correct, images, chance) < CHANCE_P:
        return (f"{shown} is far below chance ({100 * chance:.1f}% with {classes} classes): the data's class "
                "indices do not follow the model's class order")
    above_chance = 1.0 - _binomial_cdf(correct - 1, images, chance) < CHANCE_P
    if not above_chance and _binomial_cdf(correct, images, min(1.0, chance + CHANCE_MARGIN)) < CHANCE_P:
        return (f"{shown} is what guessing scores ({100 * chance:.1f}% with {classes} classes): random or untrained "
                "weights, the wrong preprocessing, or class indices that do not follow the model's class order")
    return None


def scored_classes(outputs: int, background: str = "auto") -> int:
    """The classes a model with ``outputs`` scores once ``background`` (see ``evaluate``) has had its say."""
    drop = background == "drop" or (background == "auto" and outputs == BACKGROUND_OUTPUTS)
    return outputs - int(drop)


@dataclass
class Batch:
    """Preprocessed images with their labels; ``unreadable`` lists files skipped while building it."""

    inputs: np.ndarray  # [N, 3, H, W] float32
    labels: np.ndarray  # [N] int64
    files: list[Path]
    unreadable: list[str] = field(default_factory=list)  # "path: reason"


def image_batches(items: Sequence[LabelledImage], resolution: int, preprocessing: Preprocessing,
                  batch_size: int = 32) -> Iterator[Batch]:
    """Decode and preprocess ``items`` lazily, ``batch_size`` files at a time; undecodable files are skipped
    and named (a batch may then hold fewer images)."""
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        loaded = load_batch([item.path for item in chunk], resolution, preprocessing)
        yield Batch(loaded.nchw, np.asarray([chunk[i].label for i in loaded.indices], np.int64), loaded.files,
                    loaded.skipped)


@dataclass
class EvalResult:
    """Per-image top-k predictions and the figures derived from them."""

    files: list[str]
    labels: np.ndarray  # [N]
    topk: np.ndarray  # [N, k] class indices, best first
    unreadable: list[str]
    seconds: float  # the predictor's forward passes alone (decoding is shared, so not counted)
    background_dropped: bool = False
    num_outputs: int = 0

    @property
    def images(self) -> int:
        return len(self.labels)

    @property
    def correct_top1(self) -> int:
        return int((self.topk[:, 0] == self.labels).sum()) if self.images else 0

    @property
    def correct_top5(self) -> int:
        return int((self.topk == self.labels[:, None]).any(axis=1).sum()) if self.images else 0

    @property
    def top1(self) -> float:
        return self.correct_top1 / self.images if self.images else 0.0

    @property
    def top5(self) -> float:
        return self.correct_top5 / self.images if self.images else 0.0

    def to_dict(self) -> dict:
        return {
            "images": self.images, "top1": round(self.top1, 6), "top5": round(self.top5, 6),
            "correct_top1": self.correct_top1, "correct_top5": self.correct_top5, "k": int(self.topk.shape[1]),
            "model_outputs": self.num_outputs, "background_dropped": self.background_dropped,
            "unreadable": len(self.unreadable), "unreadable_files": self.unreadable[:100],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images / self.seconds, 2) if self.seconds > 0 else None,
        }


def evaluate(predictor: Predictor, batches: Iterable[Batch], *, total: int | None = None,
             background: str = "auto", label: str = "images") -> EvalResult:
    """Score ``predictor`` on ``batches``.

    ``background``: ``auto`` drops output 0 when there are exactly 1001 outputs (TF's ImageNet files, so that
    class k is output k + 1), ``drop`` always drops it, ``none`` never does.
    """
    return evaluate_many({label: predictor}, batches, total=total, background=background, label=label)[label]


def evaluate_many(predictors: dict[str, Predictor], batches: Iterable[Batch], *, total: int | None = None,
                  background: str = "auto", label: str = "images") -> dict[str, EvalResult]:
    """Score several predictors on the same batches: each batch is decoded once and fed to every predictor in
    turn, so all of them see identical tensors (and memory holds one batch, not the whole set). Each
    predictor's time is its own forward passes; ``background`` as in ``evaluate``, decided per predictor."""
    if background not in BACKGROUND_MODES:
        raise EdgekitError(f"background must be one of {', '.join(BACKGROUND_MODES)}, got {background!r}")
    if not predictors:
        raise EdgekitError("nothing to evaluate: no model or file given")
    progress = Progress(label, total)
    scorers = {name: _Scorer(predictor, background) for name, predictor in predictors.items()}
    files: list[str] = []
    labels: list[np.ndarray] = []
    unreadable: list[str] = []
    for batch in batches:
        unreadable.extend(batch.unreadable)
        if len(batch.labels):
            for scorer in scorers.values():
                scorer.score(batch)
            labels.append(batch.labels)
            files.extend(str(f) for f in batch.files)
        progress.advance(len(batch.labels) + len(batch.unreadable))
    if not files:
        first = f" (first: {unreadable[0]})" if unreadable else ""
        raise EdgekitError(f"none of the {len(unreadable)} images could be decoded{first}; give readable "
                           "jpg/png/bmp pictures")
    all_labels = np.concatenate(labels)
    return {name: EvalResult(list(files), all_labels, np.concatenate(s.topk), list(unreadable), s.seconds,
                             bool(s.drop), s.outputs)
            for name, s in scorers.items()}


class _Scorer:
    """One predictor's running top-k predictions, output count and forward time."""

    def __init__(self, predictor: Predictor, background: str):
        self.predictor, self.background = predictor, background
        self.topk: list[np.ndarray] = []
        self.drop: bool | None = None
        self.outputs = 0
        self.seconds = 0.0

    def score(self, batch: Batch) -> None:
        started = time.perf_counter()
        scores = np.asarray(self.predictor(batch.inputs), dtype=np.float32).reshape(len(batch.labels), -1)
        self.seconds += time.perf_counter() - started
        self.outputs = scores.shape[1]
        if self.drop is None:
            self.drop = self.background == "drop" or (self.background == "auto" and self.outputs == BACKGROUND_OUTPUTS)
        scores = scores[:, 1:] if self.drop else scores
        _check_labels(batch, scores.shape[1], self.drop)
        k = min(TOP_K, scores.shape[1])
        # argpartition then sort only the k best: cheap even for thousands of classes
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, best, axis=1).argsort(axis=1)[:, ::-1]
        self.topk.append(np.take_along_axis(best, order, axis=1))


def _check_labels(batch: Batch, classes: int, dropped: bool) -> None:
    bad = np.flatnonzero((batch.labels < 0) | (batch.labels >= classes))
    if bad.size:
        i = int(bad[0])
        note = " after dropping the background output" if dropped else ""
        raise EdgekitError(f"{batch.files[i]} has class {int(batch.labels[i])}, but the model scores {classes} "
                           f"classes{note}: the labels do not belong to this model")


def top1_agreement(a: EvalResult, b: EvalResult) -> float:
    """Fraction of images on which two predictors give the same top-1 class (same images required)."""
    if a.files != b.files:
        raise ValueError("the two results were computed on different images")
    return float((a.topk[:, 0] == b.topk[:, 0]).mean()) if a.images else 0.0


def torch_predictor(model) -> Predictor:
    """A PyTorch module as a predictor (no autograd; the caller chooses the batch size)."""
    import torch

    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if batch.dim() == 4:
            # the same values in channels-last memory, where oneDNN's convolutions run faster on a CPU (one thread,
            # 50 pictures at 224 px, AMD EPYC Zen 3: MobileNet v2 3.5 s -> 2.3 s, ResNet-50 11.1 s -> 8.3 s)
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return np.ascontiguousarray(model(batch).float().numpy())

    return predict


@dataclass
class EvalTarget:
    """What gets scored: a predictor and the input it expects (resolution, preprocessing, and why)."""

    name: str
    kind: str  # "model" (PyTorch with its weights) or "file" (.onnx/.tflite)
    predictor: Predictor
    resolution: int
    preprocessing: Preprocessing
    preprocessing_source: str
    details: dict = field(default_factory=dict)
    outputs: int | None = None  # scores per image, when known before running (None: a dynamic output)
    trained: bool | None = None  # False: random weights, known from the model or the file's edgekit metadata

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "resolution": self.resolution,
                "preprocessing": self.preprocessing.to_dict(), "preprocessing_source": self.preprocessing_source,
                **self.details}


def edgekit_file_metadata(path: str | Path) -> dict:
    """What edgekit embedded in one of its exported files (``exporters.common.edgekit_metadata``: model, resolution,
    classes, preprocessing, weights): the ``edgekit`` metadata entry of a .tflite, ``metadata_props`` of an .onnx.
    {} for a file edgekit did not write, or whose metadata cannot be read."""
    path = Path(path)
    found = format_of(path)
    try:
        if found is None:
            return {}
        data = backend_for(found.name).read_metadata(path)
    except Exception:  # noqa: BLE001 - optional facts: a file that cannot say them is fed as any other file
        return {}
    return data if isinstance(data, dict) and str(data.get("producer", "")).startswith("edgekit") else {}


def _recorded_preprocessing(metadata: dict) -> Preprocessing | None:
    """The preprocessing an edgekit file records, if it is complete and sane."""
    try:
        p = Preprocessing.from_dict(metadata["preprocessing"])
    except (KeyError, TypeError, ValueError):
        return None
    values = [*p.mean, *p.std, p.crop_fraction]
    if len(p.mean) != 3 or len(p.std) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                       for v in values):
        return None
    if min(p.std) <= 0 or not 0 < p.crop_fraction <= 1 or p.interpolation not in ("bilinear", "bicubic", "nearest"):
        return None
    return p


def model_target(model, preprocessing: Preprocessing | None = None) -> EvalTarget:
    """A PyTorch model fed the way its weights require (``model.edgekit_config``) unless told otherwise."""
    config = model.edgekit_config
    source = "given" if preprocessing is not None else f"recorded with the weights ({config.weights.source})"
    return EvalTarget(config.variant, "model", torch_predictor(model), config.resolution,
                      preprocessing or config.preprocessing, source, {"config": config.to_dict()},
                      outputs=config.num_classes, trained=config.weights.trained)


def file_target(path: str | Path, *, resolution: int | None = None, preprocessing: Preprocessing | None = None,
                threads: int | None = None, reference: bool = False, output: int | None = None) -> EvalTarget:
    """An exported .onnx/.tflite file; its input size comes from the file, its preprocessing from the caller, else
    from edgekit's metadata in the file (``edgekit_file_metadata``), else for integer input from the input's
    quantization (see ``quantized_input_preprocessing``). ``output`` picks the class scores of a file of several
    outputs (its bundle's manifest says which); without it such a file is refused."""

    path = Path(path)
    runner = open_runtime(path, threads, reference)
    if output is None and len(runner.outputs) > 1:
        raise EdgekitError(f"{path.name} gives {len(runner.outputs)} outputs; eval scores one: evaluate its bundle "
                           "folder, whose manifest names the output its labels belong to")
    output = output or 0
    spec = runner.inputs[0]
    if spec.layout not in ("NHWC", "NCHW"):
        raise EdgekitError(f"{path.name} takes input {spec.name} of shape {list(spec.shape)}, not an RGB image "
                           "(NHWC or NCHW with 3 channels); eval scores image classifiers only")
    height, width = (spec.shape[1], spec.shape[2]) if spec.layout == "NHWC" else (spec.shape[2], spec.shape[3])
    fixed = [s for s in (height, width) if isinstance(s, int) and s > 0]
    if len(fixed) == 2 and height != width:
        raise EdgekitError(f"{path.name} takes {height}x{width} images; edgekit evaluates square crops only")
    if fixed and resolution is not None and resolution != fixed[0]:
        raise EdgekitError(f"{path.name} takes {fixed[0]}x{fixed[0]} images, you asked for resolution {resolution}: "
                           "drop --resolution")
    resolution = fixed[0] if fixed else resolution
    if resolution is None:
        raise EdgekitError(f"{path.name} has a dynamic input size; pass --resolution")
    metadata = edgekit_file_metadata(path)
    recorded = _recorded_preprocessing(metadata) if metadata else None
    if preprocessing is not None:
        source = "given"
    elif recorded is not None:
        preprocessing = recorded
        source = f"recorded in the file's edgekit metadata ({metadata.get('producer')})"
    elif (derived := quantized_input_preprocessing(spec.dtype, spec.scale, spec.zero_point)) is not None:
        preprocessing = derived
        source = f"derived from the {spec.dtype} input's quantization (scale {spec.scale:g}, zero point " \
                 f"{spec.zero_point}), taking the input to be pixels"
    elif spec.dtype == "uint8":
        preprocessing = Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3)
        source = "uint8 input without quantization parameters: fed raw pixels"
    else:
        raise EdgekitError(f"{path.name} takes {spec.dtype} input, so the mean and std it was trained with are "
                           "not in the file: pass --preprocessing imagenet|tf, or --mean R G B --std R G B")
    details = {"file": str(path), "inputs": [s.to_dict() for s in runner.inputs],
               "outputs": [s.to_dict() for s in runner.outputs]}
    weights = metadata.get("weights") if isinstance(metadata.get("weights"), dict) else {}
    if metadata:
        details["edgekit"] = {"producer": metadata.get("producer"), "model": metadata.get("model"),
                              "weights": weights}
    scored = runner.outputs[output] if output < len(runner.outputs) else None
    last = scored.shape[-1] if scored is not None and scored.shape else None
    outputs = last if isinstance(last, int) and last > 0 else None
    trained = bool(weights["trained"]) if "trained" in weights else None
    predictor = runner if output == 0 else (lambda x: runner.run([x])[output])
    return EvalTarget(path.name, "file", predictor, int(resolution), preprocessing, source, details, outputs,
                      trained)
