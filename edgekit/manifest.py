"""The bundle's ``manifest.json``: what was exported, from what, with which tools, and how well it matches.

A bundle is one folder, ``DIR/<variant>/``, holding the model files, ``labels.txt``, ``reference.npz`` (the
parity inputs and the PyTorch outputs), ``manifest.json`` and ``report.md``. The manifest is the single
source for ``report.md``, for ``edgekit validate`` and for programs; it imports no torch.
"""

from __future__ import annotations

import json
import platform
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from . import __version__
from .cpu import host_cpu
from .errors import EdgekitError, GateFailure
from .fileio import atomic_path, atomic_write_text, sha256_file
from .formats import FORMATS, SUFFIXES
from .parity import (DEFAULT_GATES, GateTable, OutputTask, ParityResult, check_outputs,
                     gates_for_task, is_gated, is_real)
from .runtimes import TensorSpec, open_runtime

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"
REFERENCE_NAME = "reference.npz"
LABELS_NAME = "labels.txt"
FORMAT_VERSION = 1

# Distributions whose versions decide what an exported file contains or how it runs
TRACKED_DISTRIBUTIONS = ("torch", *dict.fromkeys(d for f in FORMATS.values() for d in f.distributions), "numpy")


def library_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (importing torch just to ask would defeat validate)."""
    versions: dict[str, str | None] = {"edgekit": __version__, "python": platform.python_version()}
    for name in TRACKED_DISTRIBUTIONS:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass(frozen=True)
class Artifact:
    """One exported file as an app or a CI job needs to know it."""

    path: str  # relative to the bundle folder
    format: str  # a registered format's name (edgekit.formats): onnx | tflite | pte
    precision: str  # fp32 | fp16 | int8
    bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    seconds: float | None = None  # time to produce it
    details: dict = field(default_factory=dict)  # format facts: opset, operator counts...

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "precision": self.precision, "bytes": self.bytes,
                "sha256": self.sha256, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], "seconds": self.seconds, "details": self.details}

    @classmethod
    def from_dict(cls, d: dict) -> "Artifact":
        def spec(t: dict) -> TensorSpec:
            return TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], t["layout"], t.get("scale"),
                              t.get("zero_point"))

        return cls(d["path"], d["format"], d["precision"], int(d["bytes"]), d["sha256"],
                   tuple(spec(t) for t in d.get("inputs", [])), tuple(spec(t) for t in d.get("outputs", [])),
                   d.get("seconds"), d.get("details", {}))

    @classmethod
    def describe(cls, bundle: Path, relative: str, fmt: str, precision: str, seconds: float | None = None,
                 details: dict | None = None) -> "Artifact":
        """Measure a finished file: size, hash, and its inputs/outputs as the runtime reports them."""
        path = bundle / relative
        runtime = open_runtime(path)
        return cls(relative, fmt, precision, path.stat().st_size, sha256_file(path), tuple(runtime.inputs),
                   tuple(runtime.outputs), seconds, details or {})

    def check_file(self, bundle: Path) -> str | None:
        """A problem with the file on disk (outside the bundle, missing, altered), or None when it is the file
        exported."""
        problem = outside_bundle(bundle, self.path)
        if problem:
            return problem
        path = bundle / self.path
        if not path.is_file():
            return f"{self.path} is missing from the bundle"
        digest = sha256_file(path)
        if digest != self.sha256:
            return (f"{self.path}: sha256 mismatch, the file was altered after export "
                    f"(manifest {self.sha256[:12]}..., file {digest[:12]}...); export it again")
        return None


FAILED_SUFFIX = ".failed"


def is_edgekit_bundle(folder: Path) -> bool:
    """Whether ``folder`` holds a manifest edgekit wrote (any version): only such a folder may be replaced. A
    user's folder that merely holds some ``manifest.json`` is not one."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "format_version" in data and "edgekit_version" in data and \
        isinstance(data.get("artifacts"), list)


