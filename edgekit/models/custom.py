"""Models of the user's own: ``path/to/file.py:attr`` or ``package.module:attr`` on the command line, or an
``nn.Module`` handed to ``edgekit.export``, made ready for the same pipeline as the zoo.

The module gets an ``edgekit_config`` like a zoo model's, with the input it was declared to take and the
preprocessing the user declared (never guessed): the pipeline, the bundle and the app metadata read it there.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..capture import one_line
from ..errors import EdgekitError
from ..parity import TASKS
from ..types import ModelConfig, ModelIO, Preprocessing, WeightsInfo, labelled_output
from .registry import MAX_CLASSES

CUSTOM_FAMILY = "custom"
_TARGET = re.compile(r"^(?P<where>.+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """``--input-shape 1,3,224,224`` -> (1, 3, 224, 224), checked as ``check_input_shape`` does."""
    if ";" in text or " " in text.strip():
        raise EdgekitError(f"--input-shape {text!r}: one N,C,H,W per option; a model of several inputs takes "
                           "--input-shape once per input, in forward()'s order")
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise EdgekitError(f"--input-shape {text!r} is not N,C,H,W whole numbers, e.g. 1,3,224,224") from None
    return check_input_shape(shape, f"--input-shape {text!r}")


def parse_input_shapes(texts: list[str]) -> tuple[int, int, int, int] | list[tuple[int, int, int, int]]:
    """The repeated ``--input-shape`` option: one shape for a one-input model (the zoo's path), else a list, one
    per forward() argument in order."""
    shapes = [parse_input_shape(text) for text in texts]
    return shapes[0] if len(shapes) == 1 else shapes


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


def prepare_custom(model: nn.Module, input_shape: tuple[int, ...] | list[tuple[int, ...]],
                   preprocessing: Preprocessing | None, name: str | None = None, source: str = "nn.Module",
                   labels: tuple[str, ...] | None = None, task: str | list[str] | None = None) -> nn.Module:
    """``model`` in eval mode with an ``edgekit_config``: checked to accept ``input_shape`` and to return one
    tensor of class scores [N, K], per-pixel scores [N, K, H, W] or an embedding [N, D]. ``task`` (classifier,
    dense, embedding) decides how parity compares outputs; by default 4-D outputs are masks, 2-D class scores.

    A list of shapes (one per forward() argument) or an output that is a tuple of such tensors makes a model of
    several inputs or outputs: it also gets an ``edgekit_io`` (``ModelIO``), and ``task`` is one per output
    (a list, or comma-separated)."""
    if not isinstance(model, nn.Module):
        raise EdgekitError(f"edgekit.export needs a torch.nn.Module, got {type(model).__name__}")
    shapes = [tuple(s) for s in input_shape] if input_shape and not isinstance(input_shape[0], int) \
        else [tuple(input_shape)]
    if len(shapes) > 1 and len(set(shapes)) > 1:
        raise EdgekitError(f"input shapes {' and '.join(','.join(map(str, s)) for s in shapes)} differ: edgekit "
                           "feeds every input the same kind of picture, so give every input the same N,C,H,W")
    _, channels, height, _ = shapes[0]
    if preprocessing is None:
        raise EdgekitError("declare how pictures become the model's input: --preprocessing imagenet|tf|none, or "
                           "--mean R G B --std R G B (edgekit does not guess a model's normalisation)")
    preprocessing = _with_channels(preprocessing, channels)
    model.eval()
    names = _argument_names(model, len(shapes), source)
    try:
        with torch.no_grad():
            output = model(*(torch.zeros(shape) for shape in shapes))
    except Exception as e:
        given = " and ".join(",".join(map(str, shape)) for shape in shapes)
        raise EdgekitError(f"{source} rejects input shape{'s' * (len(shapes) > 1)} {given}: {one_line(e)}; pass "
                           "the shape it takes with --input-shape N,C,H,W") from None
    several = len(shapes) > 1 or isinstance(output, (tuple, list))  # a model of several inputs or outputs
    kinds, labelled, classes = _output_kinds(output, shapes[0], source, labels, task, several)
    model.edgekit_config = _config(model, name, height, classes, preprocessing, source, labels)
    if several:
        names = names if len(names) > 1 else ("image",)  # one input: the name every edgekit file gives it
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        outputs = ("logits",) if len(kinds) == 1 else tuple(f"output_{k}" for k in range(len(kinds)))
        model.edgekit_io = ModelIO(names, shapes[0], outputs, tuple(tuple(int(d) for d in t.shape) for t in tensors),
                                   tuple(kinds))
        model.edgekit_task = kinds[labelled]
    elif task is not None:
        model.edgekit_task = kinds[0]
    return model


def _output_kinds(output, input_shape: tuple[int, ...], source: str, labels: tuple[str, ...] | None,
                  task: str | list[str] | None, several: bool) -> tuple[list[str], int, int]:
    """Each output checked (a tensor of 2 or 4 dims, batch first, a task that fits its shape): the task of each,
    which output labels.txt names (the first classifier output, else the first) and its class count. ``several``
    (a model of several inputs or outputs) words the errors for one output among several."""
    tensors = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        kinds = ", ".join(type(t).__name__ for t in tensors) or "nothing" if isinstance(output, (tuple, list)) \
            else type(output).__name__
        raise EdgekitError(f"{source} returns {kinds}, not a tensor or a tuple of tensors; "
                           + ("return the outputs as a tuple of tensors, in a fixed order" if several else
                              "return the tensor the app reads (several outputs: a tuple, in a fixed order)"))
    tasks = task.split(",") if isinstance(task, str) else list(task) if task is not None else None
    if tasks is not None and len(tasks) != len(tensors):
        raise EdgekitError(f"--task {','.join(tasks)} names {len(tasks)} tasks, but {source} returns one tensor; give "
                           "one task" if not several else
                           f"--task names {len(tasks)} task{'s' * (len(tasks) != 1)} for {len(tensors)} outputs; "
                           "give one per output, comma-separated (e.g. classifier,embedding)")
    kinds = []
    for k, tensor in enumerate(tensors):
        which = f" at output {k}" if len(tensors) > 1 else ""
        _check_output(tensor, input_shape, source, which)
        values = int(tensor.shape[1])
        if values > MAX_CLASSES:
            what = f"{source}'s output {k} has {values:,} values per input" if several else \
                f"{source} has {values:,} outputs"
            raise EdgekitError(f"{what}, more than edgekit's {MAX_CLASSES:,}")
        declared = None if tasks is None else tasks[k].strip() if several else tasks[k]
        _check_task(declared, tensor, which)
        kinds.append(declared or ("dense" if tensor.dim() == 4 else "classifier"))
    labelled = labelled_output(kinds)
    classes = int(tensors[labelled].shape[1])
    if labels is not None and len(labels) != classes:
        raise EdgekitError(f"{len(labels)} labels for the {classes} classes of output {labelled}; give one name per "
                           "class" if several else
                           f"{len(labels)} labels for {classes} outputs; give one name per output")
    return kinds, labelled, classes


def _check_output(output: torch.Tensor, input_shape: tuple[int, ...], source: str, which: str = "") -> None:
    if output.dim() not in (2, 4) or output.shape[0] != input_shape[0]:
        raise EdgekitError(f"{source} returns shape {list(output.shape)}{which} for input {list(input_shape)}: "
                           "edgekit exports [N, classes] scores, [N, dim] embeddings or [N, classes, H, W] masks")


def _check_task(task: str | None, output: torch.Tensor, which: str = "") -> None:
    if task is not None and task not in TASKS:
        raise EdgekitError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    if task is not None and (task == "dense") != (output.dim() == 4):
        raise EdgekitError(f"--task {task} does not fit the output shape {list(output.shape)}{which}: dense is for "
                           "[N, classes, H, W] masks, classifier and embedding for [N, K]")


def _config(model: nn.Module, name: str | None, height: int, outputs: int, preprocessing: Preprocessing,
            source: str, labels: tuple[str, ...] | None) -> ModelConfig:
    weights = WeightsInfo(requested=source, source="user", trained=True,
                          note="the weights the module holds; edgekit cannot tell whether they are trained")
    return ModelConfig(name=variant_name(name or type(model).__name__), family=CUSTOM_FAMILY, width=1.0,
                       resolution=int(height), num_classes=outputs, preprocessing=preprocessing, weights=weights,
                       labels=labels)


def _argument_names(model: nn.Module, count: int, source: str) -> tuple[str, ...]:
    """The names of forward()'s first ``count`` arguments (``input_K`` where it takes ``*args``); a count it cannot
    take is a one-line error naming the arguments it has."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a builtin or C++ forward: its arguments cannot be read
        return tuple(f"input_{k}" for k in range(count)) if count > 1 else ("image",)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    if count < len(required) or (count > len(positional) and not variadic):
        listed = ", ".join(p.name for p in positional) or "none"
        raise EdgekitError(f"{source}.forward takes {len(required)}"
                           f"{'' if len(required) == len(positional) else f'-{len(positional)}'} input"
                           f"{'s' * (len(positional) != 1)} ({listed}) but {count} input shape"
                           f"{'s were' if count != 1 else ' was'} given; give one shape per input, in forward()'s "
                           "order (--input-shape repeated, or a tuple of example inputs)")
    names = [p.name for p in positional[:count]]
    return tuple(names + [f"input_{k}" for k in range(len(names), count)])


def _with_channels(preprocessing: Preprocessing, channels: int) -> Preprocessing:
    return replace(preprocessing, channel_order="L" if channels == 1 else "RGB")
