"""Parity: does an exported file compute what the PyTorch model computes? Metrics, gates and inputs.

The reference is the PyTorch model in eval mode, run once on a fixed set of inputs (real photos plus
seeded random pictures, preprocessed as the weights require). Each artifact runs on the same inputs through
``edgekit.runtimes`` and is compared logit by logit. Gates turn the figures into pass/fail; their defaults
per precision are data (``DEFAULT_GATES``) and can be overridden from the command line.

This module imports numpy and the runtimes only, never torch: ``edgekit validate`` runs it on a machine
that has ONNX Runtime and LiteRT alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .console import warn
from .cpu import describe, host_cpu, missing_dot_product
from .errors import EdgekitError
from .images import load_batch, normalize
from .runtimes import REFERENCE_PATHS, open_runtime, runner_class

__all__ = ["REFERENCE_PATHS"]  # the portable path per suffix, named by bundle_eval and emulate
from .types import Preprocessing

PRECISIONS = ("fp32", "fp16", "int8")
# What a model's output is; it decides which figures parity measures beyond errors, cosine and PSNR.
# classifier: [N, classes] scores -> top-1/top-5 agreement. dense: [N, classes, H, W] per-pixel scores (U-Net)
# -> per-pixel argmax agreement and IoU per class. embedding: [N, dim] vectors compared by distance (Siamese)
# -> cosine, and the agreement of same/different decisions on pairs at the task's distance threshold.
TASKS = ("classifier", "dense", "embedding")


@dataclass(frozen=True)
class OutputTask:
    """A model output's task, as the model registry declares it and the manifest records it (``model.task``).
    ``distance_threshold`` (embeddings only): a pair of images is 'same' when their embeddings are closer."""

    kind: str = "classifier"
    distance_threshold: float | None = None
    threshold_source: str | None = None

    def __post_init__(self):
        if self.kind not in TASKS:
            raise EdgekitError(f"unknown output task {self.kind!r}: expected one of {', '.join(TASKS)}")
        if self.distance_threshold is not None and not (math.isfinite(self.distance_threshold)
                                                        and self.distance_threshold > 0):
            raise EdgekitError(f"embedding distance threshold {self.distance_threshold!r} must be a positive number")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict | str | None) -> "OutputTask":
        """The manifest's record; a bundle from before tasks existed holds a classifier."""
        if not d:
            return CLASSIFIER
        if isinstance(d, str):
            return cls(d)
        threshold = d.get("distance_threshold")
        return cls(str(d.get("kind", "classifier")), None if threshold is None else float(threshold),
                   d.get("threshold_source"))


CLASSIFIER = OutputTask()


