"""Test material shared by the device tests: small real models and bundles written the way export writes them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

VENV_PYTHON = sys.executable


def export_small_onnx(path: Path) -> Path:
    """A real edgekit model (MobileNetV2 0.35 at 96 px) through torch.onnx's legacy exporter (about 2 s)."""
    import torch

    import edgekit

    model = edgekit.create_model("mobilenet_v2", width=0.35, resolution=96, num_classes=10, weights="random")
    torch.onnx.export(model, (torch.randn(1, 3, 96, 96),), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], opset_version=17)
    return path


def int8_input_onnx(path: Path) -> Path:
    """A tiny graph with an int8 input and a symbolic batch dimension, built node by node."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("Relu", ["xf"], ["y"])],
        "int8_input", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_bundle(folder: Path, files: dict[str, tuple[Path, str]]) -> Path:
    """A bundle folder as export writes it: each name -> (source file, precision), and its manifest.json."""
    from edgekit.manifest import Artifact, Manifest

    folder.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for name, (source, precision) in files.items():
        shutil.copyfile(source, folder / name)
        artifacts.append(Artifact.describe(folder, name, Path(name).suffix[1:], precision))
    Manifest(model={"variant": folder.name}, preprocessing={}, options={}, artifacts=artifacts).write(folder)
    return folder


def python_without_runtimes(folder: Path, with_numpy: bool = True) -> Path:
    """A Python with numpy (or not) but neither LiteRT nor ONNX Runtime: the venv's interpreter, no site-packages."""
    import numpy

    name = "python-no-runtime" if with_numpy else "python-no-numpy"
    site = folder / f"site-{name}"
    site.mkdir(parents=True)
    numpy_dir = Path(numpy.__file__).parent
    for package in ("numpy", "numpy.libs") if with_numpy else ():
        if (numpy_dir.parent / package).exists():
            (site / package).symlink_to(numpy_dir.parent / package)
    wrapper = folder / name
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {VENV_PYTHON} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
