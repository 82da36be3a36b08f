"""The order of `edgekit export`: model -> export-ready copy -> reference -> fp32 files -> fp16 / int8 ->
parity -> bundle. Each step is a plain function of typed values; this module only orders them, records
their timings and failures, and publishes the bundle.

The bundle is built in a hidden staging folder beside its destination and renamed into place at the end, so
``DIR/<variant>/`` always holds one whole run: an interrupted export leaves the previous bundle untouched,
and a failed one leaves a bundle whose manifest says which step failed (``edgekit validate`` fails on it).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from .capture import captured_output, one_line
from .console import info, step, warn
from .cpu import describe
from .devices import host
from .errors import EdgekitError, Terminated
from .export_spec import CALIBRATION_MINIMUM, ExportSpec, calibration_warning
from .exporters.backend import backend_for
from .exporters.common import edgekit_metadata, export_ready, preprocessing_record
from .fileio import atomic_path, atomic_write_text, ensure_writable_dir, sha256_file
from .formats import FORMAT_NAMES
from .images import find_images, read_labelled_set
from .labels import default_labels, read_labels
from .layerwise import compare_layers
from .manifest import (FAILED_SUFFIX, LABELS_NAME, MANIFEST_NAME, REPORT_NAME, Artifact, Manifest, Reference,
                       StepRecord, is_edgekit_bundle, output_gates)
from .parity import (OutputTask, build_inputs, check_outputs, embedding_task, gates_for_task,
                     is_gated, is_real, paired_inputs, spread)
from .quantize.calibration import CalibrationSet
from .report import render_report
from .sample_images import sample_image_paths
from .table import human_bytes

__all__ = ["CALIBRATION_MINIMUM", "ExportFailed", "ExportSpec", "calibration_warning", "failed_attempt",
           "run_export"]
_REFERENCE_BATCH = 4  # PyTorch reference in small batches: big variants at high resolution stay in memory


class ExportFailed(EdgekitError):
    """A conversion step failed after the inputs were accepted: the bundle's manifest records which."""

    exit_code = 3


class _Steps:
    """Runs named steps with progress on the console and keeps a record of each for the manifest."""

    def __init__(self, records: list[StepRecord]):
        self.records = records

    @contextmanager
    def run(self, name: str, label: str | None = None):
        _raise_pending_signal()
        started = time.perf_counter()
        try:
            with step(label or name) as outcome, _errors_of_a_signal():
                yield outcome
            _raise_pending_signal()
        except BaseException as e:
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.records.append(StepRecord(name, "failed", time.perf_counter() - started, detail))
            raise
        self.records.append(StepRecord(name, "done", outcome["seconds"], outcome.get("detail")))