def outside_bundle(bundle: Path, relative: str) -> str | None:
    """Why a path the manifest names would leave the bundle (absolute, ``..``, a symlink out), or None. A
    manifest is data from wherever the bundle came from: it must never point validate at other files."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or "\\" in relative:
        return f"{relative!r}: the manifest names a path outside the bundle (absolute); export the bundle again"
    root = bundle.resolve()
    target = (bundle / relative).resolve()
    if target != root and root not in target.parents:
        return f"{relative}: the manifest names a path outside the bundle; export the bundle again"
    return None


@dataclass(frozen=True)
class StepRecord:
    name: str
    status: str  # done | failed
    seconds: float
    detail: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict) -> "StepRecord":
        return cls(d["name"], d["status"], float(d["seconds"]), d.get("detail"))


@dataclass
class Manifest:
    model: dict  # ModelConfig.to_dict() plus the variant
    preprocessing: dict
    options: dict  # the export's options, as asked
    status: str = "complete"  # complete | failed
    artifacts: list[Artifact] = field(default_factory=list)
    parity: list[ParityResult] = field(default_factory=list)
    gates: GateTable | None = None
    reference: dict = field(default_factory=dict)  # file, sha256, inputs' sources
    labels: dict = field(default_factory=dict)  # file, count, source
    steps: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # int8 files: each one's per-layer comparison with its fp32 file (layerwise.LayerReport.to_dict, paths
    # relative to the bundle), or {"artifact", "error"} when the comparison could not run
    layers: list[dict] = field(default_factory=list)
    latency: dict = field(default_factory=dict)  # host latency per file (devices.host.HostLatency.to_dict)
    error: str | None = None
    versions: dict = field(default_factory=library_versions)
    # the CPU that made the files and measured them (int8 exactness and speed depend on it): devices.runner.cpu_info
    host: dict = field(default_factory=host_cpu)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    edgekit_version: str = __version__
    # warnings already printed while the export ran (not saved): `edgekit export` repeats only the others
    shown: set[str] = field(default_factory=set, repr=False, compare=False)
    # where the export put the bundle (not saved): DIR/<variant>, or DIR/<variant>.failed beside a good bundle
    published: Path | None = field(default=None, repr=False, compare=False)

    @property
    def variant(self) -> str:
        return self.model["variant"]

    @property
    def weights(self) -> dict:
        return self.model.get("weights", {})

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if s.status == "failed"), None)

    @property
    def passed(self) -> bool:
        return self.status == "complete" and all(p.passed for p in self.parity)

    def artifact(self, path: str) -> Artifact:
        return next(a for a in self.artifacts if a.path == path)

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "edgekit_version": self.edgekit_version, "created": self.created,
            "status": self.status, "passed": self.passed, "failed_step": self.failed_step, "error": self.error,
            "versions": self.versions, "host": self.host, "model": self.model, "weights": self.weights,
            "preprocessing": self.preprocessing, "options": self.options, "labels": self.labels,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "gates": self.gates.to_dict() if self.gates else None,
            "reference": self.reference, "parity": [p.to_dict() for p in self.parity],
            "layers": self.layers, "latency": self.latency,
            "steps": [s.to_dict() for s in self.steps], "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(model=d["model"], preprocessing=d["preprocessing"], options=d.get("options", {}),
                   status=d.get("status", "complete"),
                   artifacts=[Artifact.from_dict(a) for a in d.get("artifacts", [])],
                   parity=[ParityResult.from_dict(p) for p in d.get("parity", [])],
                   gates=GateTable.from_dict(d["gates"]) if d.get("gates") else None,
                   reference=d.get("reference", {}), labels=d.get("labels", {}),
                   steps=[StepRecord.from_dict(s) for s in d.get("steps", [])], warnings=d.get("warnings", []),
                   layers=d.get("layers") or [], latency=d.get("latency") or {}, error=d.get("error"),
                   versions=d.get("versions", {}), host=d.get("host") or {}, created=d.get("created", ""),
                   edgekit_version=d.get("edgekit_version", ""))

    def write(self, bundle: Path) -> Path:
        path = bundle / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, bundle: Path) -> "Manifest":
        path = bundle / MANIFEST_NAME
        if not path.is_file():
            raise EdgekitError(f"{bundle} holds no {MANIFEST_NAME}; give a bundle folder written by "
                               "`edgekit export` (e.g. exports/mobilenet_v2)")
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("format_version") != FORMAT_VERSION:
                raise EdgekitError(f"{path} has format_version {data.get('format_version')!r}, this edgekit "
                                   f"reads {FORMAT_VERSION}; export the bundle again")
            return cls.from_dict(data)
        except EdgekitError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EdgekitError(f"{path} is not a valid edgekit manifest ({type(e).__name__}: {e}); export the "
                               "bundle again") from None


# ---------------------------------------------------------------------------------------------- reference
@dataclass
class Reference:
    """The parity inputs and the PyTorch model's outputs on them, stored so validate needs no torch."""

    inputs: np.ndarray  # NCHW float32
    outputs: np.ndarray  # [N, classes] float32
    sources: list[str]
    # a model of several inputs or outputs: the others, in forward()'s order (npz keys input_1.., output_1..)
    more_inputs: list[np.ndarray] = field(default_factory=list)
    more_outputs: list[np.ndarray] = field(default_factory=list)

    @property
    def all_inputs(self) -> list[np.ndarray]:
        return [self.inputs, *self.more_inputs]

    @property
    def all_outputs(self) -> list[np.ndarray]:
        return [self.outputs, *self.more_outputs]

    def real_inputs(self) -> list[np.ndarray]:
        """Each input's real pictures, the random inputs left out (all of them where none is real)."""
        real = is_real(self.sources)
        return [x[real] if real.any() else x for x in self.all_inputs]

    def write(self, bundle: Path) -> dict:
        path = bundle / REFERENCE_NAME
        more = {f"input_{k}": x for k, x in enumerate(self.more_inputs, 1)} | \
            {f"output_{k}": x for k, x in enumerate(self.more_outputs, 1)}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, inputs=self.inputs, outputs=self.outputs, sources=np.array(self.sources), **more)
        several = {"inputs": len(self.all_inputs), "outputs": len(self.all_outputs)} if more else {}
        return {"file": REFERENCE_NAME, "sha256": sha256_file(path), "samples": len(self.inputs),
                "real_images": int(is_real(self.sources).sum()),
                "random_inputs": int((~is_real(self.sources)).sum()),
                "input_shape": list(self.inputs.shape), "sources": self.sources} | several

    @classmethod
    def read(cls, bundle: Path, expected_sha256: str | None) -> "Reference":
        path = bundle / REFERENCE_NAME
        if not path.is_file():
            raise EdgekitError(f"{path} is missing; validate needs the reference outputs, export the bundle again")
        if expected_sha256 and sha256_file(path) != expected_sha256:
            raise GateFailure(f"{path}: sha256 mismatch, the reference was altered after export; export the "
                              "bundle again")
        try:
            with np.load(path, allow_pickle=False) as data:
                def numbered(prefix: str) -> list[np.ndarray]:
                    found = sorted(int(k[len(prefix):]) for k in data.files
                                   if k.startswith(prefix) and k[len(prefix):].isdigit())
                    return [data[f"{prefix}{k}"].astype(np.float32) for k in found]

                return cls(data["inputs"].astype(np.float32), data["outputs"].astype(np.float32),
                           [str(s) for s in data["sources"]], numbered("input_"), numbered("output_"))
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # damaged npz
            raise EdgekitError(f"{path} is not a readable reference ({type(e).__name__}: {e}); export the bundle "
                               "again") from None