def infer_task(output_shape: tuple[int, ...]) -> OutputTask:
    """For a model the registry does not know: 4-D outputs are per-pixel scores, anything else class scores."""
    return OutputTask("dense" if len(output_shape) == 4 else "classifier")


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pair (i < j) of rows, in np.triu_indices order."""
    e = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    i, j = np.triu_indices(len(e), k=1)
    return np.linalg.norm(e[i] - e[j], axis=1)


# Below this gap between the two middle pair distances (relative to the embeddings' norm), a same/different
# threshold between them is within float rounding of both: fp32 files would disagree on decisions they share.
# Measured (AMD EPYC Zen 3): fp32 files match PyTorch to ~1e-6 of the norm (123-136 dB); untrained Siamese
# networks give gaps of 0.6-2.6e-8 (every picture one point); the zoo's Siamese on Google's v1 0.25 features, 16
# parity photos, 8.0e-5 (a real decision, which 1e-4 wrongly refused). 1e-5 sits 10x above float rounding.
DECISION_GAP_MIN = 1e-5


def embedding_task(reference: np.ndarray, real: np.ndarray | None = None,
                   threshold: float | None = None) -> OutputTask:
    """The embedding task with ``threshold`` (the app's, when the model declares one), else the point halfway
    between the two middle distances of the reference's pairs of real pictures: half the pairs are 'same', so
    the decision is as sensitive to a changed embedding as it can be, and no pair sits on the threshold itself
    (where float rounding alone would flip it). Recorded in the manifest, so validate uses the same one."""
    if threshold is not None:
        return OutputTask("embedding", float(threshold), "declared by the model")
    rows = np.asarray(reference)[np.asarray(real, dtype=bool)] if real is not None and np.any(real) else reference
    distances = np.sort(pair_distances(rows))
    middle = len(distances) // 2
    if len(distances) < 2 or not distances[middle] > 0:
        return OutputTask("embedding")
    scale = float(np.median(np.linalg.norm(np.asarray(rows, dtype=np.float64).reshape(len(rows), -1), axis=1)))
    if distances[middle] - distances[middle - 1] < DECISION_GAP_MIN * scale:
        # the pictures' embeddings do not separate (an untrained network maps them all to one point): any
        # threshold sits where float rounding alone flips decisions, so there is no decision to compare
        return OutputTask("embedding")
    return OutputTask("embedding", float((distances[middle - 1] + distances[middle]) / 2),
                      f"halfway between the two middle distances of the PyTorch embeddings' {len(distances)} "
                      "pairs of parity pictures (half the pairs same)")


# ---------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class ParityMetrics:
    """How far an artifact's outputs are from the reference on the same inputs.

    ``psnr_db`` = 20 log10(max|reference| / RMS error) over all logits (inf when identical);
    ``top5_agreement`` is the mean overlap of the two top-5 sets (1.0: same five classes). Errors, cosine and
    PSNR count every input; the agreements count the real pictures only when there are any, because the class
    a network picks for random noise is a near-tie that means nothing.

    By task (NaN where a figure does not apply): classifiers get top-1/top-5 agreement; dense outputs get
    ``pixel_agreement`` (share of pixels whose argmax class is the reference's) and IoU per class of the two
    argmax masks (``iou_per_class``, NaN for a class neither mask holds; ``iou_min`` the worst of the classes on
    at least IOU_MIN_SHARE of the pixels); embeddings get
    ``decision_agreement``, the share of pairs of inputs that both call same (or both different) at
    ``distance_threshold``. Cosine is per output row: a whole mask, or one embedding.
    """

    samples: int
    max_abs_error: float
    mean_abs_error: float
    cosine_min: float
    cosine_mean: float
    psnr_db: float
    top1_agreement: float  # NaN when no real picture was compared
    top5_agreement: float
    finite: bool = True  # False when the candidate's outputs hold NaN or infinity
    task: str = "classifier"
    pixel_agreement: float = math.nan
    iou_min: float = math.nan
    iou_per_class: tuple[float, ...] = ()
    decision_agreement: float = math.nan
    distance_threshold: float = math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        d["psnr_db"] = "inf" if math.isinf(self.psnr_db) else self.psnr_db  # JSON has no infinity
        for key in _TASK_METRICS + ("distance_threshold",):  # nor NaN
            d[key] = None if math.isnan(d[key]) else d[key]
        d["iou_per_class"] = [None if math.isnan(v) else v for v in self.iou_per_class]
        for key in ("max_abs_error", "mean_abs_error", "cosine_min", "cosine_mean"):
            d[key] = d[key] if math.isfinite(d[key]) else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ParityMetrics":
        def number(key):
            value = d.get(key)
            return math.nan if value is None else float(value)

        values = {f.name: number(f.name) for f in fields(cls)
                  if f.name not in ("samples", "finite", "task", "iou_per_class")}
        return cls(samples=int(d["samples"]), finite=bool(d.get("finite", True)), task=d.get("task", "classifier"),
                   iou_per_class=tuple(math.nan if v is None else float(v) for v in d.get("iou_per_class") or ()),
                   **values)

    def task_summary(self) -> str:
        """The task's own figures in a few words, for tables: '-' for a classifier (top-k has its columns)."""
        if self.task == "dense" and not math.isnan(self.pixel_agreement):
            ious = " ".join("-" if math.isnan(v) else f"{v:.3f}" for v in self.iou_per_class)
            return f"pixels {self.pixel_agreement:.2%}, IoU {ious}"
        if self.task == "embedding" and not math.isnan(self.decision_agreement):
            return f"pair decisions {self.decision_agreement:.1%} at distance {self.distance_threshold:.4g}"
        return "-"


# Agreements that only some tasks have, or that need real pictures: NaN there, and then never gated
TASK_FIGURES = {"classifier": ("top1_agreement", "top5_agreement"), "dense": ("pixel_agreement", "iou_min"),
                "embedding": ("decision_agreement",)}
_TASK_METRICS = tuple(m for figures in TASK_FIGURES.values() for m in figures)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, candidate: np.ndarray, real: np.ndarray | None = None,
            task: OutputTask = CLASSIFIER) -> ParityMetrics:
    """Metrics of ``candidate`` against ``reference``: [N, classes] scores, [N, classes, H, W] per-pixel scores
    or [N, dim] embeddings as ``task`` says (a candidate may come flattened per input, in the reference's
    order); ``real`` marks the inputs that are real pictures (the ones the agreements are measured on)."""
    shape = np.shape(reference)
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise EdgekitError(f"output shape {out.shape} does not match the reference {ref.shape}; the file was "
                           "exported for another model or number of classes")
    finite = bool(np.isfinite(out).all())
    if not finite:  # judged as failed by every gate table; figures over the finite entries would flatter it
        out = np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float32).max, neginf=-np.finfo(np.float32).max)
    diff = out - ref
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    # two all-zero vectors agree perfectly; one zero vector against a non-zero one does not
    cosine = np.where(norms > 0, np.sum(ref * out, axis=1) / np.where(norms > 0, norms, 1.0),
                      np.where(np.abs(diff).max(axis=1) == 0, 1.0, 0.0))
    rms = float(np.sqrt(np.mean(diff ** 2)))
    peak = float(np.abs(ref).max())
    if rms == 0.0:
        psnr = math.inf
    elif peak == 0.0:
        psnr = -math.inf
    else:
        psnr = 20.0 * math.log10(peak / rms)
    if real is not None:
        ref, out = ref[np.asarray(real, dtype=bool)], out[np.asarray(real, dtype=bool)]
    top1 = top5 = math.nan  # also when no real picture: the class a network gives noise means nothing
    by_task: dict = {}
    if task.kind == "classifier" and len(ref):
        top1 = float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1)))
        ref5, out5 = _topk(ref, 5), _topk(out, 5)
        top5 = float(np.mean([len(set(a) & set(b)) / ref5.shape[1] for a, b in zip(ref5, out5)]))
    elif task.kind == "dense":
        by_task = _dense_agreement(ref, out, shape)
    elif task.kind == "embedding":
        by_task = _decision_agreement(ref, out, task.distance_threshold)
    return ParityMetrics(samples=len(diff), max_abs_error=float(np.abs(diff).max()),
                         mean_abs_error=float(np.abs(diff).mean()), cosine_min=float(cosine.min()),
                         cosine_mean=float(cosine.mean()), psnr_db=psnr, top1_agreement=top1,
                         top5_agreement=top5, finite=finite, task=task.kind, **by_task)


