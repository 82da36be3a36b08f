"""Every registered model family exports to ONNX and TFLite with fp32 parity passing (random weights, small
resolutions so the suite stays fast), and the TF SAME padding of imported weights survives both formats."""

from __future__ import annotations

import pytest

import edgekit
from edgekit.manifest import Manifest
from edgekit.models.registry import build_model, get_spec, list_models, resolve_config
from edgekit.pipeline import ExportSpec, run_export
from edgekit.tflite_model import TFLiteModel

# Smallest valid configuration of each family: big variants at small resolution. EfficientNet-Lite takes TF SAME
# padding (how TF-trained weights come in) at a resolution where SAME pads asymmetrically; EfficientNet PyTorch's.
SMALL = {"efficientnet": {"resolution": 64}, "efficientnet_lite": {"resolution": 64, "padding": "tf_same"}}
# The MobileNets are exported once per test session from Google's weights (tests/conftest.py), TF SAME padding
# included: v1 0.25/128 is checked here like the families above, v2 1.0/224 op by op in test_export.py.
# Exporting random small copies of them as well would convert the same graphs twice.
SESSION_BUNDLES = {"mobilenet_v1": "conftest.v1_fp32_bundle, checked below",
                   "mobilenet_v2": "conftest.v2_fp16_export, checked in test_export.py"}


def _first_of_each_family() -> list[str]:
    seen: dict[str, str] = {}
    for name in list_models():
        seen.setdefault(get_spec(name).family, name)
    return list(seen.values())


def _export(model, out):
    cfg = model.edgekit_config
    # latency_runs=0: host latency is covered by test_export*.py; here it would only add a second per family
    spec = ExportSpec(cfg.name, width=cfg.width, resolution=cfg.resolution, out=out, parity_samples=3,
                      parity_random=2, latency_runs=0)
    return run_export(spec, model=model)


def _check(manifest, bundle, resolution):
    assert manifest.status == "complete" and manifest.latency == {}  # skipped, as asked
    assert "latency" not in [s.name for s in manifest.steps]
    assert [a.path for a in manifest.artifacts] == [f"{manifest.variant}.onnx", f"{manifest.variant}.tflite"]
    for result in manifest.parity:
        assert result.passed, (result.artifact, result.failures)
        assert result.metrics.top1_agreement == 1.0 and result.metrics.cosine_min >= 0.9999
    graph = TFLiteModel.from_file(bundle / f"{manifest.variant}.tflite")
    assert graph.op_counts.get("TRANSPOSE", 0) == 0
    assert graph.input_tensors()[0].shape == (1, resolution, resolution, 3)
    assert not {"RELU6", "RELU"} & set(graph.op_counts)  # fused into the convolutions
    onnx_ops = manifest.artifacts[0].details["operators"]
    assert "BatchNormalization" not in onnx_ops and "Dropout" not in onnx_ops


# Exported in tests/test_classic_models.py (alexnet, vgg, resnet, googlenet, siamese); lenet (one input channel)
# and unet (a mask, not logits) wait for export of any input shape and for dense-output parity
CLASSIC_FAMILIES = {"alexnet", "vgg", "resnet", "googlenet", "siamese", "lenet", "unet"}


def test_every_family_is_covered():
    assert set(SMALL) | set(SESSION_BUNDLES) | CLASSIC_FAMILIES == {get_spec(n).family for n in list_models()}


@pytest.mark.slow
def test_mobilenet_v1_session_bundle_is_clean(v1_fp32_bundle):
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stderr"]
    bundle = v1_fp32_bundle["bundle"]
    manifest = Manifest.read(bundle)
    _check(manifest, bundle, 128)
    assert manifest.model["padding"] == "tf_same"
    assert "PAD" not in TFLiteModel.from_file(bundle / f"{manifest.variant}.tflite").op_counts


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in _first_of_each_family() if get_spec(n).family in SMALL])
def test_family_exports_to_both_formats(name, tmp_path):
    options = SMALL[get_spec(name).family]
    model = build_model(resolve_config(name, width=options.get("width"), resolution=options["resolution"],
                                       padding=options.get("padding")))
    manifest = _export(model, tmp_path)
    _check(manifest, tmp_path / manifest.variant, options["resolution"])
    if options.get("padding") == "tf_same":
        # the ONNX convs carry begin/end pads, the TFLite ones their own SAME padding, and parity holds
        assert manifest.model["padding"] == "tf_same"
        graph = TFLiteModel.from_file(tmp_path / manifest.variant / f"{manifest.variant}.tflite")
        assert "PAD" not in graph.op_counts  # static TF padding became the convolutions' SAME padding


@pytest.mark.slow
def test_dynamo_onnx_exporter_gives_the_same_graph(tmp_path):
    model = edgekit.create_model("mobilenet_v1", width=0.25, resolution=128)
    spec = ExportSpec("mobilenet_v1", formats=("onnx",), onnx_exporter="dynamo", out=tmp_path, parity_samples=3,
                      parity_random=2, latency_runs=0)
    manifest = run_export(spec, model=model)
    (artifact,) = manifest.artifacts
    assert manifest.passed and artifact.details["exporter"] == "dynamo" and artifact.details["opset"] >= 17
    assert artifact.details["operators"]["Conv"] == 27 and "BatchNormalization" not in artifact.details["operators"]
    assert artifact.inputs[0].shape == ("batch", 3, 128, 128)
