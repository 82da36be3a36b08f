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
           int8: bool = False, calib: str | Path | None = None, name: str | None = None, task: str | None = None,
           labels: str | Path | list[str] | None = None, **options) -> Manifest:
    """Export ``model`` (an ``nn.Module``) to a bundle in ``out``/<name>/ and return its manifest
    (``manifest.passed`` is the parity verdict; the exit code of the CLI follows it).

    ``example_inputs``: a tensor, or a tuple holding one, of the NCHW shape the model takes (C 3 or 1, H = W).
    ``preprocessing``: how pictures become that input: "imagenet", "tf", "none", or a ``Preprocessing``.
    ``labels``: a file or a list of class names. ``options``: any other field of ``ExportSpec`` (formats,
    io_dtype, data, parity_samples, latency_runs, gates, ...).
    """
    # edgekit.models defines torch modules: loaded when a model is exported, not at `import edgekit`
    from .models.custom import check_input_shape, prepare_custom

    shape = check_input_shape(_input_shape(example_inputs), "example_inputs' shape")
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


def _input_shape(example_inputs) -> tuple[int, ...]:
    import torch

    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor):
        raise EdgekitError(f"example_inputs must be one tensor (or a tuple holding one), got {len(inputs)} "
                           "values; edgekit exports models with one image input")
    return tuple(int(d) for d in inputs[0].shape)
