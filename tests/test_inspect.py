"""Per-layer error localisation (edgekit.layerwise) and `edgekit inspect`, on a real int8 bundle.

The bundle is a real `edgekit export --int8` of Google's MobileNet v1 0.25/128 weights, made once per test
session (shared with test_eval_bundle.py). The decisive test breaks one layer of each int8 file on purpose and
expects that layer at the top of the table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.layerwise import compare_layers, module_path
from edgekit.quantize.calibration import CalibrationSet

pytestmark = pytest.mark.slow  # a real int8 export, per-layer comparisons

BROKEN_LAYER = "features.6.pw"  # a pointwise conv in the middle of the network


@pytest.fixture(scope="module")
def bundle(v1_int8_bundle) -> Path:
    """The session's int8 bundle (conftest.v1_int8_bundle, shared with test_eval_bundle.py): MobileNet v1
    0.25/128 with Google's weights, int8 calibrated on the shared photos, which are also its parity photos.
    Whatever the parity verdict (exit 1), as long as every step ran and the bundle was written."""
    assert v1_int8_bundle["code"] in (0, 1), v1_int8_bundle["stdout"] + v1_int8_bundle["stderr"]
    return v1_int8_bundle["bundle"]


@pytest.fixture(scope="module")
def images(shared_data, bundle) -> np.ndarray:
    from edgekit.manifest import Manifest
    from edgekit.types import Preprocessing

    manifest = Manifest.read(bundle)
    files = sorted((shared_data / "imagenet-samples" / "images").iterdir())[::50]
    return CalibrationSet.from_files(files, Preprocessing.from_dict(manifest.preprocessing), 128).nchw


def _files(bundle: Path, fmt: str) -> tuple[Path, Path]:
    int8 = next(bundle.glob(f"*_int8.{fmt}"))
    return int8, int8.with_name(int8.name.replace("_int8", ""))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_report_covers_the_network_in_order(bundle, images, fmt):
    int8, fp32 = _files(bundle, fmt)
    report = compare_layers(int8, fp32, images)
    assert report.samples == len(images) == 5
    assert report.layers[0].layer == "input" and report.layers[0].sqnr_db > 40
    names = [e.layer for e in report.layers]
    # every conv block's output, by its PyTorch module path, in execution order
    blocks = [f"features.{i}.pw.2" for i in range(1, 14)]
    assert [n for n in names if n in blocks] == blocks
    assert 0.95 < report.output.cosine <= 1.0 and report.output.sqnr_db > 12
    worst = report.worst(5)
    assert [e.loss_db for e in worst] == sorted((e.loss_db for e in worst), reverse=True)


def test_onnx_and_tflite_name_layers_alike(bundle, images):
    onnx_layers = {e.layer for e in compare_layers(*_files(bundle, "onnx"), images).layers}
    tflite_layers = {e.layer for e in compare_layers(*_files(bundle, "tflite"), images).layers}
    shared = onnx_layers & tflite_layers
    assert len(shared) >= 27 and {"features.0.2", "features.13.pw.2"} <= shared


def _break_tflite_layer(source: Path, target: Path, layer: str) -> None:
    """Shuffle the int8 weights of ``layer``'s convolution: same range, wrong values."""
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)
    graph = model.subgraphs[0]
    for op in graph.operators:
        out_name = graph.tensors[op.outputs[0]].name.decode()
        if (module_path(out_name) or "").startswith(layer):
            weight = graph.tensors[op.inputs[1]]
            data = np.array(model.buffers[weight.buffer].data, dtype=np.uint8).view(np.int8).reshape(weight.shape)
            model.buffers[weight.buffer].data = np.random.default_rng(0).permutation(data.ravel()).view(np.uint8)
            break
    else:
        raise AssertionError(f"no op for {layer}")
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))


def _break_onnx_layer(source: Path, target: Path, layer: str) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and (module_path(n.name) or "").startswith(layer))
    weight = inits[producers[conv.input[1]].input[0]]
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(np.random.default_rng(0).permutation(values.ravel()).reshape(values.shape),
                                            weight.name))
    onnx.save(model, str(target))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_broken_layer_tops_the_table(bundle, images, tmp_path, fmt):
    int8, fp32 = _files(bundle, fmt)
    broken = tmp_path / int8.name
    (_break_onnx_layer if fmt == "onnx" else _break_tflite_layer)(int8, broken, BROKEN_LAYER)
    healthy = compare_layers(int8, fp32, images)
    report = compare_layers(broken, fp32, images)
    top = report.worst(1)[0]
    assert top.layer.startswith(BROKEN_LAYER), [(e.layer, e.loss_db) for e in report.worst(3)]
    assert top.loss_db > 15 and top.loss_db > max(e.loss_db for e in healthy.worst(3)) + 5
    # layers before the broken one are untouched
    before = {e.layer: e.sqnr_db for e in healthy.layers if e.layer.startswith(("features.1.", "features.2."))}
    after = {e.layer: e.sqnr_db for e in report.layers if e.layer in before}
    assert before and after == pytest.approx(before)


def test_inspect_command_on_a_bundle(bundle, capsys, tmp_path):
    out_json = tmp_path / "layers.json"
    assert main(["inspect", str(bundle), "--top", "4", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("layers that lose most") == 2
    assert "_int8.onnx vs" in printed and "_int8.tflite vs" in printed
    assert "fully integer: yes" in printed
    data = json.loads(out_json.read_text())
    assert {d["format"] for d in data} == {"onnx", "tflite"}
    assert all(len(d["worst"]) == 4 and d["layers_compared"] > 25 for d in data)
    assert all(d["samples"] == 8 for d in data)  # --samples default, from the bundle's 9 real parity photos


def test_inspect_command_on_a_file_with_all_layers(bundle, capsys, shared_data):
    int8, _ = _files(bundle, "tflite")
    assert main(["inspect", str(int8), "--all", "--images", str(shared_data / "photos"), "--samples", "3"]) == 0
    printed = capsys.readouterr().out
    assert "every compared activation" in printed and "on 3 images" in printed
    assert "features.13.pw.2" in printed and "input" in printed


def test_inspect_errors_are_one_line(bundle, tmp_path, capsys):
    int8, fp32 = _files(bundle, "tflite")
    lonely = tmp_path / "lonely_int8.tflite"
    shutil.copy(int8, lonely)
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(lonely)], "--fp32"),
        ([str(fp32)], "--fp32"),  # an fp32 file: nothing to compare it with
        ([str(tmp_path)], "manifest.json"),  # a folder that is no bundle
        ([str(int8), "--fp32", str(next(bundle.glob("*_int8.onnx")).with_name(int8.name.replace("_int8.tflite", ".onnx")))],
         "different formats"),
    ]
    for argv, fragment in cases:
        assert main(["inspect", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("edgekit: error:") and fragment in err, (argv, err)


def test_inspect_json_to_stdout_is_json_alone(bundle, capsys):
    assert main(["inspect", str(bundle), "--json", "-"]) == 0
    captured = capsys.readouterr()
    reports = json.loads(captured.out)
    assert len(reports) == 2 and "layers that lose most" in captured.err
