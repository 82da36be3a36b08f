"""Which block a converter cannot take. When a whole-model conversion fails, its exception names an operator at
best, never where it sits in the user's model. Each of the model's own blocks is then converted alone, on the
inputs it received in one forward pass, smallest first; the first that fails is named with its module path
(``features.3.lrn``) and the operator from the converter's message."""

from __future__ import annotations

import re
from typing import Callable

from ..capture import captured_output, one_line
from .common import first_inputs

# Leaf layers every converter edgekit uses takes (the zoo is built from them): never the culprit, so not tried.
_STANDARD_LAYERS = ("Conv2d", "ConvTranspose2d", "Linear", "BatchNorm2d", "ReLU", "ReLU6", "Hardswish", "Hardsigmoid",
                    "SiLU", "Sigmoid", "Tanh", "GELU", "LeakyReLU", "AvgPool2d", "MaxPool2d", "AdaptiveAvgPool2d",
                    "Flatten", "Dropout", "Identity", "Softmax", "Upsample", "Sequential", "ModuleList", "ModuleDict")
_OPERATOR = re.compile(r"aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?")


def locate_unconvertible(model, resolution: int, convert: Callable[[object, tuple], None],
                         limit: int = 60) -> str | None:
    """``"features.3.lrn (LocalResponseNorm): operator aten::... is not supported"`` for the smallest block of
    ``model`` that ``convert(block, inputs)`` raises on, or None when every block tried converts alone (the
    trouble is in the model's own forward) or the search cannot run. At most ``limit`` blocks are tried; it runs
    only after a failure."""
    import torch

    # edgekit's own blocks convert (the zoo's tests export them): only the user's blocks are suspects
    suspects = {name: module for name, module in model.named_modules()
                if name and type(module).__name__ not in _STANDARD_LAYERS
                and not type(module).__module__.startswith("edgekit.")}
    try:
        calls = first_inputs(model, suspects, resolution)
    except Exception:  # the forward pass itself fails: nothing to narrow down
        return None
    tried = [(name, suspects[name], args) for name, args in calls.items()
             if args and all(isinstance(a, torch.Tensor) for a in args)]
    tried.sort(key=lambda call: -call[0].count("."))  # deepest (smallest) first; execution order among equals
    for name, module, args in tried[:limit]:
        error = _conversion_error(convert, module, args)
        if error is not None:
            return f"{name} ({type(module).__name__}): {_operator(error)}"
    return None  # the model's own forward, or a block beyond the limit: the converter's message is all there is


def _conversion_error(convert, module, args) -> Exception | None:
    try:
        with captured_output():  # the converters print their own progress and failure banners
            convert(module, args)
    except Exception as e:  # any converter exception is the answer sought
        return e
    return None


def _operator(error: Exception) -> str:
    """The operator a converter's message names (``aten::linalg_inv``), else the message's first line."""
    match = _OPERATOR.search(str(error))
    if match:
        return f"operator {match.group(0).replace('aten.', 'aten::').removesuffix('.default')} is not supported"
    return one_line(error)
