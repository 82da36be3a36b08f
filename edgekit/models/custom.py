"""Models of the user's own: ``path/to/file.py:attr`` or ``package.module:attr`` on the command line, or an
``nn.Module`` handed to ``edgekit.export``, made ready for the same pipeline as the zoo.

The module gets an ``edgekit_config`` like a zoo model's, with the input it was declared to take and the
preprocessing the user declared (never guessed): the pipeline, the bundle and the app metadata read it there.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..capture import one_line
from ..errors import EdgekitError
from ..parity import TASKS
from ..types import ModelConfig, Preprocessing, WeightsInfo
from .registry import MAX_CLASSES

CUSTOM_FAMILY = "custom"
_TARGET = re.compile(r"^(?P<where>.+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """``--input-shape 1,3,224,224`` -> (1, 3, 224, 224), checked as ``check_input_shape`` does."""
    if ";" in text or " " in text.strip():
        raise EdgekitError(f"--input-shape {text!r}: edgekit exports models with one image input (N,C,H,W); "
                           "wrap a model of several inputs in a module that takes one")
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise EdgekitError(f"--input-shape {text!r} is not N,C,H,W whole numbers, e.g. 1,3,224,224") from None
    return check_input_shape(shape, f"--input-shape {text!r}")


def check_input_shape(shape: tuple[int, ...], given: str) -> tuple[int, int, int, int]:
    """``shape`` if it is one NCHW image input edgekit can feed: 1 (greyscale) or 3 (RGB) channels, square;
    ``given`` names where it came from in the one-line error."""
    if len(shape) != 4 or min(shape) < 1:
        raise EdgekitError(f"{given} must be four positive numbers N,C,H,W, e.g. 1,3,224,224")
    _, channels, height, width = shape
    if channels not in (1, 3):
        raise EdgekitError(f"{given}: {channels} channels; edgekit feeds pictures, as RGB (3) or greyscale (1)")
    if height != width:
        raise EdgekitError(f"{given}: {height}x{width} is not square; edgekit's pictures are centre-cropped "
                           "squares: export at a square size")
    return shape


def load_target(target: str) -> nn.Module:
    """The ``nn.Module`` that ``target`` names: the attribute itself, or what calling it with no argument returns."""
    match = _TARGET.match(target)
    if not match:
        raise EdgekitError(f"{target!r} is not FILE.py:NAME or package.module:NAME (e.g. mynet.py:build)")
    where, attr = match["where"], match["attr"]
    module = _import_file(Path(where), target) if where.endswith(".py") else _import_module(where, target)
    value = module
    for part in attr.split("."):
        if not hasattr(value, part):
            found = sorted(n for n in vars(module) if not n.startswith("_"))[:8]
            raise EdgekitError(f"{where} has no attribute {attr!r} (it has: {', '.join(found) or 'nothing public'}); "
                               "name the function or module that builds your model")
        value = getattr(value, part)
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, type) and not issubclass(value, nn.Module) or not callable(value):
        raise EdgekitError(f"{target} is a {type(value).__name__}, not an nn.Module or a function that returns one")
    try:
        built = value()
    except Exception as e:  # the user's code can raise anything
        raise EdgekitError(f"calling {target}() failed: {one_line(e)}; it must build the model with no "
                           "arguments") from None
    if not isinstance(built, nn.Module):
        raise EdgekitError(f"{target}() returned {type(built).__name__}, not a torch.nn.Module; return the model")
    return built


def _import_file(path: Path, target: str):
    if not path.is_file():
        raise EdgekitError(f"model file {path} does not exist; check the path in {target}")
    name = f"edgekit_user_model_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise EdgekitError(f"importing {path} failed: {one_line(e)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(name: str, target: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise EdgekitError(f"no module {e.name!r} for {target}: install the package, or give a file path "
                           "(FILE.py:NAME)") from None
    except Exception as e:
        raise EdgekitError(f"importing {name} failed: {one_line(e)}") from None


def variant_name(text: str) -> str:
    """A folder-safe name: lower case letters, digits and underscores."""
    name = re.sub(r"[^0-9a-z]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()).strip("_")
    return name or "model"


def prepare_custom(model: nn.Module, input_shape: tuple[int, ...], preprocessing: Preprocessing | None,
                   name: str | None = None, source: str = "nn.Module",
                   labels: tuple[str, ...] | None = None, task: str | None = None) -> nn.Module:
    """``model`` in eval mode with an ``edgekit_config``: checked to accept ``input_shape`` and to return one
    tensor of class scores [N, K], per-pixel scores [N, K, H, W] or an embedding [N, D]. ``task`` (classifier,
    dense, embedding) decides how parity compares outputs; by default 4-D outputs are masks, 2-D class scores."""
    if not isinstance(model, nn.Module):
        raise EdgekitError(f"edgekit.export needs a torch.nn.Module, got {type(model).__name__}")
    _, channels, height, _ = input_shape
    if preprocessing is None:
        raise EdgekitError("declare how pictures become the model's input: --preprocessing imagenet|tf|none, or "
                           "--mean R G B --std R G B (edgekit does not guess a model's normalisation)")
    preprocessing = _with_channels(preprocessing, channels)
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(input_shape))
    except Exception as e:
        raise EdgekitError(f"{source} rejects input shape {','.join(map(str, input_shape))}: {one_line(e)}; pass "
                           "the shape it takes with --input-shape N,C,H,W") from None
    if not isinstance(output, torch.Tensor):
        raise EdgekitError(f"{source} returns {type(output).__name__}, not one tensor; edgekit exports models with "
                           "one output: return the tensor the app reads")
    if output.dim() not in (2, 4) or output.shape[0] != input_shape[0]:
        raise EdgekitError(f"{source} returns shape {list(output.shape)} for input {list(input_shape)}: edgekit "
                           "exports [N, classes] scores, [N, dim] embeddings or [N, classes, H, W] masks")
    outputs = int(output.shape[1])
    if outputs > MAX_CLASSES:
        raise EdgekitError(f"{source} has {outputs:,} outputs, more than edgekit's {MAX_CLASSES:,}")
    if task is not None and task not in TASKS:
        raise EdgekitError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    if task is not None and (task == "dense") != (output.dim() == 4):
        raise EdgekitError(f"--task {task} does not fit the output shape {list(output.shape)}: dense is for "
                           "[N, classes, H, W] masks, classifier and embedding for [N, K]")
    if labels is not None and len(labels) != outputs:
        raise EdgekitError(f"{len(labels)} labels for {outputs} outputs; give one name per output")
    weights = WeightsInfo(requested=source, source="user", trained=True,
                          note="the weights the module holds; edgekit cannot tell whether they are trained")
    model.edgekit_config = ModelConfig(name=variant_name(name or type(model).__name__), family=CUSTOM_FAMILY,
                                       width=1.0, resolution=int(height), num_classes=outputs,
                                       preprocessing=preprocessing, weights=weights, labels=labels)
    if task is not None:
        model.edgekit_task = task
    return model


def _with_channels(preprocessing: Preprocessing, channels: int) -> Preprocessing:
    return replace(preprocessing, channel_order="L" if channels == 1 else "RGB")
