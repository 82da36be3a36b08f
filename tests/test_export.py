"""`edgekit export` end to end on real weights (Google's MobileNet v2 imported, TF SAME padding) and real
photos: the bundle, the ONNX and TFLite graphs, the metadata, the manifest, the report and the parity figures.
One export per test session (shared with test_quantize.py), checked many ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.exporters import onnx as onnx_exporter
from edgekit.exporters import tflite as tflite_exporter
from edgekit.manifest import Manifest, sha256_file
from edgekit.tflite_model import TFLiteModel

pytestmark = pytest.mark.slow  # every test reads a real MobileNet v2 export (~20 s)

VARIANT = "mobilenet_v2"
FILES = {f"{VARIANT}.onnx", f"{VARIANT}.tflite", f"{VARIANT}_fp16.tflite", "labels.txt", "manifest.json",
         "report.md", "reference.npz"}


@pytest.fixture(scope="module")
def weights(v2_fp16_export) -> Path:
    return v2_fp16_export["weights"]


@pytest.fixture(scope="module")
def export(v2_fp16_export):
    """The session's one export (conftest.v2_fp16_export): `edgekit export mobilenet_v2 --weights FILE --fp16
    --data IMAGES --parity-samples 8`, host latency included; test_quantize.py reads its fp32 files."""
    return v2_fp16_export


@pytest.fixture(scope="module")
def manifest(export) -> Manifest:
    return Manifest.read(export["bundle"])


def test_export_succeeds_with_a_table_and_the_next_command(export):
    assert export["code"] == 0, export["stdout"] + export["stderr"]
    lines = export["stdout"].strip().splitlines()
    assert lines[0].split() == ["artifact", "precision", "size", "parity", "p50", "ms", "int8/fp32", "time"]
    for name in (f"{VARIANT}.onnx", f"{VARIANT}.tflite", f"{VARIANT}_fp16.tflite"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert " pass " in row
    assert lines[-1].startswith(f"next: edgekit validate {export['bundle']}")


def test_bundle_holds_exactly_the_finished_files(export):
    assert {p.name for p in export["bundle"].iterdir()} == FILES
    assert [p.name for p in export["out"].iterdir()] == [VARIANT]  # no staging folder, no temp file left


def test_onnx_graph(export, manifest):
    path = export["bundle"] / f"{VARIANT}.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "Dropout" not in ops and "Pad" not in ops  # folded, removed, fused
    assert sum(n.op_type == "Conv" for n in model.graph.node) == 52
    (image,), (logits,) = model.graph.input, model.graph.output
    assert image.name == "image" and logits.name == "logits"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]  # dynamic batch, NCHW
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    meta = onnx_exporter.read_metadata(path)
    assert meta["model"] == "mobilenet_v2"
    assert json.loads(meta["preprocessing"]) == manifest.preprocessing
    labels = (export["bundle"] / "labels.txt").read_text().splitlines()
    assert json.loads(meta["labels"]) == labels and len(labels) == 1000


def test_onnx_batch_is_dynamic(export):
    from edgekit.runtimes import open_runtime

    runtime = open_runtime(export["bundle"] / f"{VARIANT}.onnx")
    x = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    batched = runtime(x)
    single = np.concatenate([runtime(x[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 1000)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_tflite_graph_is_clean_nhwc(export):
    graph = TFLiteModel.from_file(export["bundle"] / f"{VARIANT}.tflite")
    (image,), (logits,) = graph.input_tensors(), graph.output_tensors()
    assert (image.name, image.shape, image.dtype) == ("image", (1, 224, 224, 3), "FLOAT32")
    assert (logits.name, logits.shape) == ("logits", (1, 1000))
    # BN folded, ReLU6 fused into the convolutions, TF SAME padding as the ops' own padding, no layout shuffles
    assert graph.op_counts == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1}
    assert graph.op_counts.get("TRANSPOSE", 0) == 0


def test_tflite_metadata_is_embedded_and_the_file_still_runs(export, manifest):
    from ai_edge_litert.interpreter import Interpreter

    for name in (f"{VARIANT}.tflite", f"{VARIANT}_fp16.tflite"):
        path = export["bundle"] / name
        meta = tflite_exporter.read_metadata(path)
        assert meta["model"] == "mobilenet_v2" and meta["variant"] == VARIANT
        assert meta["preprocessing"] == manifest.preprocessing
        assert len(meta["labels"]) == 1000 and meta["padding"] == "tf_same"
        interpreter = Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner()
        out = runner(image=np.zeros((1, 224, 224, 3), np.float32))
        assert out["logits"].shape == (1, 1000) and np.isfinite(out["logits"]).all()


def test_fp16_file_stores_half_precision_weights(export):
    fp32 = export["bundle"] / f"{VARIANT}.tflite"
    fp16 = export["bundle"] / f"{VARIANT}_fp16.tflite"
    graph = TFLiteModel.from_file(fp16)
    assert sum(t.dtype == "FLOAT16" for t in graph.tensors) >= 52  # every conv and the FC
    assert fp16.stat().st_size < 0.55 * fp32.stat().st_size
    assert graph.op_counts.get("TRANSPOSE", 0) == 0


def test_manifest_describes_model_weights_and_tools(manifest, weights):
    assert manifest.status == "complete" and manifest.passed
    assert manifest.model["name"] == "mobilenet_v2" and manifest.model["padding"] == "tf_same"
    assert manifest.weights["source"] == "tflite" and manifest.weights["sha256"] == sha256_file(weights)
    for package in ("edgekit", "torch", "onnx", "onnxruntime", "ai-edge-litert", "litert-torch", "ai-edge-quantizer"):
        assert manifest.versions[package], package
    pre = manifest.preprocessing
    assert pre["crop"] == 224 and pre["resize_shorter_side"] == 256
    assert pre["channel_order"] == "RGB" and len(pre["mean"]) == 3 and len(pre["value_range"]) == 2
    assert [s.name for s in manifest.steps] == ["model", "prepare", "reference", "onnx fp32", "tflite fp32",
                                                "tflite fp16", "parity", "latency"]
    assert all(s.status == "done" and s.seconds > 0 for s in manifest.steps)
    assert manifest.labels["count"] == 1000
    # every file timed on this machine; no int8 file, so no int8/fp32 ratio and no per-layer comparison
    assert [r["artifact"] for r in manifest.latency["results"]] == [a.path for a in manifest.artifacts]
    assert all(r["p50_ms"] > 0 for r in manifest.latency["results"])
    assert manifest.latency["int8_vs_fp32"] == [] and manifest.layers == []


def test_manifest_artifacts_match_the_files(export, manifest):
    assert [a.path for a in manifest.artifacts] == [f"{VARIANT}.onnx", f"{VARIANT}.tflite", f"{VARIANT}_fp16.tflite"]
    for artifact in manifest.artifacts:
        path = export["bundle"] / artifact.path
        assert artifact.bytes == path.stat().st_size
        assert artifact.sha256 == sha256_file(path)
        assert artifact.check_file(export["bundle"]) is None
    onnx_file, tflite_file, fp16_file = manifest.artifacts
    assert (onnx_file.format, onnx_file.precision, onnx_file.inputs[0].layout) == ("onnx", "fp32", "NCHW")
    assert onnx_file.inputs[0].shape == ("batch", 3, 224, 224) and onnx_file.details["opset"] >= 17
    assert (tflite_file.inputs[0].layout, tflite_file.inputs[0].dtype) == ("NHWC", "float32")
    assert tflite_file.inputs[0].scale is None and tflite_file.outputs[0].name == "logits"
    assert fp16_file.precision == "fp16"


def test_parity_on_real_photos(manifest):
    by_name = {p.artifact: p for p in manifest.parity}
    assert set(by_name) == {a.path for a in manifest.artifacts}
    for name in (f"{VARIANT}.onnx", f"{VARIANT}.tflite"):
        m = by_name[name].metrics
        assert by_name[name].passed and by_name[name].gated
        assert m.top1_agreement == 1.0 and m.top5_agreement >= 0.9
        assert m.cosine_min > 0.99999 and m.psnr_db > 80
    fp16 = by_name[f"{VARIANT}_fp16.tflite"]
    assert fp16.passed and fp16.metrics.cosine_min > 0.999
    assert manifest.reference["real_images"] == 8 and manifest.reference["random_inputs"] == 4


def test_reference_is_the_pytorch_model_on_the_stored_inputs(export, manifest, weights):
    import torch

    import edgekit

    with np.load(export["bundle"] / "reference.npz") as data:
        inputs, outputs, sources = data["inputs"], data["outputs"], list(data["sources"])
    assert inputs.shape == (12, 3, 224, 224) and outputs.shape == (12, 1000)
    assert sum(s.endswith(".JPEG") for s in sources) == 8 and sources[-1] == "random:0:3"
    model = edgekit.create_model("mobilenet_v2", weights=weights)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs[:2])).numpy()
    np.testing.assert_allclose(outputs[:2], expected, rtol=1e-4, atol=1e-4)
    assert manifest.reference["sha256"] == sha256_file(export["bundle"] / "reference.npz")


def test_report_shows_parity_and_app_snippets_from_the_files(export, manifest):
    from edgekit.snippets import kotlin_snippet, read_app_facts, swift_snippet

    report = (export["bundle"] / "report.md").read_text()
    assert "**Parity: all gates pass.**" in report
    for artifact in manifest.artifacts:
        assert artifact.path in report
    facts = read_app_facts(export["bundle"] / f"{VARIANT}.tflite")  # tests/test_snippets.py checks them
    assert kotlin_snippet(facts) in report and swift_snippet(facts) in report
    assert "ByteBuffer.allocateDirect(WIDTH * HEIGHT * 3 * 4)" in report  # float32 NHWC [1, 224, 224, 3]
    assert f"const val RESIZE_SHORTER_SIDE = {manifest.preprocessing['resize_shorter_side']}" in report
    assert f"edgekit validate {export['bundle']}" in report
