"""Accuracy of an export bundle: the PyTorch model it came from and every file in it, on the same images.

The bundle's manifest says how to feed the model (resolution, preprocessing) and how to rebuild it (name,
width, classes, padding, weights source with its sha256). Each file is hash-checked against the manifest
before it runs, so a figure is never reported for a file other than the one exported. The PyTorch row is
optional: it needs the original weights (not random ones, not a file that moved or changed), and it must
reproduce the bundle's stored reference outputs before it is trusted. torch is imported for that row only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .console import info, warn
from .errors import EdgekitError, GateFailure
from .evaluate import (EvalResult, Predictor, evaluate_many, file_target, image_batches, top1_agreement,
                       torch_predictor)
from .images import LabelledImage
from .manifest import Manifest, Reference, find_bundles, integrity_problems, several_io, sha256_file
from .formats import FORMAT_NAMES
from .parity import DEFAULT_GATES, REFERENCE_PATHS, OutputTask, ParityMetrics, compare, is_real
from .types import Preprocessing

PYTORCH_MODES = ("auto", "require", "skip")
PYTORCH_ROW = "pytorch"
# An int8 file's second row: the same file on its runtime's reference path (edgekit.parity.kernel_check)
REFERENCE_ROW_SUFFIX = ":reference"


@dataclass
class BundleTarget:
    """One row of the table: the PyTorch model or one file of the bundle."""

    name: str
    format: str  # pytorch | onnx | tflite
    precision: str
    predictor: Predictor
    details: dict = field(default_factory=dict)


@dataclass
class PyTorchReference:
    """Whether the PyTorch model could be rebuilt, why not, and how closely it reproduced the bundle's stored
    reference outputs (``check``)."""

    status: str  # rebuilt | unavailable | skipped
    reason: str | None = None
    weights: dict = field(default_factory=dict)
    check: ParityMetrics | None = None

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "weights": self.weights,
                "check": self.check.to_dict() if self.check else None}


@dataclass
class OpenBundle:
    bundle: Path
    manifest: Manifest
    resolution: int
    preprocessing: Preprocessing
    preprocessing_source: str
    targets: list[BundleTarget]
    pytorch: PyTorchReference


def resolve_bundle(folder: Path) -> Path:
    """``folder`` itself when it is a bundle, or the one bundle inside it."""
    bundles = find_bundles(folder)
    if len(bundles) > 1:
        names = ", ".join(b.name for b in bundles[:5]) + (", ..." if len(bundles) > 5 else "")
        raise EdgekitError(f"{folder} holds {len(bundles)} bundles ({names}); images are preprocessed per bundle, "
                           f"so evaluate one of them, e.g. {bundles[0]}")
    return bundles[0]


def scored_output(manifest: Manifest, bundle: Path) -> int:
    """Which output eval scores: the only one, or, for a one-picture model of several outputs, the classifier
    output its labels name. Any other model of several inputs or outputs is a one-line error naming what it has
    and what checks it instead."""
    if not several_io(manifest):
        return 0
    inputs, outputs = manifest.model.get("inputs") or [{}], manifest.model.get("outputs") or [{}]
    names = [o.get("name") for o in outputs]
    labelled = manifest.model.get("labelled_output")
    if len(inputs) == 1 and labelled in names \
            and OutputTask.from_dict(outputs[names.index(labelled)].get("task")).kind == "classifier":
        return names.index(labelled)
    raise EdgekitError(f"eval scores the class scores of one picture; {bundle.name} takes {len(inputs)} "
                       f"input{'s' * (len(inputs) > 1)} and gives {len(outputs)} output{'s' * (len(outputs) > 1)} "
                       f"({', '.join(OutputTask.from_dict(o.get('task')).kind for o in outputs)}): check it "
                       f"with `edgekit validate {bundle}` (parity against PyTorch, output by output)")


def open_bundle(folder: Path, *, pytorch: str = "auto", weights: Path | None = None,
                preprocessing: Preprocessing | None = None, threads: int | None = None,
                formats: Sequence[str] | None = None) -> OpenBundle:
    """Check every file of the bundle against its manifest and open it; rebuild the PyTorch model as
    ``pytorch`` says: ``auto`` when its weights can be had (else a warning and the files alone), ``require``
    (else an error), ``skip`` (never; torch is not imported). ``weights`` points at the weights file when it
    moved since the export (its sha256 must still be the manifest's). ``formats`` (e.g. ``("tflite",)``) keeps
    only the files of those formats: what a project ships."""
    if pytorch not in PYTORCH_MODES:
        raise EdgekitError(f"--pytorch must be one of {', '.join(PYTORCH_MODES)}, got {pytorch!r}")
    bundle = resolve_bundle(Path(folder))
    manifest = Manifest.read(bundle)
    output = scored_output(manifest, bundle)
    if manifest.status != "complete":
        warn(f"the export of {bundle} failed at step {manifest.failed_step or '?'} ({manifest.error}); scoring the "
             "files it finished")
    problems = integrity_problems(bundle, manifest)
    if formats:
        left_out = {a.path for a in manifest.artifacts if a.format not in formats}
        problems = [p for p in problems if not any(p.startswith((f"{path}: sha256 mismatch", f"{path} is missing"))
                                                   for path in left_out)]
        if not any(a.format in formats for a in manifest.artifacts):
            raise EdgekitError(f"{bundle} holds no {' or '.join(formats)} file; drop --formats")
    if problems:
        raise EdgekitError(f"{bundle}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                                          else ""))
    resolution = int(manifest.model["resolution"])
    source = "recorded in the manifest"
    if preprocessing is None:
        preprocessing = Preprocessing.from_dict(manifest.preprocessing)
    else:
        source = "given"
    reference, pytorch_target = _pytorch_row(bundle, manifest, pytorch, weights, threads)
    targets = [pytorch_target] if pytorch_target else []
    for artifact in manifest.artifacts:
        if formats and artifact.format not in formats:
            continue
        opened = file_target(bundle / artifact.path, resolution=resolution, preprocessing=preprocessing,
                             threads=threads, output=output)
        targets.append(BundleTarget(artifact.path, artifact.format, artifact.precision, opened.predictor,
                                    {"path": artifact.path, "sha256": artifact.sha256, "bytes": artifact.bytes,
                                     "inputs": [t.to_dict() for t in artifact.inputs]}))
        if artifact.precision == "int8" and Path(artifact.path).suffix.lower() in REFERENCE_PATHS:
            # the same file on its runtime's reference path: quantization error apart from host-kernel error
            portable = file_target(bundle / artifact.path, resolution=resolution, preprocessing=preprocessing,
                                   threads=threads, reference=True, output=output)
            targets.append(BundleTarget(f"{artifact.path}{REFERENCE_ROW_SUFFIX}", artifact.format, "int8",
                                        portable.predictor, {"path": artifact.path, "reference_path":
                                                             REFERENCE_PATHS[Path(artifact.path).suffix.lower()]}))
    if not targets:
        raise EdgekitError(f"{bundle} lists no model files and the PyTorch model is {reference.status} "
                           f"({reference.reason}); nothing to evaluate, export the bundle again")
    return OpenBundle(bundle, manifest, resolution, preprocessing, source, targets, reference)


# ---------------------------------------------------------------------------------------------- PyTorch row
def _pytorch_row(bundle: Path, manifest: Manifest, mode: str, weights: Path | None,
                 threads: int | None) -> tuple[PyTorchReference, BundleTarget | None]:
    """The PyTorch target when it can be rebuilt and verified; why not otherwise."""
    record = dict(manifest.weights)
    if mode == "skip":
        return PyTorchReference("skipped", "left out by --pytorch skip", record), None
    problem = weights_problem(record, weights)
    model = None
    check = None
    if problem is None:
        try:
            model = rebuild_model(manifest.model, Path(weights or record["path"]), threads)
        except EdgekitError as e:
            problem = f"rebuilding the PyTorch model failed: {e}"
    if model is not None:
        try:
            check, problem = _verify(bundle, manifest, model)
        except EdgekitError as e:
            problem = f"the rebuilt model cannot be checked against the bundle's reference outputs: {e}"
    if problem is not None:
        if mode == "require":
            raise EdgekitError(f"cannot score the PyTorch model of {bundle}: {problem}")
        warn(f"no PyTorch row: {problem}; scoring the bundle's files alone (--pytorch require makes this an error)")
        return PyTorchReference("unavailable", problem, record, check), None
    return (PyTorchReference("rebuilt", None, record, check),
            BundleTarget(PYTORCH_ROW, "pytorch", "fp32", torch_predictor(model)))


def weights_problem(record: dict, given: Path | None = None) -> str | None:
    """Why the weights a manifest records cannot rebuild the exported model, or None. Needs no torch."""
    source = record.get("source")
    if source == "random" or not record.get("trained", False):
        return "the bundle was exported with random weights, which cannot be rebuilt (and score nothing)"
    if "classifier replaced" in (record.get("note") or ""):
        return f"the exported classifier was newly initialised ({record['note']}), so it cannot be rebuilt"
    if source not in ("tflite", "file", "imagenet") or not record.get("path"):
        return f"the weights source {source!r} records no file to rebuild from"
    path = Path(given or record["path"])
    if not path.is_file():
        return (f"the weights file {path} is not there (moved since the export?); pass --weights FILE with the "
                "same file")
    expected = record.get("sha256")
    actual = sha256_file(path) if expected else None
    if actual != expected:
        return (f"the weights file {path} differs from the one exported (sha256 {actual[:12]}..., "
                f"manifest {expected[:12]}...)")
    return None


def rebuild_model(model_record: dict, weights: Path, threads: int | None = None):
    """The PyTorch model a manifest describes, from its (checked) weights file, in eval mode."""
    import torch

    from .models import create_model
    from .models.registry import build_model

    if threads:
        torch.set_num_threads(threads)
    num_classes = int(model_record["num_classes"])
    kwargs = {"width": model_record.get("width"), "resolution": int(model_record["resolution"]),
              "num_classes": num_classes}
    if weights.suffix.lower() == ".tflite":
        # a 1001-class import is the one that kept TF's background output
        kwargs["keep_background"] = num_classes == 1001
    model = create_model(model_record["name"], weights=weights, **kwargs)
    config = model.edgekit_config
    padding = model_record.get("padding", config.padding)
    if config.padding != padding:
        # a checkpoint does not carry the padding mode (e.g. a .pt saved from an imported TF model)
        state = model.state_dict()
        model = build_model(replace(config, padding=padding))
        model.load_state_dict(state)
    return model.eval()


def _verify(bundle: Path, manifest: Manifest, model) -> tuple[ParityMetrics | None, str | None]:
    """The rebuilt model must give the bundle's stored reference outputs (as an fp32 export must), or it is not
    the model that was exported (e.g. one modified in Python before ``run_export``)."""
    if not manifest.reference:
        return None, None  # nothing stored to check against
    try:
        reference = Reference.read(bundle, manifest.reference.get("sha256"))
    except GateFailure as e:
        raise EdgekitError(str(e)) from None
    outputs = torch_predictor(model)(reference.inputs)
    task = OutputTask.from_dict(manifest.model.get("task"))
    metrics = compare(reference.outputs, outputs, is_real(reference.sources), task)
    failures = DEFAULT_GATES.fp32.failures(metrics)
    if failures:
        return metrics, (f"the rebuilt model does not reproduce the bundle's reference outputs "
                         f"({'; '.join(failures)}), so it is not the model that was exported")
    return metrics, None


# ---------------------------------------------------------------------------------------------- scoring
@dataclass
class BundleEval:
    opened: OpenBundle
    results: dict[str, EvalResult]  # by target name
    agreement_with: str | None  # the target the top-1 agreement column compares with
    data: dict

    @property
    def any_result(self) -> EvalResult:
        return next(iter(self.results.values()))

    def agreement(self, name: str) -> float | None:
        if self.agreement_with is None:
            return None
        return top1_agreement(self.results[name], self.results[self.agreement_with])

    def to_dict(self) -> dict:
        o = self.opened
        first = self.any_result
        targets = []
        for target in o.targets:
            figures = self.results[target.name].to_dict()
            figures.pop("unreadable_files")  # the same for every row: listed once under "data"
            targets.append({"name": target.name, "format": target.format, "precision": target.precision,
                            "top1_agreement": _rounded(self.agreement(target.name)), **figures, **target.details})
        return {"bundle": str(o.bundle), "variant": o.manifest.variant, "model": o.manifest.model,
                "resolution": o.resolution, "preprocessing": o.preprocessing.to_dict(),
                "preprocessing_source": o.preprocessing_source,
                "data": {**self.data, "images": first.images, "unreadable": len(first.unreadable),
                         "unreadable_files": first.unreadable[:100]},
                "pytorch": o.pytorch.to_dict(), "agreement_with": self.agreement_with, "targets": targets}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def agreement_reference(targets: Sequence[BundleTarget]) -> str | None:
    """The PyTorch model, else the fp32 ONNX (then TFLite) file, which parity tied to PyTorch at export."""
    for fmt in (PYTORCH_ROW, *FORMAT_NAMES):
        found = next((t.name for t in targets if t.format == fmt and t.precision == "fp32"), None)
        if found:
            return found
    return None


def evaluate_bundle(opened: OpenBundle, items: Sequence[LabelledImage], *, batch_size: int = 32,
                    background: str = "auto", data: dict | None = None) -> BundleEval:
    """Every target on the same images, decoded and preprocessed once per batch."""
    info(f"[edgekit] eval bundle {opened.bundle}: {len(opened.targets)} target(s) "
         f"({', '.join(t.name for t in opened.targets)}) on {len(items)} images at {opened.resolution}px")
    batches = image_batches(items, opened.resolution, opened.preprocessing, batch_size)
    results = evaluate_many({t.name: t.predictor for t in opened.targets}, batches, total=len(items),
                            background=background)
    outputs = {r.num_outputs - int(r.background_dropped) for r in results.values()}
    if len(outputs) > 1:
        raise EdgekitError(f"the bundle's targets score different numbers of classes ({sorted(outputs)}); "
                           "export the bundle again")
    return BundleEval(opened, results, agreement_reference(opened.targets), dict(data or {}))