# A class on fewer pixels than this share (of the real pictures' pixels) is shown but not in iou_min: on a handful
# of pixels one flip moves IoU by tens of points (a U-Net trained briefly: a class on ~5 pixels, IoU 0.2).
IOU_MIN_SHARE = 0.01


def _dense_agreement(ref: np.ndarray, out: np.ndarray, shape: tuple[int, ...]) -> dict:
    """Per-pixel argmax agreement and IoU per class of the two masks, pooled over the inputs' pixels."""
    if len(shape) != 4:
        raise EdgekitError(f"a dense output is [N, classes, H, W]; the reference is {list(shape)}: declare the "
                           "model's task as classifier or embedding")
    if not len(ref):
        return {}
    classes = shape[1]
    ref_mask = ref.reshape(len(ref), *shape[1:]).argmax(axis=1)
    out_mask = out.reshape(len(out), *shape[1:]).argmax(axis=1)
    ious, judged = [], []
    for c in range(classes):
        union = np.count_nonzero((ref_mask == c) | (out_mask == c))
        ious.append(np.count_nonzero((ref_mask == c) & (out_mask == c)) / union if union else math.nan)
        if union >= IOU_MIN_SHARE * ref_mask.size:
            judged.append(ious[-1])
    measured = judged
    return {"pixel_agreement": float(np.mean(ref_mask == out_mask)), "iou_per_class": tuple(map(float, ious)),
            "iou_min": float(min(measured)) if measured else math.nan}


def _decision_agreement(ref: np.ndarray, out: np.ndarray, threshold: float | None) -> dict:
    """Share of input pairs on which both embeddings make the same same/different call at ``threshold``."""
    if threshold is None or len(ref) < 2:
        return {}
    same_ref, same_out = pair_distances(ref) < threshold, pair_distances(out) < threshold
    return {"decision_agreement": float(np.mean(same_ref == same_out)), "distance_threshold": float(threshold)}


# ---------------------------------------------------------------------------------------------- gates
# Metrics where smaller is better; every other gated metric is a floor.
_CEILINGS = ("max_abs_error", "mean_abs_error")
# What a threshold can sensibly be: agreements and cosine are fractions, PSNR is dB, errors are non-negative.
# A value outside (2, nan, -1e9, 150%) would gate nothing or everything: refused on the command line, and
# replaced by the default (with a warning) when a manifest carries it.
GATE_BOUNDS = {"top1_agreement": (0.0, 1.0), "top5_agreement": (0.0, 1.0), "cosine_min": (0.0, 1.0),
               "cosine_mean": (0.0, 1.0), "psnr_db": (0.0, 1000.0), "max_abs_error": (0.0, 1e30),
               "mean_abs_error": (0.0, 1e30), "pixel_agreement": (0.0, 1.0), "iou_min": (0.0, 1.0),
               "decision_agreement": (0.0, 1.0)}


def gate_problem(metric: str, value: float | None) -> str | None:
    """Why ``value`` cannot be a threshold for ``metric``, or None."""
    if value is None:
        return None
    low, high = GATE_BOUNDS[metric]
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        return f"{metric} threshold {value!r} is outside {low:g}..{high:g}"
    return None


