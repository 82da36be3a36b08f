"""edgekit from Python: ``edgekit.export(model, example_inputs, ...)`` takes a model of your own through the same
steps as `edgekit export` (prepare, fp32 ONNX and NHWC TFLite, int8, parity, bundle)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .errors import EdgekitError
from .export_spec import ExportSpec
from .manifest import Manifest
from .pipeline import run_export
from .types import PREPROCESSING_PRESETS, Preprocessing

_SET_BY_EXPORT = {"name", "out", "int8", "calib", "preprocessing", "labels"}


def export(model, example_inputs, *, preprocessing: str | Preprocessing, out: str | Path = "exports",
           int8: bool = False, calib: str | Path | None = None, name: str | None = None,
           task: str | list[str] | None = None,
           labels: str | Path | list[str] | None = None, **options) -> Manifest:
    """Export ``model`` (an ``nn.Module``) to a bundle in ``out``/<name>/ and return its manifest
    (``manifest.passed`` is the parity verdict; the exit code of the CLI follows it).

    ``example_inputs``: a tensor, or a tuple holding one, of the NCHW shape the model takes (C 3 or 1, H = W); a
    model of several inputs: a tuple of them, one per forward() argument in order (all the same shape).
    ``task``: classifier, dense or embedding; a model of several outputs: one per output (a list or
    comma-separated).
    ``preprocessing``: how pictures become that input: "imagenet", "tf", "none", or a ``Preprocessing``.
    ``labels``: a file or a list of class names. ``options``: any other field of ``ExportSpec`` (formats,
    io_dtype, data, parity_samples, latency_runs, gates, ...).
    """
    # edgekit.models defines torch modules: loaded when a model is exported, not at `import edgekit`
    from .models.custom import check_input_shape, prepare_custom

    found = _input_shapes(example_inputs)
    shapes = [check_input_shape(shape, "example_inputs' shape" if len(found) == 1 else f"example_inputs[{k}]'s shape")
              for k, shape in enumerate(found)]
    shape = shapes[0] if len(shapes) == 1 else shapes
    if isinstance(preprocessing, str):
        if preprocessing not in PREPROCESSING_PRESETS:
            raise EdgekitError(f"unknown preprocessing {preprocessing!r}: choose from "
                               f"{', '.join(PREPROCESSING_PRESETS)}, or pass a Preprocessing")
        preprocessing = PREPROCESSING_PRESETS[preprocessing]
    clashing = sorted(_SET_BY_EXPORT & set(options))
    unknown = sorted(set(options) - {f.name for f in fields(ExportSpec)})
    if clashing or unknown:
        raise EdgekitError(f"edgekit.export() got {', '.join(clashing + unknown)}: "
                           + ("use its own keyword" if clashing else "not an ExportSpec field"))
    label_names = tuple(labels) if isinstance(labels, (list, tuple)) else None
    model = prepare_custom(model, shape, preprocessing, name=name, labels=label_names, task=task)
    spec = ExportSpec(name=model.edgekit_config.name, out=Path(out), int8=int8,
                      calib=Path(calib) if calib is not None else None, preprocessing=preprocessing,
                      labels=Path(labels) if labels is not None and label_names is None else None, **options)
    return run_export(spec, model=model)


def _input_shapes(example_inputs) -> list[tuple[int, ...]]:
    import torch

    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        kinds = ", ".join(type(x).__name__ for x in inputs) or "nothing"
        raise EdgekitError(f"example_inputs must be a tensor or a tuple of tensors (one per forward() argument), "
                           f"got {kinds}")
    return [tuple(int(d) for d in x.shape) for x in inputs]