# ---------------------------------------------------------------------------------------------- validate
@dataclass
class BundleCheck:
    """``edgekit validate`` on one bundle: integrity problems plus a fresh parity verdict per file, and what was
    checked (file -> how), so a pass says what it covers. ``manifest`` is None when it could not be read."""

    bundle: Path
    manifest: Manifest | None
    problems: list[str]
    parity: list[ParityResult]
    checked: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(p.passed for p in self.parity)


# Files an app or a CI job takes from a bundle: every one must be listed in the manifest, or validate fails
SHIPPED_SUFFIXES = (*SUFFIXES, ".data", ".bin", ".txt", ".npz")
_BUNDLE_OWN = (MANIFEST_NAME, REPORT_NAME)


def _uncovered(bundle: Path, manifest: Manifest) -> list[str]:
    """Files in the bundle that the manifest does not describe: validate cannot vouch for them."""
    listed = {a.path for a in manifest.artifacts} | {manifest.labels.get("file") or LABELS_NAME,
                                                       manifest.reference.get("file") or REFERENCE_NAME}
    if not manifest.labels:
        listed.discard(LABELS_NAME)  # a labels.txt the manifest does not record is not vouched for
    found = [p.relative_to(bundle).as_posix() for p in sorted(bundle.rglob("*"))
             if p.is_file() and p.suffix.lower() in SHIPPED_SUFFIXES and p.name not in _BUNDLE_OWN]
    return [name for name in found if name not in listed]


