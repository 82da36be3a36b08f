"""``create_model``: a registered architecture plus weights from one of the sources users have.

Sources: ``random``; ``imagenet`` (torchvision's checkpoint: cache or download); a ``.pt``/``.pth``/
``.safetensors`` file; a Google ``.tflite`` MobileNet (see ``tflite_import``). ``default`` is what the CLI
uses when the user did not choose: ImageNet where it can be had, else random weights with a loud warning.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..console import warn
from ..errors import EdgekitError
from ..fileio import sha256_file
from ..types import ModelConfig, WeightsInfo
from .download import base_url, fetch_checkpoint
from .registry import TORCHVISION_URL, build_model, get_spec, resolve_config

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".tflite")
_IGNORED_KEYS = ("num_batches_tracked",)


def create_model(name: str, *, width: float | None = None, resolution: int | None = None,
                 num_classes: int | None = None, weights: str | Path = "random",
                 keep_background: bool = False) -> nn.Module:
    """Build ``name`` in eval mode with the requested weights; ``model.edgekit_config`` records what was made."""
    weights = str(weights)
    if weights.lower().endswith(".tflite"):
        from .tflite_import import import_tflite

        return import_tflite(Path(weights), name, width=width, resolution=resolution,
                             num_classes=num_classes, keep_background=keep_background)
    recorded = recorded_config(Path(weights)) if weights.lower().endswith(".safetensors") else {}
    config = resolve_config(name, width if width is not None else recorded.get("width"),
                            resolution if resolution is not None else recorded.get("resolution"), num_classes)
    if weights == "random":
        return build_model(config)
    if weights in ("imagenet", "default"):
        return _from_imagenet(config, num_classes, soft=weights == "default")
    if Path(weights).suffix.lower() in WEIGHT_FILE_SUFFIXES or Path(weights).exists():
        path = Path(weights)
        model = _from_state_dict(_with_recorded(config, recorded, path), read_state_dict(path), num_classes,
                                 WeightsInfo(weights, "file", str(path.absolute()), sha256_file(path), trained=True))
        labels = recorded.get("labels")
        if labels and len(labels) == model.edgekit_config.num_classes:  # not when --num-classes replaced the head
            model.edgekit_config = replace(model.edgekit_config, labels=tuple(labels))
        return model
    raise EdgekitError(f"unknown weights {weights!r}: use random, imagenet, or a .pt/.pth/.safetensors/.tflite file")


def _from_imagenet(config: ModelConfig, num_classes: int | None, soft: bool) -> nn.Module:
    spec = get_spec(config.name)
    problem = None
    if spec.checkpoint is None:
        problem = (f"torchvision publishes no ImageNet checkpoint for {config.name}"
                   + ("; pass --weights with a Google .tflite file" if config.family == "mobilenet_v1" else ""))
    elif spec.default_width is not None and config.width != spec.default_width:
        problem = f"the ImageNet checkpoint of {config.name} exists only for width {spec.default_width:g}"
    if problem is None:
        try:
            path = fetch_checkpoint(spec.checkpoint.filename, base_url(TORCHVISION_URL))
        except EdgekitError as e:
            problem = str(e)
    if problem is not None:
        if not soft:
            raise EdgekitError(problem)
        warn(f"{problem}. Continuing with RANDOM weights: accuracy and int8 figures mean nothing.", loud=True)
        return build_model(replace(config, weights=WeightsInfo("default", "random", note=problem)))
    if config.resolution != spec.checkpoint.resolution:
        warn(f"{config.name}'s ImageNet weights were evaluated at {spec.checkpoint.resolution}px, "
             f"you asked for {config.resolution}px; accuracy will differ")
    info = WeightsInfo("imagenet", "imagenet", str(path), sha256_file(path), trained=True)
    return _from_state_dict(replace(config, preprocessing=spec.checkpoint.preprocessing),
                            read_state_dict(path), num_classes, info)


def recorded_config(path: Path) -> dict:
    """What edgekit wrote into a .safetensors header (``edgekit finetune`` does: model, width, resolution, padding,
    preprocessing, labels), or {} for any other file. A state_dict alone cannot say that a fine-tune of Google's
    .tflite weights needs TF "SAME" padding and mean/std 128: rebuilt without them it is silently wrong."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            text = (f.metadata() or {}).get("edgekit")
        recorded = json.loads(text) if text else {}
    except (SafetensorError, OSError, ValueError):
        return {}  # read_state_dict names the problem
    return recorded if isinstance(recorded, dict) else {}