@dataclass(frozen=True)
class ParityGates:
    """Thresholds for one precision; ``None`` leaves a metric ungated. Field names are metric names."""

    top1_agreement: float | None = None
    top5_agreement: float | None = None
    cosine_min: float | None = None
    cosine_mean: float | None = None
    psnr_db: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    pixel_agreement: float | None = None  # dense outputs
    iou_min: float | None = None  # dense outputs
    decision_agreement: float | None = None  # embeddings

    def failures(self, metrics: ParityMetrics) -> list[str]:
        """One readable line per failed gate, e.g. ``cosine_min 0.99812 < 0.9999``. Outputs that are not finite
        fail whatever the gates say; an agreement with no real picture to count on is not measured, not passed,
        and one the output's task does not have (top-1 of a mask) is not gated."""
        failed = [] if metrics.finite else ["outputs not finite (NaN or infinity)"]
        for f in fields(self):
            threshold = getattr(self, f.name)
            if threshold is None:
                continue
            value = getattr(metrics, f.name)
            if f.name in _TASK_METRICS and math.isnan(value):
                continue  # not this task's figure, or no real pictures (ParityResult notes it)
            if f.name in _CEILINGS:
                if not value <= threshold:
                    failed.append(f"{f.name} {value:.4g} > {threshold:g}")
            elif not value >= threshold:
                failed.append(f"{f.name} {value:.6g} < {threshold:g}")
        return failed

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "ParityGates":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise EdgekitError(f"unknown parity gate {sorted(unknown)[0]!r}: use one of {', '.join(sorted(names))}")
        return cls(**{k: (None if v is None else float(v)) for k, v in d.items()})

    def describe(self, task: str | None = None) -> str:
        """The gates as text; with ``task``, only those that apply to it (no top-1 floor for a mask)."""
        other = {m for kind, figures in TASK_FIGURES.items() if kind != task for m in figures} if task else set()
        parts = [f"{k} {'<=' if k in _CEILINGS else '>='} {v:g}" for k, v in self.to_dict().items()
                 if k not in other]
        return ", ".join(parts) or "none"

    def problems(self) -> list[tuple[str, str]]:
        return [(f.name, problem) for f in fields(self)
                if (problem := gate_problem(f.name, getattr(self, f.name)))]