def _check_labels(bundle: Path, manifest: Manifest) -> tuple[str | None, str]:
    """(problem or None, how it was checked) for labels.txt, which an app ships beside the model."""
    record = manifest.labels or {}
    if not record:  # a bundle without class names (a manifest written by hand, or an older tool): nothing ships
        return None, "none recorded"
    name = record.get("file") or LABELS_NAME
    problem = outside_bundle(bundle, name)
    if problem:
        return problem, "not checked"
    path = bundle / name
    if not path.is_file():
        return f"{name} is missing from the bundle", "missing"
    if not record.get("sha256"):
        return None, "present; not hash-checked (the manifest predates label hashes: export again to cover it)"
    digest = sha256_file(path)
    if digest != record["sha256"]:
        return (f"{name}: sha256 mismatch, the class names were altered after export (manifest "
                f"{record['sha256'][:12]}..., file {digest[:12]}...); export it again"), "altered"
    return None, "sha256 matches"


def find_bundles(folder: Path) -> list[Path]:
    """``folder`` itself when it is a bundle, else the bundles directly inside it."""
    if not folder.is_dir():
        raise EdgekitError(f"{folder} is not a folder; give a bundle written by `edgekit export` "
                           "(e.g. exports/mobilenet_v2) or the folder holding bundles")
    if (folder / MANIFEST_NAME).is_file():
        return [folder]
    # hidden folders are an export's staging (``.<variant>.*.partial``) or a bundle being swapped out; a
    # ``<variant>.failed`` folder is a failed attempt kept beside the good bundle (validate it by name)
    bundles = sorted(p for p in folder.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(FAILED_SUFFIX)
                     and (p / MANIFEST_NAME).is_file())
    if not bundles:
        raise EdgekitError(f"{folder} holds no {MANIFEST_NAME} (nor do its sub-folders); run `edgekit export` "
                           "first or give the bundle folder")
    return bundles


def integrity_problems(bundle: Path, manifest: Manifest, checked: dict[str, str] | None = None) -> list[str]:
    """Everything that makes the bundle on disk differ from what its export wrote: model files, labels.txt and
    reference.npz against their sha256, paths that leave the bundle, files the manifest does not list. validate,
    eval, bench and inspect all refuse a bundle with any of these. ``checked`` collects how each file was checked."""
    checked = {} if checked is None else checked
    problems = []  # the model files first: a one-line error names the most serious problem
    for artifact in manifest.artifacts:
        problem = artifact.check_file(bundle)
        checked[artifact.path] = "sha256 matches" if not problem else "not usable"
        if problem:
            problems.append(problem)
    labels_problem, checked[manifest.labels.get("file") or LABELS_NAME] = _check_labels(bundle, manifest)
    if labels_problem:
        problems.append(labels_problem)
    reference = manifest.reference.get("file") or REFERENCE_NAME
    if manifest.reference:
        problem = outside_bundle(bundle, reference)
        if not problem and not (bundle / reference).is_file():
            problem = f"{reference} is missing from the bundle"
        elif not problem and manifest.reference.get("sha256") and \
                sha256_file(bundle / reference) != manifest.reference["sha256"]:
            problem = f"{reference}: sha256 mismatch, the reference was altered after export; export the bundle again"
        checked[reference] = "sha256 matches" if not problem else "not usable"
        if problem:
            problems.append(problem)
    problems += [f"{name} is in the bundle but not in its manifest, so nothing vouches for it; remove it or export "
                 "again" for name in _uncovered(bundle, manifest)]
    return problems