def _with_recorded(config: ModelConfig, recorded: dict, path: Path) -> ModelConfig:
    """``config`` with the padding and preprocessing the file records."""
    if not recorded:
        return config
    from ..types import Preprocessing
    from .blocks import PADDING_MODES

    model = recorded.get("model")
    if model and get_spec(model).name != config.name:
        raise EdgekitError(f"weights {path} are a {model}, not a {config.name}; export them as {model}")
    padding = recorded.get("padding", config.padding)
    if padding not in PADDING_MODES:
        raise EdgekitError(f"weights {path} record padding {padding!r}, not one of {', '.join(PADDING_MODES)}; "
                           "the file's header is damaged")
    try:
        preprocessing = (Preprocessing.from_dict(recorded["preprocessing"]) if "preprocessing" in recorded
                         else config.preprocessing)
    except (KeyError, TypeError, ValueError):
        raise EdgekitError(f"weights {path} record unreadable preprocessing; the file's header is damaged") from None
    return replace(config, padding=padding, preprocessing=preprocessing)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file; never executes pickled code (``weights_only=True``)."""
    if path.is_dir():
        raise EdgekitError(f"weights {path} is a folder; give the weights file inside it (.pt, .pth, .safetensors "
                           "or .tflite)")
    if not path.is_file():
        raise EdgekitError(f"weights file {path} does not exist; check the path")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise EdgekitError(f"cannot read {path} as safetensors ({e}); the file is corrupt or not "
                               "safetensors") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        text = str(e)
        if "Unsupported global" in text or "GLOBAL " in text:  # a pickled callable: would run code
            raise EdgekitError(f"refused to load {path}: it contains Python objects that could run code; "
                               "re-save it with torch.save(model.state_dict()) or as .safetensors") from None
        first_line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise EdgekitError(f"cannot read weights file {path} ({first_line}); it is corrupt or not a "
                           "PyTorch checkpoint") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgekitError(f"{path} holds no state_dict (a dict of tensors, or one under 'state_dict' or "
                           "'model'); save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _classifier_keys(model: nn.Module) -> tuple[str, str]:
    """State-dict keys of the final Linear layer (of the last layer with weights, for a network without one:
    U-Net's 1x1 class convolution)."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    name = linears[-1] if linears else [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    return f"{name}.weight", f"{name}.bias"


def _from_state_dict(config: ModelConfig, state: dict[str, torch.Tensor], num_classes: int | None,
                     info: WeightsInfo) -> nn.Module:
    adapt = get_spec(config.name).adapt_state_dict
    if adapt is not None:  # e.g. GoogLeNet's auxiliary training heads, which inference never runs
        state, note = adapt(state)
        if note:
            info = replace(info, note=note)
    probe = build_model(replace(config, num_classes=1))
    weight_key, bias_key = _classifier_keys(probe)
    ckpt_classes = state[weight_key].shape[0] if weight_key in state else None
    classes = num_classes or ckpt_classes or config.num_classes
    model = build_model(replace(config, num_classes=classes, weights=info))
    if ckpt_classes is not None and ckpt_classes != classes:
        warn(f"replacing the classifier: the checkpoint has {ckpt_classes} classes, the model {classes} "
             "(transfer learning; train the new head before use)")
        state = {k: v for k, v in state.items() if k not in (weight_key, bias_key)}
        load_strict(model, state, info.path or info.requested, skip=(weight_key, bias_key))
        model.edgekit_config = replace(model.edgekit_config,
                                       weights=replace(info, note=f"classifier replaced ({ckpt_classes} -> {classes})"))
    else:
        load_strict(model, state, info.path or info.requested)
    return model.eval()


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, skip: tuple[str, ...] = ()) -> None:
    """Load every key or fail naming the first keys that do not fit, so users see the cause at once."""
    expected = {k: v for k, v in model.state_dict().items() if k not in skip}
    missing = [k for k in expected if k not in state and not k.endswith(_IGNORED_KEYS)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{more})")
    if problems:
        cfg = model.edgekit_config
        raise EdgekitError(f"weights {source} do not fit {cfg.name} width {cfg.width:g}: {'; '.join(problems)}; "
                           "check the model name and --width")
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:  # a diverged training run: every output would be NaN, and int8 calibration would hide it
        raise EdgekitError(f"weights {source} hold NaN or infinite values (first: {broken}); use a checkpoint from "
                           "before training diverged")
    model.load_state_dict(state, strict=not skip)