@dataclass(frozen=True)
class GateTable:
    """Gates for every precision. To gate a new precision, add a field and a default below."""

    fp32: ParityGates
    fp16: ParityGates
    int8: ParityGates

    def for_precision(self, precision: str) -> ParityGates:
        if precision not in PRECISIONS:
            raise EdgekitError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        return getattr(self, precision)

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> "GateTable":
        """Apply ``PRECISION.METRIC=VALUE`` strings (``VALUE`` ``off`` removes a gate)."""
        table = self
        metric_names = [f.name for f in fields(ParityGates)]
        for text in overrides:
            key, sep, value = text.partition("=")
            precision, dot, metric = key.strip().partition(".")
            if not sep or not dot:
                raise EdgekitError(f"gate {text!r} is not PRECISION.METRIC=VALUE, e.g. fp32.cosine_min=0.9999 "
                                   "or int8.top1_agreement=off")
            if precision not in PRECISIONS:
                raise EdgekitError(f"gate {text!r}: unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
            if metric not in metric_names:
                raise EdgekitError(f"gate {text!r}: unknown metric {metric!r}; use {', '.join(metric_names)}")
            value = value.strip().lower()
            if value in ("off", "none"):
                number = None
            else:
                try:
                    number = float(value.rstrip("%")) / (100.0 if value.endswith("%") else 1.0)
                except ValueError:
                    raise EdgekitError(f"gate {text!r}: {value!r} is not a number or 'off'") from None
                problem = gate_problem(metric, number)
                if problem:
                    raise EdgekitError(f"gate {text!r}: {problem}; give a value in range, or 'off'")
            table = replace(table, **{precision: replace(table.for_precision(precision), **{metric: number})})
        return table

    def to_dict(self) -> dict:
        return {p: self.for_precision(p).to_dict() for p in PRECISIONS}

    def sanitized(self) -> tuple["GateTable", list[str]]:
        """This table with every out-of-bounds threshold replaced by its default, and a warning for each."""
        table, warnings = self, []
        for precision in PRECISIONS:
            for metric, problem in self.for_precision(precision).problems():
                default = getattr(DEFAULT_GATES.for_precision(precision), metric)
                table = replace(table, **{precision: replace(table.for_precision(precision), **{metric: default})})
                warnings.append(f"the manifest's {precision} gate: {problem}; the default "
                                f"({'off' if default is None else f'{default:g}'}) is used instead")
        return table, warnings

    @classmethod
    def from_dict(cls, d: dict) -> "GateTable":
        return cls(**{p: ParityGates.from_dict(d.get(p, {})) for p in PRECISIONS})


# Documented defaults (README "Export, parity and validate"). fp32: the exported graph must pick the same
# class for every photo and point the same way to 1e-4 (measured: cosine > 0.999999, PSNR > 130 dB).
# fp16 weights: measured cosine >= 0.99998 and PSNR ~70 dB on imported MobileNet v2 and random networks;
# the floors leave room for a near-tie on one photo. int8 (never applied to random weights): measured on the
# export's default parity inputs (12 built-in photos + 4 random) for Google's four MobileNets imported, ONNX and
# TFLite: top-1 agreement 75-83%, top-5 77-88%, cosine mean 0.983-0.995, PSNR 34.3-39.5 dB; a visibly worse
# file (entropy-calibrated MobileNet v2, 3 points of top-1 lost) scored cosine mean 0.94 and PSNR 30.6 dB.
# Cosine mean and PSNR separate good from bad; the agreement floors sit below the good files' worst, because
# the built-in photos are far from ImageNet and full of near-ties (the good MobileNet v1 0.5/160 file agrees
# on 9 of the 12 photos: a floor of 0.8 would fail it).
#
# Outputs that are not class scores keep the cosine and PSNR floors above and are gated on their own figures
# (each gate applies only where its figure is measured: top-k for classifiers, pixels and IoU for masks, pair
# decisions for embeddings); where the numbers come from: GATES_BY_TASK_SOURCE.
DEFAULT_GATES = GateTable(
    fp32=ParityGates(top1_agreement=1.0, cosine_min=0.9999, pixel_agreement=0.999, decision_agreement=0.99),
    fp16=ParityGates(top1_agreement=0.9, cosine_min=0.9995, psnr_db=40.0, pixel_agreement=0.99,
                     decision_agreement=0.95),
    int8=ParityGates(top1_agreement=0.6, top5_agreement=0.7, cosine_mean=0.975, psnr_db=32.0,
                     pixel_agreement=0.98, iou_min=0.85, decision_agreement=0.85),
)
# Measured on trained weights, AMD EPYC (avx2), edgekit's default parity (16 real pictures + 4 random):
GATES_BY_TASK_SOURCE = {
    "classifier": "top-1/top-5 floors from Google's four ImageNet MobileNets (see the int8 note)",
    # benchmarks/results/train_unet_shapes.md: the zoo's U-Net trained on shapes pasted onto real photos
    "dense": "int8 pixel agreement >= 98% and IoU min >= 0.85 (with the cosine and PSNR floors), fp32 pixel "
             "agreement >= 99.9% (a near-tie pixel may go either way), from the U-Net trained on the shapes task "
             "(benchmarks/results/train_unet_shapes.md: good int8 files 98.96-99.66% of pixels, IoU min "
             "0.93-0.94, PSNR 34.1-41.6 dB; the same weights calibrated on 3 photo crops without shapes: 92.2%, "
             "0.53, 18.6 dB)",
    # benchmarks/results/siamese_parity.md: the zoo's Siamese on Google's MobileNet features
    "embedding": "int8 pair decisions >= 85% and cosine mean >= 0.975, no PSNR floor (an int8 unit vector's own "
                 "output steps cap it near 30 dB), fp32 decisions >= 99% (a pair within rounding of the "
                 "threshold), from the Siamese network on Google's ImageNet MobileNet v1 0.25 and v2 1.0 features "
                 "(benchmarks/results/siamese_parity.md: int8 files 91.7-98.3% of 120 pairs, cosine mean "
                 "0.990-0.994, PSNR 29.5-30.2 dB; one calibrated on 3 crops of a single photo 87.5% and 0.993 "
                 "still passes: the floors catch files clearly worse than that, not a few points of decisions; "
                 "re-measured since int8 keeps Google's weight levels: 96.7-100%, 0.9977-0.9981, 33.4-36.1 dB, "
                 "the 3-crop file 95.8-97.5%)",
}
# Where a task's default differs from the table above (a gate the user set stays as set).
TASK_GATE_CHANGES = {"embedding": {"int8": {"psnr_db": None}}}


def gates_for_task(table: GateTable, task: OutputTask) -> GateTable:
    """``table`` with the task's own defaults wherever it still holds DEFAULT_GATES' value: the export records
    the result in the manifest, so validate judges with the same gates."""
    for precision, changes in TASK_GATE_CHANGES.get(task.kind, {}).items():
        gates = table.for_precision(precision)
        kept = {metric: value for metric, value in changes.items()
                if getattr(gates, metric) == getattr(DEFAULT_GATES.for_precision(precision), metric)}
        table = replace(table, **{precision: replace(gates, **kept)})
    return table


# Host kernels against the runtime's reference path, on the same int8 file. Measured (MobileNet v2 and v1 0.25
# with Google's weights, AMD EPYC, AVX2 only): sound kernels agree at cosine mean 0.998-0.9998 and PSNR 45-50 dB
# (requantization rounding: LiteRT's XNNPACK against its reference kernels 45.5 dB, ONNX Runtime against float
# QDQ 47.9 dB); ORT's saturating U8S8 kernels on a file made without the per-channel limit gave 0.939 / 30.2 dB
# and 0.991 / 34.1 dB.
KERNEL_TOLERANCE = ParityGates(cosine_mean=0.995, psnr_db=40.0)
# An embedding is a unit vector: its int8 output tensor alone (steps of 1/128 on elements of about 0.09 for 128
# dimensions) caps PSNR near 27-30 dB, whatever the kernels do; measured host against reference path on the Siamese
# networks of benchmarks/results/siamese_parity.md: cosine mean 0.998-0.9998, PSNR 27.4-45 dB. Cosine judges them.
KERNEL_TOLERANCE_BY_TASK = {"embedding": ParityGates(cosine_mean=0.995)}


@dataclass(frozen=True)
class KernelCheck:
    """An int8 file computed twice: with the host's optimised kernels and with the runtime's portable reference
    path. ``quantization`` (reference path against PyTorch) is the error int8 itself makes; ``host_kernels``
    (host kernels against the reference path) is what this CPU's kernels add on top."""

    reference_path: str
    cpu: str
    quantization: ParityMetrics
    host_kernels: ParityMetrics
    finding: str | None = None  # one line when the host's kernels disagree beyond the tolerance
    tolerance: ParityGates = KERNEL_TOLERANCE

    @property
    def agrees(self) -> bool:
        return self.finding is None

    def to_dict(self) -> dict:
        return {"reference_path": self.reference_path, "cpu": self.cpu, "agrees": self.agrees,
                "tolerance": self.tolerance.to_dict(), "finding": self.finding,
                "quantization": self.quantization.to_dict(), "host_kernels": self.host_kernels.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "KernelCheck":
        tolerance = ParityGates.from_dict(d["tolerance"]) if d.get("tolerance") else KERNEL_TOLERANCE
        return cls(d["reference_path"], d.get("cpu", "?"), ParityMetrics.from_dict(d["quantization"]),
                   ParityMetrics.from_dict(d["host_kernels"]), d.get("finding"), tolerance)


def kernel_check(path: Path, name: str, inputs: np.ndarray, reference: np.ndarray, host_outputs: np.ndarray,
                 threads: int | None = None, real: np.ndarray | None = None,
                 task: OutputTask = CLASSIFIER, portable: np.ndarray | None = None) -> KernelCheck:
    """Run ``path`` on the runtime's reference path (unless its ``portable`` outputs are given) and split its error
    against PyTorch into quantization and host-kernel error; a disagreement becomes a finding that names what the
    CPU lacks."""
    runner = runner_class(path)
    if portable is None:
        portable = open_runtime(path, threads=threads, reference=True)(inputs)
    # the portable outputs stand in for the reference: in its shape, so that a mask stays a mask
    if np.size(portable) == np.size(reference):
        portable = np.reshape(portable, np.shape(reference))
    host_kernels = compare(portable, host_outputs, real, task)
    cpu = host_cpu()
    finding = None
    tolerance = KERNEL_TOLERANCE_BY_TASK.get(task.kind, KERNEL_TOLERANCE)
    failed = tolerance.failures(host_kernels)
    if failed:
        x86 = not (cpu.get("arch") or "").startswith(("arm", "aarch"))
        if getattr(runner, "SATURATES_WITHOUT_DOT_PRODUCT", False) and x86 and not cpu.get("int8_dot_product"):
            cause = (f"; this CPU has {missing_dot_product(cpu)}, so 8-bit products are added in 16 bits, which can "
                     "saturate (int8 files edgekit makes limit their weights so that they cannot)")
        else:
            cause = f"; {runner.KERNEL_DIFFERENCE}" if getattr(runner, "KERNEL_DIFFERENCE", None) else ""
        finding = (f"{name}: {runner.HOST_KERNELS} on {describe(cpu)} disagree with "
                   f"{runner.REFERENCE_PATH} ({'; '.join(failed)}){cause}")
    return KernelCheck(runner.REFERENCE_PATH, describe(cpu), compare(reference, portable, real, task), host_kernels,
                       finding, tolerance)


@dataclass(frozen=True)
class ParityResult:
    """One artifact's verdict. ``gated=False`` (int8 on untrained weights): figures shown, never failed.
    ``kernels``: for int8 files, the same file on the runtime's reference path (quantization vs host-kernel error).
    ``output``: which output of a model of several outputs the row judges (each is gated on its own)."""

    artifact: str
    precision: str
    metrics: ParityMetrics
    gates: ParityGates
    failures: tuple[str, ...]
    gated: bool = True
    note: str | None = None
    kernels: KernelCheck | None = None
    output: str | None = None

    @property
    def label(self) -> str:
        """The file, and the output a row of a model of several outputs judges."""
        return self.artifact if self.output is None else f"{self.artifact} [{self.output}]"

    @property
    def passed(self) -> bool:
        return not self.gated or not self.failures

    @property
    def verdict(self) -> str:
        if not self.gated:
            return "not gated"
        return "pass" if self.passed else "FAIL: " + "; ".join(self.failures)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "precision": self.precision, "passed": self.passed,
                "gated": self.gated, "failures": list(self.failures), "note": self.note,
                "metrics": self.metrics.to_dict(), "gates": self.gates.to_dict(),
                "kernels": self.kernels.to_dict() if self.kernels else None} | (
                    {"output": self.output} if self.output is not None else {})

    @classmethod
    def from_dict(cls, d: dict) -> "ParityResult":
        return cls(d["artifact"], d["precision"], ParityMetrics.from_dict(d["metrics"]),
                   ParityGates.from_dict(d.get("gates", {})), tuple(d.get("failures", ())),
                   bool(d.get("gated", True)), d.get("note"),
                   KernelCheck.from_dict(d["kernels"]) if d.get("kernels") else None, d.get("output"))


def is_gated(precision: str, trained_weights: bool) -> tuple[bool, str | None]:
    """int8 on untrained weights says nothing (a random net turns rounding noise into different classes)."""
    if precision == "int8" and not trained_weights:
        return False, ("random weights: int8 figures shown but not gated; a random network amplifies "
                       "quantization noise, so only trained weights can judge int8")
    return True, None


def is_real(sources: list[str]) -> np.ndarray:
    """Which parity inputs are real pictures (the others are named ``random:<seed>:<i>``)."""
    return np.array([not s.startswith("random:") for s in sources], dtype=bool)


def check_artifact(path: Path, name: str, precision: str, inputs: np.ndarray, reference: np.ndarray,
                   gates: ParityGates, gated: bool = True, note: str | None = None,
                   threads: int | None = None, real: np.ndarray | None = None,
                   task: OutputTask = CLASSIFIER) -> ParityResult:
    """Run one exported file on ``inputs`` and judge it against ``reference``; an int8 file also runs on its
    runtime's reference path, so that host-kernel error is told apart from quantization error."""
    (result,) = check_outputs(path, name, precision, [inputs], [reference], [gates], gated, note, threads, real,
                              [task])
    return result


def check_outputs(path: Path, name: str, precision: str, inputs: list[np.ndarray], references: list[np.ndarray],
                  gates: list[ParityGates], gated: bool = True, note: str | None = None,
                  threads: int | None = None, real: np.ndarray | None = None,
                  tasks: list[OutputTask] | None = None, outputs: list[str] | None = None) -> list[ParityResult]:
    """The file run once on every input (one array per input), each output judged against its own reference with
    its own task and gates: one result per output (the file passes only if all do), labelled with ``outputs``'
    names for a model of several. An int8 file also runs on its runtime's reference path, so that host-kernel
    error is told apart from quantization error."""
    tasks = tasks or [CLASSIFIER] * len(references)
    found = open_runtime(path, threads=threads).run(inputs)
    if len(found) != len(references):
        raise EdgekitError(f"{name} has {len(found)} outputs, the reference {len(references)}; the file was exported "
                           "for another model")
    # a runtime without a portable reference path (an ExecuTorch program's delegate blob) has no kernel split
    split = precision == "int8" and runner_class(path).REFERENCE_PATH is not None
    portable = open_runtime(path, threads=threads, reference=True).run(inputs) if split else [None] * len(found)
    results = []
    for k, (reference, candidate, task) in enumerate(zip(references, found, tasks)):
        kernels = kernel_check(path, name, inputs[0], reference, candidate, threads, real, task, portable[k]) \
            if split else None
        results.append(replace(_judge(name, precision, reference, candidate, gates[k], gated, note, real, task,
                                      kernels), output=outputs[k] if outputs else None))
    return results


def _judge(name: str, precision: str, reference: np.ndarray, outputs: np.ndarray, gates: ParityGates, gated: bool,
           note: str | None, real: np.ndarray | None, task: OutputTask, kernels: KernelCheck | None) -> ParityResult:
    metrics = compare(reference, outputs, real, task)
    unmeasured = {"classifier": ("top-1/top-5 agreement", ("top1_agreement", "top5_agreement")),
                  "dense": ("per-pixel agreement and IoU", ("pixel_agreement", "iou_min")),
                  "embedding": ("pair decision agreement", ("decision_agreement",))}[task.kind]
    if (any(getattr(gates, m) is not None for m in unmeasured[1])
            and all(math.isnan(getattr(metrics, m)) for m in unmeasured[1])):
        why = ("the PyTorch embeddings of the pictures do not separate (untrained weights?): no same/different "
               "threshold to compare at" if task.kind == "embedding" and real is not None and np.any(real)
               else "no real pictures among the parity inputs")
        note = "; ".join(filter(None, [note, f"{why}: {unmeasured[0]} not measured"
                                       + ("" if why.startswith("the PyTorch") else " (give photos with --data)")]))
    return ParityResult(name, precision, metrics, gates, tuple(gates.failures(metrics)), gated, note, kernels)


def task_section(task: dict | str | None, results: list[ParityResult]) -> list[str]:
    """report.md lines for a model whose output is not class scores: its task and each file's own figures."""
    from .table import markdown_table

    task = OutputTask.from_dict(task)
    if task.kind == "classifier" or not results:
        return []
    what = {"dense": "per-pixel class scores: top-k does not apply; pixel agreement = share of pixels whose "
                     "argmax class is PyTorch's, IoU per class of the two argmax masks (- where neither holds "
                     "the class), over the real pictures",
            "embedding": "an embedding compared by distance: top-k does not apply; cosine per embedding, and "
                         f"pair decisions = share of pairs of real pictures both call same (distance < "
                         f"{'?' if task.distance_threshold is None else f'{task.distance_threshold:.4g}'}) or both "
                         f"different; threshold: {task.threshold_source or 'not recorded'}"}[task.kind]
    rows = [[r.artifact, r.precision, r.metrics.task_summary(), r.verdict] for r in results]
    return [f"Output task: {task.kind}, {what}. Gates: {GATES_BY_TASK_SOURCE[task.kind]}", "",
            markdown_table(["artifact", "precision", f"{task.kind} figures", "verdict"], rows), ""]


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class ParityInputs:
    """NCHW float32 inputs and where each came from (file name or ``random:<seed>:<i>``)."""

    nchw: np.ndarray
    sources: list[str]
    skipped: list[str]

    @property
    def real(self) -> int:
        return int(is_real(self.sources).sum())


def spread(items: list, count: int) -> list:
    """``count`` items evenly spread over a sorted list, so a folder sorted by class gives many classes."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def build_inputs(images: list[Path], preprocessing: Preprocessing, resolution: int, samples: int,
                 random_count: int, seed: int = 0) -> ParityInputs:
    """Up to ``samples`` real pictures (unreadable ones skipped and counted) plus ``random_count`` pictures
    of uniform random pixels, all preprocessed the same way. Random pixels go through the same mean/std as
    photos, so they stay inside the value range an int8 input was calibrated for."""
    loaded = load_batch(images, resolution, preprocessing, limit=samples)
    arrays, sources, skipped = list(loaded.nchw), [path.name for path in loaded.files], loaded.skipped
    if skipped:
        warn(f"parity skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}")
    if images and not arrays:
        raise EdgekitError(f"none of the {len(images)} parity images could be read (first: {skipped[0]}); "
                           "give a folder of valid jpg/png/bmp pictures")
    rng = np.random.default_rng(seed)
    for i in range(random_count):
        pixels = rng.integers(0, 256, size=(resolution, resolution, 3), dtype=np.uint8)
        arrays.append(normalize(pixels, preprocessing))
        sources.append(f"random:{seed}:{i}")
    if not arrays:
        raise EdgekitError("parity needs at least one input; give images or a random count above 0")
    return ParityInputs(np.stack(arrays).astype(np.float32), sources, skipped)


def paired_inputs(inputs: ParityInputs, count: int) -> tuple[list[np.ndarray], list[str]]:
    """The parity inputs of a model of ``count`` picture inputs: input K of sample i is picture i + K of the same
    kind (real pictures with real ones, random with random), so a pair model sees pairs of different pictures;
    each sample is named by its pictures, ``a.jpg+b.jpg``."""
    real = is_real(inputs.sources)
    order = [np.arange(len(inputs.sources))]
    for k in range(1, count):
        shifted = np.arange(len(inputs.sources))
        for group in (real, ~real):
            members = np.flatnonzero(group)
            shifted[members] = np.roll(members, -k)
        order.append(shifted)
    sources = ["+".join(inputs.sources[int(o[i])] for o in order) for i in range(len(inputs.sources))]
    return [inputs.nchw[o] for o in order], sources