def validate_bundle(bundle: Path, gates: GateTable | None = None, threads: int | None = None) -> BundleCheck:
    """Re-check every file of a bundle with its format's runtime alone (no PyTorch for ONNX and TFLite): hashes, then parity against the
    stored reference, judged by ``gates`` (default: the gates recorded at export)."""
    try:
        manifest = Manifest.read(bundle)
    except EdgekitError as e:  # one bad bundle in a folder of bundles fails alone
        return BundleCheck(bundle, None, [str(e)], [])
    problems: list[str] = []
    results: list[ParityResult] = []
    check = BundleCheck(bundle, manifest, problems, results)
    if manifest.status != "complete":
        problems.append(f"the export failed at step {manifest.failed_step or '?'}: {manifest.error}")
        return check
    if not manifest.artifacts:
        problems.append("the manifest lists no model files")
    problems += integrity_problems(bundle, manifest, check.checked)
    if check.checked.get(manifest.reference.get("file") or REFERENCE_NAME) != "sha256 matches":
        return check  # no trustworthy reference outputs: nothing to run parity against
    try:
        reference = Reference.read(bundle, None)  # its hash is among the integrity problems
    except EdgekitError as e:
        problems.append(str(e))
        return check
    if gates is None:
        table, check.warnings = (manifest.gates or DEFAULT_GATES).sanitized()
    else:
        table = gates
    trained = bool(manifest.weights.get("trained", False))
    tasks, tables, names = judged_outputs(manifest, table, recorded=gates is None)
    for artifact in manifest.artifacts:
        if check.checked.get(artifact.path) != "sha256 matches":
            continue
        check.checked[artifact.path] = "sha256 matches, parity re-run"
        gated, note = is_gated(artifact.precision, trained)
        try:
            results += check_outputs(bundle / artifact.path, artifact.path, artifact.precision, reference.all_inputs,
                                     reference.all_outputs, [t.for_precision(artifact.precision) for t in tables],
                                     gated, note, threads, is_real(reference.sources), tasks, names)
        except EdgekitError as e:
            problems.append(f"{artifact.path}: {e}")
    return check


def several_io(manifest: Manifest) -> bool:
    """Whether the bundle holds a model of several inputs or outputs (its manifest lists them)."""
    return len(manifest.model.get("inputs") or ()) > 1 or len(manifest.model.get("outputs") or ()) > 1


def judged_outputs(manifest: Manifest, table: GateTable, recorded: bool = True
                   ) -> tuple[list[OutputTask], list[GateTable], list[str] | None]:
    """How each output of the bundle's model is judged: its task, its gates, its name (None for a model of one
    output). A model of several: each output with its own task, against the gates the export recorded for it
    (``recorded``) or ``table`` with the task's defaults."""
    if several_io(manifest):
        outputs = manifest.model["outputs"]
        return ([OutputTask.from_dict(o.get("task")) for o in outputs],
                [output_gates(table, o, recorded) for o in outputs], [o["name"] for o in outputs])
    return [OutputTask.from_dict(manifest.model.get("task"))], [table], None


def output_gates(table: GateTable, output: dict, recorded: bool = True) -> GateTable:
    """The gates one output of a model of several is judged with: the ones its export recorded (the table with
    that output's task defaults), or ``table`` as given on the command line with the task's defaults applied."""
    if recorded and output.get("gates"):
        return GateTable.from_dict(output["gates"])
    return gates_for_task(table, OutputTask.from_dict(output.get("task")))
