"""The format registry and the back-end interface: one list of formats and options, a pipeline that names no
format, imports that flow one way, torch-free bench and eval of files, and ExecuTorch (.pte) as a third format
through the interface alone."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import formats
from edgekit.cli import build_parser, main
from edgekit.exporters.backend import backend_for
from edgekit.runtimes import runner_class

from conftest import REPO, V1_SMALL, V1_SMALL_VARIANT

HAS_EXECUTORCH = formats.FORMATS["pte"].missing() is None


def test_every_registered_format_has_a_backend_and_a_runner():
    assert formats.DEFAULT_FORMATS == ("onnx", "tflite")
    assert len(set(formats.SUFFIXES)) == len(formats.FORMATS)
    for name, fmt in formats.FORMATS.items():
        assert backend_for(name).format is fmt
        assert runner_class(f"model{fmt.suffix}") is not None
        assert formats.format_of(f"a/b/model{fmt.suffix.upper()}") is fmt


def test_argparse_offers_the_registry_option_lists():
    parser = build_parser()
    export = parser._subparsers._group_actions[0].choices["export"]
    choices = {a.dest: a.choices for a in export._actions if a.choices}
    assert tuple(choices["calib_method"]) == formats.CALIBRATION_METHODS
    assert tuple(choices["io_dtype"]) == formats.IO_DTYPES
    assert tuple(choices["onnx_exporter"]) == formats.ONNX_EXPORTERS
    bench = parser._subparsers._group_actions[0].choices["bench"]
    runtime = next(a for a in bench._actions if a.dest == "runtime")
    assert set(runtime.choices) == {f.runtime for f in formats.FORMATS.values()}


def test_the_pipeline_names_no_format():
    source = (REPO / "edgekit" / "pipeline.py").read_text()
    for name in formats.FORMAT_NAMES:
        named = [line for line in source.splitlines() if re.search(rf"\b{name}\b", line, re.IGNORECASE)]
        assert not named, f"pipeline.py names the {name} format: {named}"


# Core modules, then the layers above them: a module imports only from its own layer or below.
LAYERS = [
    ("errors", "allocator", "console", "capture", "fileio", "cpu", "table", "formats", "types", "images", "tflite_model",
     "runtimes", "parity", "manifest", "labels", "sample_images", "layerwise", "tflite_metadata", "snippets",
     "devices.runner"),  # imports no edgekit module (it is copied alone to boards): a leaf any layer may use
    ("models",),
    ("exporters", "quantize"),
    ("pipeline", "report", "export_spec", "evaluate", "bundle_eval", "devices", "emulate"),
    ("commands", "cli", "api"),
]
OWN_MODULES = ["pipeline.py", "report.py", "manifest.py", "runtimes.py", "types.py", "formats.py", "export_spec.py",
               "commands/export.py", "commands/validate.py", "commands/eval.py", "commands/bench.py",
               "commands/inspect.py", "commands/common.py", "models/download.py", "models/tflite_import.py",
               "models/custom.py", "api.py"]


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if module in names or top in names)


def _edgekit_imports(path: Path, package: list[str]) -> list[tuple[str, int, bool]]:
    """(imported edgekit module, line, at the top of the file) for each import of an edgekit module."""
    found = []
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[1:len(package) - node.level]  # the importing module's package, then its parents
            names = [".".join(base + [node.module])] if node.module else \
                [".".join(base + [a.name]) for a in node.names if not a.name.startswith("__")]
            for name in names:
                found.append((name, node.lineno, id(node) in top_level))
    return found


@pytest.mark.parametrize("relative", OWN_MODULES + ["exporters/backend.py", "exporters/onnx.py",
                                                    "exporters/tflite.py", "exporters/pte.py",
                                                    "exporters/locate.py"])
def test_imports_flow_one_way_and_sit_at_the_top(relative):
    path = (REPO / "exporters" / relative.split("/", 1)[1]) if relative.startswith("exporters/") else \
        REPO / "edgekit" / relative
    package = ["edgekit"] + relative.removesuffix(".py").split("/")
    own = _layer(".".join(package[1:]))
    for module, line, at_top in _edgekit_imports(path, package):
        if not module:
            continue
        assert _layer(module) <= own, f"{relative}:{line} imports {module}, a layer above it"
        # edgekit.models defines torch modules: the one own import deferred, so torch-free commands stay torch-free
        assert at_top or module.startswith("models"), f"{relative}:{line} imports {module} inside a function"


def _cli_without_torch(*argv: str) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom edgekit.cli import main\nrc = main(sys.argv[1:])\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fp32_bundle(v1_fp32_bundle) -> Path:
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stdout"] + v1_fp32_bundle["stderr"]
    return v1_fp32_bundle["bundle"]


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_bench_and_eval_of_a_file_never_import_torch(fp32_bundle, shared_data, suffix):
    model = fp32_bundle / f"{V1_SMALL_VARIANT}{suffix}"
    bench = _cli_without_torch("bench", str(model), "--runs", "3", "--warmup", "1", "--threads", "1", "--no-chart")
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert bench.stdout.strip().splitlines()[-1] == "NO_TORCH"
    evaluated = _cli_without_torch("eval", str(model), "--data", str(shared_data / "imagenet-samples" / "labels.csv"),
                                   "--limit", "4", "--allow-chance")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert evaluated.stdout.strip().splitlines()[-1] == "NO_TORCH"


def test_pte_without_the_extra_is_one_line_with_the_pip_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(formats.importlib.util, "find_spec", lambda name: None)
    code = main(["export", "mobilenet_v1", "--weights", "random", "--formats", "onnx,pte", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "pip install 'edgekit[executorch]'" in err and "executorch" in err
    assert not any(tmp_path.iterdir())  # refused before any work


def test_unknown_format_lists_the_registered_ones(capsys, tmp_path):
    assert main(["export", "mobilenet_v1", "--formats", "onnx,coreml", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'coreml'" in err and "onnx, tflite, pte" in err


@pytest.fixture(scope="session")
def pte_bundle(shared_data, tmp_path_factory) -> dict:
    """Google's MobileNet v1 0.25/128, fp32 and int8 ExecuTorch programs only, int8 calibrated on the shared
    everyday photos, parity on 6 ImageNet photos (which it is gated on) and 2 random inputs."""
    from conftest import _run_cli

    out = tmp_path_factory.mktemp("exports_pte")
    result = _run_cli(["export", "mobilenet_v1", "--weights", str(shared_data / "tflite" / V1_SMALL), "--formats",
                       "pte", "--int8", "--calib", str(shared_data / "photos"), "--out", str(out),
                       "--data", str(shared_data / "imagenet-samples" / "images"), "--parity-samples", "6",
                       "--parity-random", "2", "--latency-runs", "0"])
    return result | {"out": out, "bundle": out / V1_SMALL_VARIANT}


@pytest.mark.slow
@pytest.mark.skipif(not HAS_EXECUTORCH, reason="the edgekit[executorch] extra is not installed")
def test_pte_bundle_exports_with_parity_and_validates(pte_bundle):
    assert pte_bundle["code"] == 0, pte_bundle["stdout"] + pte_bundle["stderr"]
    bundle = pte_bundle["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {a["path"]: a for a in manifest["artifacts"]}
    assert set(files) == {f"{V1_SMALL_VARIANT}.pte", f"{V1_SMALL_VARIANT}_int8.pte"}
    parity = {p["artifact"]: p for p in manifest["parity"]}
    assert parity[f"{V1_SMALL_VARIANT}.pte"]["metrics"]["cosine_min"] > 0.9999
    assert all(p["failures"] == [] for p in parity.values())
    int8 = files[f"{V1_SMALL_VARIANT}_int8.pte"]
    assert int8["bytes"] < files[f"{V1_SMALL_VARIANT}.pte"]["bytes"] / 2  # int8 weights
    delegation = int8["details"]["delegation"]
    assert delegation["share_delegated"] > 0.9 and delegation["operators_delegated"] > 50
    # Google's weights keep their int8 levels, as in the ONNX and TFLite files (quantize/weight_grid.py)
    grid = int8["details"]["weights_on_source_grid"]
    assert grid["layers"] == 28 and grid["channels_on_grid"] >= 0.9 * grid["channels"], grid
    assert parity[f"{V1_SMALL_VARIANT}_int8.pte"]["metrics"]["cosine_mean"] >= 0.99
    # the same metadata every format carries, read back from the program
    meta = backend_for("pte").read_metadata(bundle / f"{V1_SMALL_VARIANT}_int8.pte")
    assert meta["variant"] == V1_SMALL_VARIANT and meta["precision"] == "int8" and len(meta["labels"]) == 1000
    validated = subprocess.run([sys.executable, "-m", "edgekit.cli", "validate", str(bundle)], capture_output=True,
                               text=True, timeout=600)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert f"{V1_SMALL_VARIANT}_int8.pte" in validated.stdout


@pytest.mark.slow  # importing ExecuTorch's compiler: seconds
@pytest.mark.skipif(not HAS_EXECUTORCH, reason="the edgekit[executorch] extra is not installed")
def test_lowering_skips_only_the_xnnpack_patterns_a_program_cannot_match():
    """Building XNNPACK's bilinear and attention patterns is ~10 s of the first lowering in a process; a program
    holding the operator a pattern is made of keeps it, and so does one whose operators are not all known."""
    import inspect

    import torch
    from executorch.backends.xnnpack._passes.convert_to_sdpa import ConvertToSDPAPass
    from executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d import ConvertToUpsampleBilinear2d
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa

    from edgekit.exporters import pte

    # the passes look the builders up on their modules at each call: what the lowering replaces is what they use
    assert "bilinear_2d.get_graphs_dict()" in inspect.getsource(ConvertToUpsampleBilinear2d.call)
    assert "sdpa.get_graphs()" in inspect.getsource(ConvertToSDPAPass.call)
    builders = (bilinear_2d.get_graphs_dict, sdpa.get_graphs)

    class Net(torch.nn.Module):
        def __init__(self, tail):
            super().__init__()
            self.conv, self.tail = torch.nn.Conv2d(3, 4, 3), tail

        def forward(self, x):
            return self.tail(torch.relu(self.conv(x)))

    def kept(tail) -> tuple[bool, bool]:
        program = torch.export.export(Net(tail).eval(), (torch.zeros(1, 3, 8, 8),))
        with pte._without_unmatchable_patterns(program):
            return bilinear_2d.get_graphs_dict is builders[0], sdpa.get_graphs is builders[1]

    assert kept(torch.nn.Identity()) == (False, False)
    assert kept(torch.nn.Upsample(scale_factor=2, mode="bilinear")) == (True, False)
    assert kept(torch.nn.Softmax(dim=1)) == (False, True)
    assert kept(lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x)) == (False, True)
    assert kept(lambda x: torch.cond(x.sum() > 0, torch.sin, torch.cos, (x,))) == (True, True)  # not known: kept
    assert (bilinear_2d.get_graphs_dict, sdpa.get_graphs) == builders  # and given back afterwards


_RUN_PTE_THEN_COMPILE = """
import sys
import numpy as np
from edgekit.runtimes import open_runtime
run = open_runtime(sys.argv[1], threads=1)
(logits,) = run(np.zeros((1, 3, 128, 128), np.float32))
print(logits.size, "executorch.exir" in sys.modules, "executorch.exir._warnings" in sys.modules)
from executorch.exir import _warnings, to_edge_transform_and_lower  # the real compiler, whole, afterwards
print(callable(to_edge_transform_and_lower), _warnings.ExperimentalWarning.__name__)
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_EXECUTORCH, reason="the edgekit[executorch] extra is not installed")
def test_running_a_pte_does_not_import_the_compiler_and_the_compiler_still_imports_after(pte_bundle):
    """ExecuTorch's runtime bindings would import the whole compiler package (5 of 7 s of imports) for one
    warning class: validate, eval and each bench process only run programs."""
    assert pte_bundle["code"] == 0, pte_bundle["stdout"] + pte_bundle["stderr"]
    done = subprocess.run([sys.executable, "-c", _RUN_PTE_THEN_COMPILE,
                           str(pte_bundle["bundle"] / f"{V1_SMALL_VARIANT}_int8.pte")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["1000 False False", "True ExperimentalWarning"], done.stdout

@pytest.mark.slow
@pytest.mark.skipif(not HAS_EXECUTORCH, reason="the edgekit[executorch] extra is not installed")
def test_pte_bundle_benches_and_evaluates(pte_bundle, shared_data, tmp_path, capsys):
    assert pte_bundle["code"] == 0, pte_bundle["stdout"] + pte_bundle["stderr"]
    bundle = pte_bundle["bundle"]
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle), "--runs", "5", "--warmup", "1", "--threads", "1", "--json", str(out),
                 "--no-chart"]) == 0
    results = json.loads(out.read_text())["results"]
    assert {r["artifact"] for r in results} == {f"{V1_SMALL_VARIANT}.pte", f"{V1_SMALL_VARIANT}_int8.pte"}
    assert all(r["runtime"] == "executorch" and len(r["samples_ms"]) == 5 and not r["error"] for r in results)
    capsys.readouterr()
    data = tmp_path / "eval.json"
    assert main(["eval", str(bundle), "--data", str(shared_data / "imagenet-samples" / "labels.csv"), "--limit", "8",
                 "--pytorch", "skip", "--json", str(data)]) in (0, 1)
    targets = {t["name"]: t for t in json.loads(data.read_text())["targets"]}
    assert f"{V1_SMALL_VARIANT}_int8.pte" in targets and targets[f"{V1_SMALL_VARIANT}_int8.pte"]["images"] == 8