def run_export(spec: ExportSpec, model=None) -> Manifest:
    """Export ``spec`` (or the given prepared ``model``, which must carry ``edgekit_config``) to its bundle.

    Returns the manifest whatever the parity verdict (``manifest.passed``); raises EdgekitError for bad
    input before any work, ExportFailed when a step fails.
    """
    out_root = ensure_writable_dir(Path(spec.out))
    backends = [backend_for(name) for name in spec.formats]
    for backend in backends:
        backend.check(spec)  # options a back-end cannot honour are refused before any work
    records: list[StepRecord] = []
    steps = _Steps(records)
    calibration_note = calibration_warning(spec)
    if calibration_note:
        warn(calibration_note)  # before the work, not minutes into it
    if model is None:
        with steps.run("model", f"model {spec.name} (weights: {spec.weights})") as outcome:
            # edgekit.models defines torch modules: importing it at the top would load torch for every command
            from .models import create_model

            model = create_model(spec.name, width=spec.width, resolution=spec.resolution,
                                 num_classes=spec.num_classes, weights=spec.weights,
                                 keep_background=spec.keep_background)
            outcome["detail"] = f"weights {model.edgekit_config.weights.source}"
    if spec.preprocessing is not None:  # declared by the user: calibration, parity, eval and the app metadata use it
        declared = replace(spec.preprocessing, channel_order=model.edgekit_config.preprocessing.channel_order)
        model.edgekit_config = replace(model.edgekit_config, preprocessing=declared)
    config = model.edgekit_config
    bundle = out_root / config.variant
    _check_replaceable(bundle)
    from .models.registry import declared_task  # torch modules: loaded only once a model is exported

    labels, labels_source = _resolve_labels(spec, config, embedding=declared_task(model) == "embedding")
    parity_images = _parity_images(spec)
    if spec.int8 and spec.calib is not None:
        if not find_images(spec.calib):
            raise EdgekitError(f"calibration folder {spec.calib} holds no images (jpg, jpeg, png, bmp, searched "
                               "recursively); point --calib at representative pictures")

    manifest = Manifest(model=config.to_dict() | {"variant": config.variant}, preprocessing=preprocessing_record(config),
                        options=spec.options(), gates=spec.gates, steps=records)
    manifest.labels = {"file": LABELS_NAME, "count": len(labels), "source": labels_source}
    if calibration_note:
        manifest.warnings.append(calibration_note)
        manifest.shown.add(calibration_note)
    if not config.weights.trained:
        manifest.warnings.append(f"weights are {config.weights.source} (untrained): the files compute the right "
                                 "function but classify nothing; int8 figures are not gated"
                                 + (f" ({config.weights.note})" if config.weights.note else ""))
    _remove_stale_staging(out_root, config.variant)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{config.variant}.{os.getpid()}.", suffix=_STAGING_SUFFIX,
                                        dir=out_root))
    except OSError as e:  # os.access can say yes where the file system says no (/proc, a read-only mount)
        raise EdgekitError(f"cannot write in {out_root}: {e.strerror}; choose another --out") from None
    try:
        with _terminate_as_interrupt():
            atomic_write_text(staging / LABELS_NAME, "\n".join(labels) + "\n")
            manifest.labels["sha256"] = sha256_file(staging / LABELS_NAME)
            _build(spec, backends, model, staging, manifest, steps, parity_images, labels)
            _raise_pending_signal()
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-made survives; the old bundle stays
        raise
    except Exception as e:
        manifest.status = "failed"
        manifest.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        try:
            where = _publish(staging, bundle, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        step_name = manifest.failed_step or "export"
        kept = "" if where == bundle else f"; the previous bundle {bundle} is unchanged"
        if isinstance(e, EdgekitError):
            raise ExportFailed(f"{step_name} failed: {manifest.error} (recorded in {where / MANIFEST_NAME}"
                               f"{kept})") from e
        if isinstance(e, OSError) and e.strerror:  # a full disk, a quota, a read-only mount: the user's to fix
            raise ExportFailed(f"{step_name} failed: {e.strerror} ({e.filename or 'writing the bundle'}); free space "
                               f"or choose another --out (recorded in {where / MANIFEST_NAME}{kept})") from e
        raise ExportFailed(f"{step_name} failed with {type(e).__name__}: {manifest.error} (recorded in "
                           f"{where / MANIFEST_NAME}{kept}); please report it") from e
    manifest.published = _publish(staging, bundle, manifest)
    return manifest


def _build(spec: ExportSpec, backends: list, model, staging: Path, manifest: Manifest, steps: _Steps,
           parity_images: list[Path], labels: tuple[str, ...]) -> None:
    config = model.edgekit_config
    variant = config.variant
    metadata = edgekit_metadata(config, labels, author=spec.author, license=spec.license)
    io = getattr(model, "edgekit_io", None)  # a model of several inputs or outputs
    if io is not None:  # every file names its tensors as the manifest does
        metadata["io"] = {"inputs": list(io.input_names), "outputs": list(io.output_names),
                          "tasks": list(io.output_tasks)}
    with steps.run("prepare", "prepare (dropout removed, batch norm folded, padding static)"):
        ready = export_ready(model, config.resolution)
        manifest.model["prepare"] = ready.edgekit_prepared  # fixes for a converter, named in report.md

    with steps.run("reference", "parity reference (PyTorch, eval mode)") as outcome:
        inputs = build_inputs(parity_images, config.preprocessing, config.resolution, spec.parity_samples,
                              spec.parity_random, spec.seed)
        if io is None:
            reference = Reference(inputs.nchw, _pytorch_outputs(model, [inputs.nchw])[0], inputs.sources)
        else:  # input K of each sample a different picture than input 0, every output kept
            arrays, sources = paired_inputs(inputs, len(io.input_names))
            outputs = _pytorch_outputs(model, arrays)
            reference = Reference(arrays[0], outputs[0], sources, arrays[1:], outputs[1:])
        manifest.reference = reference.write(staging) | {"skipped": inputs.skipped[:20]}
        from .models.registry import model_task  # classifier, dense or embedding: which figures parity gates

        if io is None:
            task = model_task(model, reference.outputs, is_real(reference.sources))
            manifest.model["task"] = task.to_dict()
            manifest.gates = gates_for_task(spec.gates, task)  # e.g. no PSNR floor on an int8 embedding
        else:
            tasks = _output_tasks(io, reference, manifest, spec)
        outcome["detail"] = f"{inputs.real} photos + {len(inputs.sources) - inputs.real} random inputs"

    fp32_files: dict[str, Path] = {}
    for backend in backends:
        fmt = backend.name
        relative = f"{variant}{backend.format.suffix}"
        with steps.run(f"{fmt} fp32", f"{fmt} export (fp32)") as outcome:
            artifact, _ = _write_artifact(staging, manifest, relative, fmt, "fp32", lambda tmp: backend.export_fp32(
                ready, tmp, spec=spec, resolution=config.resolution, metadata=metadata))
            fp32_files[fmt] = staging / relative
            outcome["detail"] = human_bytes(artifact.bytes)

    for backend in backends if spec.fp16 else []:
        if not backend.format.fp16:
            continue
        fmt = backend.name
        relative = f"{variant}_fp16{backend.format.suffix}"
        with steps.run(f"{fmt} fp16", f"{fmt} export (fp16 weights)") as outcome:
            artifact, _ = _write_artifact(staging, manifest, relative, fmt, "fp16",
                                          lambda tmp: backend.export_fp16(fp32_files[fmt], tmp, metadata))
            outcome["detail"] = human_bytes(artifact.bytes)

    if spec.int8:
        _build_int8(spec, backends, ready, config, staging, manifest, steps, fp32_files, metadata)

    if io is None:
        tasks, tables, names = [task], [manifest.gates], None
    else:  # one row per output, each with its own task and gates
        tables = [output_gates(spec.gates, o) for o in manifest.model["outputs"]]
        names = list(io.output_names)
    with steps.run("parity", f"parity of {len(manifest.artifacts)} files on {len(reference.inputs)} inputs") as outcome:
        for artifact in manifest.artifacts:
            gated, note = is_gated(artifact.precision, config.weights.trained)
            manifest.parity += check_outputs(
                staging / artifact.path, artifact.path, artifact.precision, reference.all_inputs,
                reference.all_outputs, [t.for_precision(artifact.precision) for t in tables], gated, note,
                real=is_real(reference.sources), tasks=tasks, outputs=names)
        failed = [p.label for p in manifest.parity if not p.passed]
        outcome["detail"] = f"FAILED: {', '.join(failed)}" if failed else "all gates pass"
    for result in manifest.parity:
        if result.kernels and result.kernels.finding:
            _warn(manifest, result.kernels.finding + ("" if config.weights.trained else
                  " (untrained weights amplify rounding: judge kernels on trained weights)"))

    if spec.int8 and spec.layer_samples:
        _compare_layers(manifest, staging, steps, reference, spec.layer_samples, backends)
    if spec.latency_runs:
        _host_latency(spec, manifest, staging, steps)


def _pytorch_outputs(model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``model``'s outputs (every one, float32) on ``arrays``, one array per forward() argument, in batches."""
    import torch

    count = len(arrays[0])
    batches = np.array_split(np.arange(count), math.ceil(count / _REFERENCE_BATCH))
    collected: list[list[np.ndarray]] = []
    # Untrained networks drive activations into denormal floats, which run ~20x slower on x86; values below 1e-38
    # change no figure parity reports, so they are flushed to zero for this step only.
    flush = torch.set_flush_denormal(True)
    try:
        with torch.no_grad():
            for batch in batches:
                found = model.eval()(*(torch.from_numpy(x[batch[0]:batch[-1] + 1]) for x in arrays))
                found = found if isinstance(found, (tuple, list)) else (found,)
                collected = collected or [[] for _ in found]
                for output, kept in zip(found, collected):
                    kept.append(output.numpy())
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return [np.concatenate(kept).astype(np.float32) for kept in collected]


def _output_tasks(io, reference: Reference, manifest: Manifest, spec: ExportSpec) -> list:
    """Each output's task (an embedding's same/different threshold set from its own reference) and gates,
    recorded in the manifest's ``model.outputs`` so validate judges each output as the export did."""
    real = is_real(reference.sources)
    tasks = [embedding_task(output, real) if kind == "embedding" else OutputTask(kind)
             for kind, output in zip(io.output_tasks, reference.all_outputs)]
    record = io.to_dict()
    for output, task in zip(record["outputs"], tasks):
        output["task"] = task.to_dict()
        output["gates"] = gates_for_task(spec.gates, task).to_dict()
    manifest.model |= record
    labelled = io.labelled
    manifest.model["task"] = tasks[labelled].to_dict()  # the output labels.txt names
    manifest.model["labelled_output"] = io.output_names[labelled]
    manifest.gates = spec.gates
    return tasks


_LAYERS_IN_MANIFEST = 10


def _compare_layers(manifest: Manifest, staging: Path, steps: _Steps, reference: Reference, samples: int,
                    backends: list) -> None:
    """Per-layer error of each int8 file against its fp32 file, on the real parity photos. A diagnosis, not a
    gate: whatever goes wrong is recorded in the manifest and never fails the export."""
    real = is_real(reference.sources)
    inputs = [x[:samples] for x in reference.real_inputs()]
    comparable = {b.name for b in backends if b.layer_comparison}
    pairs = [(a, next((f for f in manifest.artifacts if f.format == a.format and f.precision == "fp32"), None))
             for a in manifest.artifacts if a.precision == "int8" and a.format in comparable]
    if not pairs:
        return
    what = "photos" if real.any() else "inputs"
    with steps.run("layers", f"per-layer int8 error on {len(inputs[0])} {what}") as outcome:
        worst = []
        for int8, fp32 in pairs:
            if fp32 is None:
                manifest.layers.append({"artifact": int8.path, "error": f"no fp32 {int8.format} file to compare"})
                continue
            try:
                with captured_output() as log:
                    report = compare_layers(staging / int8.path, staging / fp32.path, inputs)
            except Exception as e:  # a diagnosis that breaks must not cost the user the bundle
                reason = one_line(e, log).rstrip(".")
                manifest.layers.append({"artifact": int8.path, "reference": fp32.path, "error": reason})
                warn(f"per-layer comparison of {int8.path} could not run ({reason}); the export goes on")
                continue
            manifest.layers.append(report.to_dict(worst=_LAYERS_IN_MANIFEST)
                                   | {"artifact": int8.path, "reference": fp32.path})
            top = report.worst(1)
            if top:
                worst.append(f"{int8.format}: {top[0].layer} loses {top[0].loss_db:.1f} dB")
        outcome["detail"] = "; ".join(worst) or "no layer compared"


def _host_latency(spec: ExportSpec, manifest: Manifest, staging: Path, steps: _Steps) -> None:
    """Time every file on this machine (edgekit bench's local device) and say loudly when an int8 file is
    slower than its fp32 file. Never fails the export: a host without a runtime is recorded as such."""
    files = [host.HostFile(staging / a.path, a.path, a.format, a.precision) for a in manifest.artifacts]
    label = (f"host latency of {len(files)} files ({host.THREADS} thread, {spec.latency_runs} runs after "
             f"{host.WARMUP} warm-up, a fresh process each)")
    with steps.run("latency", label) as outcome:
        try:
            latency = host.measure(files, runs=spec.latency_runs, warmup=host.WARMUP)
        except Exception as e:  # the figures are a report, not a gate: keep the bundle
            manifest.latency = {"error": one_line(e)}
            _warn(manifest, f"host latency not measured ({one_line(e)})")
            outcome["detail"] = "not measured"
            return
        manifest.latency = latency.to_dict()
        errors = latency.errors()
        if errors:
            _warn(manifest, f"host latency not measured for {', '.join(r['artifact'] for r in errors)}: "
                            f"{errors[0]['error']}")
        cpu = describe(manifest.host) if manifest.host else "this CPU"
        for c in latency.slower():
            advice = (f"Known cause: {c['cause']}" if c.get("cause") else "An int8 file slower than its fp32 file on "
                      "a CPU with 8-bit dot products is a defect: confirm with `edgekit bench`, then keep the fp32 "
                      "file or report it")
            _warn(manifest, f"{c['int8']} is SLOWER than {c['fp32']} on {cpu}: p50 {c['int8_p50_ms']:.2f} "
                            f"vs {c['fp32_p50_ms']:.2f} ms ({c['ratio_p50']:.2f}x, {host.THREADS} thread). {advice}",
                  loud=True)
        if latency.speed_note():
            info(latency.speed_note())
        ratios = [f"{c['format']} {c['ratio_p50']:.2f}x" for c in latency.comparisons()]
        outcome["detail"] = f"int8/fp32 p50: {', '.join(ratios)}" if ratios else f"{len(files) - len(errors)} measured"


def _warn(manifest: Manifest, message: str, loud: bool = False) -> None:
    """Print a warning now and keep it in the manifest; the command's recap at the end does not repeat it."""
    warn(message, loud=loud)
    manifest.warnings.append(message)
    manifest.shown.add(message)


def _build_int8(spec: ExportSpec, backends: list, ready, config, staging: Path, manifest: Manifest, steps: _Steps,
                fp32_files: dict[str, Path], metadata: dict) -> None:
    with steps.run("calibration", "int8 calibration images") as outcome:
        if spec.calib is not None:
            calibration = CalibrationSet.from_folder(spec.calib, config.preprocessing, config.resolution,
                                                     spec.calib_samples)
        else:
            warned = any("edgekit's built-in photos" in w for w in manifest.warnings)  # before the work
            calibration = CalibrationSet.builtin(config.preprocessing, config.resolution, spec.calib_samples,
                                                 warned=warned)
            warning = ("int8 calibrated on edgekit's built-in photos; --calib DIR with pictures from your own data "
                       "calibrates better")
            manifest.warnings.append(warning)
            manifest.shown.add(warning)  # said on the console already, before the work or by CalibrationSet.builtin
        manifest.options["calibration"] |= {"used": calibration.to_dict()}
        outcome["detail"] = f"{len(calibration)} images"
    for backend in backends:
        if spec.calib_method not in backend.calibration_methods:
            honoured = [backend_for(name).format.title for name in FORMAT_NAMES
                        if spec.calib_method in backend_for(name).calibration_methods]
            info(f"note: --calib-method {spec.calib_method} applies to the {' and '.join(honoured)} "
                 f"file{'s' * (len(honoured) > 1)}; the {backend.format.title} file is calibrated with "
                 f"{backend.calibration_methods[0]} ({backend.calibration_note})")
    for backend in backends:
        fmt = backend.name
        relative = f"{config.variant}_int8{backend.format.suffix}"
        with steps.run(f"{fmt} int8", f"{fmt} int8 quantization") as outcome:
            artifact, details = _write_artifact(
                staging, manifest, relative, fmt, "int8", lambda tmp: backend.quantize_int8(
                    ready, fp32_files[fmt], tmp, calibration=calibration, spec=spec, metadata=metadata))
            outcome["detail"] = "; ".join(filter(None, [human_bytes(artifact.bytes), backend.int8_summary(details)]))


def _write_artifact(staging: Path, manifest: Manifest, relative: str, fmt: str, precision: str,
                    write) -> tuple[Artifact, dict]:
    """One file of the bundle: ``write(tmp)`` (a back-end's export, returning its facts) into a temporary path
    renamed into place, timed, and listed in the manifest. Returns the artifact and the back-end's facts."""
    started = time.perf_counter()
    with atomic_path(staging / relative) as tmp:
        details = write(tmp)
    artifact = Artifact.describe(staging, relative, fmt, precision, time.perf_counter() - started, details)
    manifest.artifacts.append(artifact)
    return artifact, details


def _resolve_labels(spec: ExportSpec, config, embedding: bool = False) -> tuple[tuple[str, ...], str]:
    if spec.labels is not None:
        return read_labels(Path(spec.labels), config.num_classes), f"file {Path(spec.labels).name}"
    if config.labels:
        return tuple(config.labels), "model"
    labels = default_labels(config.num_classes)
    if embedding:  # the outputs are an embedding's dimensions: there are no class names to ask for
        return labels, f"none: a {config.num_classes}-dimensional embedding has no classes"
    if config.num_classes in (1000, 1001):
        return labels, "ImageNet-1k class names (index order)"
    warn(f"no class names for {config.num_classes} classes: labels.txt holds class_0..class_{config.num_classes - 1}; "
         "pass --labels FILE")
    return labels, "generic (pass --labels FILE)"


def _parity_images(spec: ExportSpec) -> list[Path]:
    """Pictures for parity: --data (folder or labelled CSV), else --calib, else edgekit's built-in photos.
    Evenly spread picks come first, the rest stand by for unreadable files."""
    if spec.parity_samples == 0:
        return []
    if spec.data is not None:
        data = Path(spec.data)
        paths = [item.path for item in read_labelled_set(data)] if data.is_file() else find_images(data)
        if not paths:
            raise EdgekitError(f"{data} holds no images (jpg, jpeg, png, bmp); give a picture folder or a "
                               "labelled CSV with --data")
    elif spec.calib is not None:
        paths = find_images(Path(spec.calib))
    else:
        paths = sample_image_paths()
    chosen = spread(paths, spec.parity_samples)
    return chosen + [p for p in paths if p not in set(chosen)]


def _check_replaceable(bundle: Path) -> None:
    for folder in (bundle, failed_attempt(bundle)):
        if folder.exists() and not folder.is_dir():
            raise EdgekitError(f"{folder} exists and is not a folder; remove it or choose another --out")
        if folder.is_dir() and any(folder.iterdir()) and not is_edgekit_bundle(folder):
            raise EdgekitError(f"{folder} exists and is not an edgekit bundle (no edgekit {MANIFEST_NAME}); edgekit "
                               "will not replace it: remove it or choose another --out")


def failed_attempt(bundle: Path) -> Path:
    """Where a failed export goes when a bundle already stands at ``bundle``: beside it, never over it."""
    return bundle.with_name(f"{bundle.name}{FAILED_SUFFIX}")


def _publish(staging: Path, bundle: Path, manifest: Manifest) -> Path:
    """Write the manifest and report into the staging folder, then swap it in; returns where it went. Only a
    finished export whose files all pass replaces a bundle; any other goes to ``<variant>.failed`` beside it
    (a first export, with nothing to protect, is published in place so that validate sees the failure)."""
    manifest.write(staging)
    atomic_write_text(staging / REPORT_NAME, render_report(manifest, staging))
    _usual_permissions(staging)
    target = bundle if manifest.passed or not is_edgekit_bundle(bundle) else failed_attempt(bundle)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if target == bundle:  # a finished bundle supersedes an earlier failed attempt
        shutil.rmtree(failed_attempt(bundle), ignore_errors=True)
    return target


_STAGING_SUFFIX = ".partial"


def _remove_stale_staging(out_root: Path, variant: str) -> None:
    """Staging folders of exports that died without cleaning up (SIGKILL, a power cut): their process is gone."""
    for folder in out_root.glob(f".{variant}.*{_STAGING_SUFFIX}"):
        pid = folder.name[len(variant) + 2:].split(".", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue  # another export of the same variant is running now
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt where the work is; both are also remembered, and
    every step boundary raises them again: a signal that lands inside a library's ``try: import ... except:``
    (litert-torch's first import pulls in dozens of optional ones) would otherwise be swallowed, and the export
    would run to the end and replace the bundle (seen once in CI with SIGTERM during a conversion step)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        _pending_signals.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    _pending_signals.clear()
    try:
        with _errors_of_a_signal():
            yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)
        _pending_signals.clear()


_pending_signals: list[int] = []  # signals received during the export, re-raised at each step boundary


def _raise_pending_signal() -> None:
    if _pending_signals:
        raise Terminated() if _pending_signals[0] == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def _errors_of_a_signal():
    """An error raised after a signal arrived is the signal's: a library may turn its KeyboardInterrupt into its
    own error (Python wraps one raised in a class's ``__set_name__``, during an import inside litert-torch's
    conversion, in a RuntimeError; seen under load), and the export must still stop as interrupted."""
    try:
        yield
    except Exception:
        _raise_pending_signal()
        raise


def _usual_permissions(folder: Path) -> None:
    """Temporary files and folders are created private (0600/0700); a published bundle gets the modes any
    other file the user writes gets (umask), so a CI job or another account can read it."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)
