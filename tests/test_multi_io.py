"""Models of several inputs or outputs through the whole pipeline: `edgekit export FILE.py:NAME --input-shape ...
--input-shape ...` and `edgekit.export(model, (x1, x2), ...)`, each output gated on its own task, on real runtimes
and real files. Quality is judged on trained weights (Google's MobileNet v1 0.25/128, imported from its .tflite):
a Siamese pair model: two pictures -> the class scores of the first and an embedding of each (one int8 export
covers several inputs and several outputs of two tasks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pair_models import load_models, write_models
from torch import nn

import edgekit
from edgekit.cli import main
from edgekit.manifest import Reference
from edgekit.runtimes import open_runtime
from edgekit.tflite_metadata import read_standard_metadata
from edgekit.tflite_model import TFLiteModel

V1_SMALL = "mobilenet_v1_0.25_128_quant.tflite"

SMALL = ["--input-shape", "1,3,32,32"]


@pytest.fixture(scope="module")
def model_file(shared_data, tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("multi_io_models"), shared_data / "tflite" / V1_SMALL)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("target,shapes,extra,message", [
    ("TinyPair", SMALL, [], "forward takes 2 inputs (left, right) but 1 input shape was given"),
    ("OneInput", SMALL * 2, [], "forward takes 1 input (x) but 2 input shapes were given"),
    ("TinyPair", ["--input-shape", "1,3,32,32", "--input-shape", "1,3,64,64"], [], "differ"),
    ("Flat", SMALL * 2, [], "rejects input shapes 1,3,32,32 and 1,3,32,32"),
    ("ReturnsDict", SMALL * 2, [], "returns dict, not a tensor or a tuple of tensors"),
    ("TinyPair", SMALL * 2, ["--task", "classifier"], "--task names 1 task for 2 outputs"),
    ("TinyPair", SMALL * 2, ["--task", "classifier,dense"], "does not fit the output shape [1, 8] at output 1"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(model_file, tmp_path, capsys, target, shapes, extra,
                                                         message):
    out = tmp_path / "out"
    code, text = _cli(["export", f"{model_file}:{target}", *shapes, "--preprocessing", "tf", "--out", str(out),
                       "--latency-runs", "0", *extra], capsys)
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 1 and message in errors[0], text
    assert "Traceback" not in text
    assert not out.exists() or not any(out.iterdir())


def test_the_python_api_takes_a_tuple_of_inputs_and_refuses_what_is_not_one():
    with pytest.raises(edgekit.errors.EdgekitError, match="tuple of tensors"):
        edgekit.export(nn.Identity(), (torch.zeros(1, 3, 8, 8), "right.jpg"), preprocessing="none")
    with pytest.raises(edgekit.errors.EdgekitError, match=r"example_inputs\[1\]'s shape: 4 channels"):
        edgekit.export(nn.Identity(), (torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 8, 8)), preprocessing="none")


def test_a_pair_model_in_fp32_onnx_names_feeds_and_gates_every_input_and_output(model_file, tmp_path, capsys,
                                                                               shared_data):
    """Random weights, fp32 only: the plumbing (names, order, one parity row per output, validate, eval's refusal)."""
    code, text = _cli(["export", f"{model_file}:TinyPair", *SMALL, *SMALL, "--preprocessing", "imagenet",
                       "--formats", "onnx", "--task", "classifier,embedding", "--out", str(tmp_path),
                       "--data", str(shared_data / "photos"), "--parity-samples", "6", "--latency-runs", "0"], capsys)
    assert code == 0, text
    bundle = tmp_path / "tiny_pair"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [i["name"] for i in manifest["model"]["inputs"]] == ["left", "right"]
    assert [(o["name"], o["shape"], o["task"]["kind"]) for o in manifest["model"]["outputs"]] == [
        ("output_0", [1, 4], "classifier"), ("output_1", [1, 8], "embedding")]
    (artifact,) = manifest["artifacts"]
    assert [t["name"] for t in artifact["inputs"]] == ["left", "right"]
    assert [t["name"] for t in artifact["outputs"]] == ["output_0", "output_1"]
    assert [(p["output"], p["passed"]) for p in manifest["parity"]] == [("output_0", True), ("output_1", True)]
    # input K of a sample is another picture than input 0, so the pair's outputs differ from one picture's twice
    reference = Reference.read(bundle, None)
    assert len(reference.all_inputs) == 2 and not np.array_equal(reference.all_inputs[0], reference.all_inputs[1])
    assert all("+" in source for source in reference.sources)
    assert main(["validate", str(bundle)]) == 0
    code, text = _cli(["eval", str(bundle), "--data", str(shared_data / "imagenet-samples")], capsys)
    assert code == 2 and "check it with `edgekit validate" in text and "Traceback" not in text, text
    code, text = _cli(["inspect", str(bundle)], capsys)
    assert code == 2 and "holds no int8 file" in text and "Traceback" not in text, text


@pytest.mark.slow  # one ExecuTorch export, fp32 and int8 (~15 s of it importing executorch once per process)
def test_a_pair_model_in_pte_fp32_and_int8_names_feeds_and_gates_every_input_and_output(model_file, tmp_path, capsys,
                                                                                      shared_data):
    """Random weights: the plumbing of the .pte files (int8 on random weights is not gated; its quality on trained
    weights is checked for the ONNX and TFLite files above)."""
    code, text = _cli(["export", f"{model_file}:TinyPair", *SMALL, *SMALL, "--preprocessing", "imagenet",
                       "--formats", "pte", "--int8", "--calib", str(shared_data / "photos"), "--task",
                       "classifier,embedding", "--out", str(tmp_path), "--data", str(shared_data / "photos"),
                       "--parity-samples", "6", "--latency-runs", "0"], capsys)
    assert code == 0, text
    bundle = tmp_path / "tiny_pair"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [a["path"] for a in manifest["artifacts"]] == ["tiny_pair.pte", "tiny_pair_int8.pte"]
    for artifact in manifest["artifacts"]:
        assert [(t["name"], t["shape"]) for t in artifact["inputs"]] == [("left", [1, 3, 32, 32]),
                                                                         ("right", [1, 3, 32, 32])]
        assert [t["name"] for t in artifact["outputs"]] == ["output_0", "output_1"]
    # the one backbone both pictures go through is copied per use for XNNPACK's int8 compiler
    assert manifest["artifacts"][1]["details"]["shared_weights_untied"] == 2
    assert [(p["artifact"], p["output"]) for p in manifest["parity"]] == [
        ("tiny_pair.pte", "output_0"), ("tiny_pair.pte", "output_1"),
        ("tiny_pair_int8.pte", "output_0"), ("tiny_pair_int8.pte", "output_1")]
    assert all(p["passed"] for p in manifest["parity"] if p["artifact"] == "tiny_pair.pte")
    # the order is proven, not assumed: the fp32 program fed the pair the other way round misses the reference
    reference = Reference.read(bundle, None)
    runner = open_runtime(bundle / "tiny_pair.pte")
    right_way, swapped = runner.run(reference.all_inputs), runner.run(reference.all_inputs[::-1])
    for found, expected in zip(right_way, reference.all_outputs):
        assert np.allclose(found, expected.reshape(len(found), -1), atol=1e-5)
    assert not np.allclose(swapped[0], reference.all_outputs[0].reshape(len(swapped[0]), -1), atol=1e-3)
    assert main(["validate", str(bundle)]) == 0
    assert main(["bench", str(bundle / "tiny_pair_int8.pte"), "--runs", "3", "--json",
                 str(tmp_path / "bench.json")]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    # the runner reads the names from the program's edgekit metadata: a .pte keeps none of its own
    assert [(i["name"], i["shape"]) for i in bench["results"][0]["extra"]["inputs"]] == [
        ("left", [1, 3, 32, 32]), ("right", [1, 3, 32, 32])], bench["results"][0]


@pytest.fixture(scope="module")
def pair_bundle(model_file, shared_data, tmp_path_factory) -> dict:
    """The Siamese pair through the Python API (a tuple of example inputs), int8 ONNX and TFLite, calibrated on
    ImageNet sample pictures. The command line's repeated --input-shape is checked on TinyPair above."""
    module = load_models(model_file)
    out = tmp_path_factory.mktemp("pair")
    manifest = edgekit.export(module.PairNet(), (torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128)),
                              preprocessing="tf", task=["classifier", "embedding", "embedding"], int8=True,
                              calib=shared_data / "imagenet-samples" / "images", out=out, latency_runs=0)
    return {"manifest": manifest, "bundle": out / "pair_net"}


def _figures(manifest: dict) -> dict:
    return {(p["artifact"], p["output"]): p["metrics"] for p in manifest["parity"]}


@pytest.mark.slow  # one int8 export of the pair model (~45 s on 2 shared cores), shared by the tests below
def test_a_pair_model_exports_int8_with_every_input_fed_in_order(pair_bundle):
    manifest = pair_bundle["manifest"]
    bundle = pair_bundle["bundle"]
    assert manifest.passed
    assert [(o["name"], o["task"]["kind"]) for o in manifest.model["outputs"]] == [
        ("output_0", "classifier"), ("output_1", "embedding"), ("output_2", "embedding")]
    recorded = json.loads((bundle / "manifest.json").read_text())
    assert len(recorded["parity"]) == 12  # 4 files x 3 outputs, each gated
    for (artifact, output), m in _figures(recorded).items():
        if output == "output_0":
            assert m["task"] == "classifier" and m["top1_agreement"] is not None
            if "int8" in artifact:  # trained weights: int8 class scores within the classifier gates
                assert m["top1_agreement"] >= 0.6 and m["psnr_db"] >= 32, (artifact, m)
        else:
            assert m["task"] == "embedding" and m["top1_agreement"] is None and m["decision_agreement"] is not None
            if "int8" in artifact:  # the int8 embeddings keep the pair decisions
                assert m["cosine_mean"] >= 0.975 and m["decision_agreement"] >= 0.85, (artifact, output, m)
    for name in ("pair_net.tflite", "pair_net_int8.tflite"):
        graph = TFLiteModel((bundle / name).read_bytes())
        assert "TRANSPOSE" not in graph.op_counts  # both image inputs NHWC, no layout shuffle
        assert [t.shape for t in graph.input_tensors()] == [(1, 128, 128, 3)] * 2
    int8 = next(a for a in recorded["artifacts"] if a["path"] == "pair_net_int8.tflite")
    assert int8["details"]["integer"]["fully_integer"]
    assert [t["name"] for t in int8["inputs"]] == ["left", "right"]
    # the order is proven, not assumed: the same file fed the pair the other way round misses the reference
    reference = Reference.read(bundle, None)
    runner = open_runtime(bundle / "pair_net.tflite")
    right_way = runner.run(reference.all_inputs)[0]
    swapped = runner.run(reference.all_inputs[::-1])[0]
    assert np.allclose(right_way, reference.outputs.reshape(len(right_way), -1), atol=1e-4)
    assert not np.allclose(swapped, reference.outputs.reshape(len(swapped), -1), atol=1e-2)


@pytest.mark.slow
def test_a_pair_bundle_validates_benches_both_inputs_and_says_why_there_is_no_snippet(pair_bundle, tmp_path,
                                                                                     capsys):
    bundle = pair_bundle["bundle"]
    assert main(["validate", str(bundle)]) == 0
    assert main(["bench", str(bundle / "pair_net_int8.tflite"), "--runs", "3", "--json",
                 str(tmp_path / "bench.json")]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [i["name"] for i in bench["results"][0]["extra"]["inputs"]] == ["left", "right"], bench["results"][0]
    # labels on the classifier output only
    standard = read_standard_metadata(bundle / "pair_net_int8.tflite")
    assert standard.labels_file == "labels.txt" and standard.labels[0] == "tench"
    report = (bundle / "report.md").read_text()
    assert "runForMultipleInputsOutputs" in report and "output_2" in report
    # a gate only the embeddings miss fails their rows and the file, and the class scores still pass
    capsys.readouterr()
    code = main(["validate", str(bundle), "--gate", "int8.decision_agreement=1.0", "--json", str(tmp_path / "v.json")])
    verdicts = {(p["artifact"], p["output"]): p["passed"]
                for p in json.loads((tmp_path / "v.json").read_text())[0]["parity"]}
    failed = {key for key, passed in verdicts.items() if not passed}
    assert code == 1 and failed and all(output != "output_0" and "int8" in artifact for artifact, output in failed)
    assert all(passed for (artifact, output), passed in verdicts.items() if output == "output_0")


@pytest.mark.slow
def test_a_pair_bundle_is_compared_layer_by_layer_with_both_inputs_fed(pair_bundle, shared_data, tmp_path, capsys):
    """The per-layer int8 error of a model of two inputs: at export (the manifest's layers) and with inspect, on the
    bundle's parity pictures and on --images (input K sees the pictures shifted by K, as in calibration)."""
    bundle = pair_bundle["bundle"]
    layers = {entry["artifact"]: entry for entry in json.loads((bundle / "manifest.json").read_text())["layers"]}
    assert set(layers) == {"pair_net_int8.onnx", "pair_net_int8.tflite"}
    for entry in layers.values():
        assert "error" not in entry and entry["samples"] >= 4, entry
        assert entry["worst"] and all(float(row["sqnr_db"]) > 10 for row in entry["worst"]), entry
    for images in ([], ["--images", str(shared_data / "photos"), "--samples", "4"]):
        report = tmp_path / f"inspect{len(images)}.json"
        code = main(["inspect", str(bundle), *images, "--all", "--json", str(report)])
        out = capsys.readouterr().out
        assert code == 0, out
        reports = json.loads(report.read_text())
        assert len(reports) == 2
        for r in reports:  # both inputs reach the comparison: each has its own row, and layers after both compare
            assert r["samples"] == (4 if images else layers[Path(r["artifact"]).name]["samples"]), r["samples"]
        assert "input left" in out and "input right" in out
