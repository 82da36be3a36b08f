"""The zoo: every model builds and runs; sizes equal the reference implementations; options are checked."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import edgekit
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.models.blocks import ConvNormAct, InvertedResidual, MBConv, StochasticDepth, make_divisible, tf_same_padding
from edgekit.models.profile import profile_model

# sum(p.numel() for p in model.parameters()) of torchvision / timm (Lite: timm's tf_efficientnet_lite*)
REFERENCE_PARAMS = {
    ("mobilenet_v1", 1.0): 4_231_976,
    ("mobilenet_v1", 0.25): 470_072,
    ("mobilenet_v2", 1.0): 3_504_872,
    ("efficientnet_b0", None): 5_288_548,
    ("efficientnet_b1", None): 7_794_184,
    ("efficientnet_b2", None): 9_109_994,
    ("efficientnet_b3", None): 12_233_232,
    ("efficientnet_b4", None): 19_341_616,
    ("efficientnet_b5", None): 30_389_784,
    ("efficientnet_b6", None): 43_040_704,
    ("efficientnet_b7", None): 66_347_960,
    ("efficientnet_lite0", None): 4_652_008,
}

# multiply-accumulates reported by the papers at the default resolution, in millions
PAPER_MACS = {"mobilenet_v1": 569, "mobilenet_v2": 300, "efficientnet_b0": 390}


# EfficientNet B1-B7 and Lite1-4 take 2-8 s each to build and initialise: full run only. The fast lane keeps the
# smallest of each family (MobileNet v1/v2, EfficientNet B0, Lite0).
BIG_MODELS = tuple(n for n in edgekit.list_models() if n.startswith("efficientnet") and not n.endswith("0"))


# The classic CNNs, U-Net and Siamese (other inputs and outputs) are built and run in tests/test_classic_models.py
MOBILE_MODELS = [n for n in edgekit.list_models() if n.startswith(("mobilenet", "efficientnet"))]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG_MODELS else n
                                  for n in MOBILE_MODELS])
def test_every_model_builds_and_runs(name):
    model = edgekit.create_model(name, resolution=None if name.startswith("mobilenet") else 64, num_classes=10)
    resolution = model.edgekit_config.resolution
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "width"), list(REFERENCE_PARAMS))
def test_parameter_counts_match_reference(name, width):
    model = edgekit.create_model(name, width=width)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[(name, width)]


@pytest.mark.parametrize("name", list(PAPER_MACS))
def test_macs_within_two_percent_of_paper(name):
    model = edgekit.create_model(name)
    macs = profile_model(model, 224).macs / 1e6
    assert abs(macs - PAPER_MACS[name]) / PAPER_MACS[name] < 0.02, macs


def test_torchvision_layout_names():
    """Key names torchvision's published checkpoints use; strict loading depends on them."""
    v2 = edgekit.create_model("mobilenet_v2").state_dict()
    for key in ("features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
                "features.1.conv.1.weight", "features.1.conv.2.bias", "features.2.conv.0.0.weight",
                "features.2.conv.1.0.weight", "features.2.conv.2.weight", "features.2.conv.3.weight",
                "features.18.0.weight", "classifier.1.weight"):
        assert key in v2, key
    b0 = edgekit.create_model("efficientnet_b0").state_dict()
    for key in ("features.0.0.weight", "features.1.0.block.0.0.weight", "features.1.0.block.1.fc1.weight",
                "features.1.0.block.1.fc2.bias", "features.1.0.block.2.1.weight",
                "features.2.0.block.0.0.weight", "features.2.0.block.3.0.weight", "features.6.3.block.2.fc1.weight",
                "features.8.0.weight", "classifier.1.bias"):
        assert key in b0, key
    assert len(b0) == 360  # torchvision efficientnet_b0().state_dict() has 360 entries


def test_blocks_shape_rules():
    assert make_divisible(32 * 0.35) == 16  # rounding may not drop more than 10%
    assert make_divisible(1280 * 1.4) == 1792
    with pytest.raises(ValueError, match="stride"):
        InvertedResidual(16, 16, 3, 6)
    with pytest.raises(ValueError, match="stride"):
        MBConv(16, 16, 3, 4, 6)
    proj = ConvNormAct(8, 4, 1, activation=None)
    assert len(proj) == 2  # linear projection: conv + BN, no activation
    assert InvertedResidual(16, 16, 1, 6).use_res_connect and not InvertedResidual(16, 24, 1, 6).use_res_connect


def test_stochastic_depth_only_in_training():
    drop = StochasticDepth(0.5)
    x = torch.ones(64, 4, 2, 2)
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    dropped = (y.flatten(1).sum(1) == 0).float().mean().item()
    assert 0.2 < dropped < 0.8  # whole samples are dropped...
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 2.0))  # ...and the rest rescaled


def test_efficientnet_drop_path_rises_linearly():
    model = edgekit.create_model("efficientnet_b0")
    rates = [m.stochastic_depth.p for m in model.modules() if isinstance(m, MBConv)]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2 * 15 / 16)


def test_lite_has_no_squeeze_excite_and_relu6():
    model = edgekit.create_model("efficientnet_lite2")
    assert not any(type(m).__name__ == "SqueezeExcitation" for m in model.modules())
    assert not any(isinstance(m, nn.SiLU) for m in model.modules())
    assert model.features[0][0].out_channels == 32 and model.classifier[1].in_features == 1280


def test_tf_same_padding_is_asymmetric_on_stride_two():
    assert tf_same_padding(224, 3, 2) == (0, 1)
    assert tf_same_padding(224, 3, 1) == (1, 1)
    assert tf_same_padding(7, 5, 2) == (2, 2)
    sym = edgekit.models.registry.build_model(edgekit.models.resolve_config("mobilenet_v1", 0.25, 128))
    tf = edgekit.models.registry.build_model(edgekit.models.resolve_config("mobilenet_v1", 0.25, 128,
                                                                           padding="tf_same"))
    tf.load_state_dict(sym.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = sym.features(x), tf.features(x)
    assert a.shape == b.shape
    assert ((a - b).norm() / a.norm()).item() > 0.05  # same weights, sampling grid shifted by a pixel
    assert tf.edgekit_config.padding == "tf_same"


def test_unknown_name_suggests_closest():
    with pytest.raises(EdgekitError, match="did you mean mobilenet_v2"):
        edgekit.create_model("mobilenetv2")
    with pytest.raises(EdgekitError, match="efficientnet_b3"):
        edgekit.create_model("efficientnet-b3")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "mobilenet_v2", "width": 0.6}, "width 0.6 is not valid for mobilenet_v2: choose one of 0.35"),
    ({"name": "mobilenet_v1", "resolution": 200}, "resolution 200 is not valid for mobilenet_v1"),
    ({"name": "efficientnet_b0", "width": 1.2}, "fixed compound width"),
    ({"name": "efficientnet_b0", "resolution": 16}, "out of range"),
    ({"name": "mobilenet_v2", "num_classes": 0}, "num_classes must be a positive integer"),
])
def test_invalid_options_give_clear_errors(kwargs, message):
    with pytest.raises(EdgekitError, match=message):
        edgekit.create_model(**kwargs)


def test_variant_name_appends_non_default_options():
    assert edgekit.create_model("mobilenet_v2").edgekit_config.variant == "mobilenet_v2"
    assert edgekit.create_model("mobilenet_v2", width=0.5, resolution=160).edgekit_config.variant \
        == "mobilenet_v2_w0.5_r160"


def test_cli_info_json_and_table(capsys):
    assert main(["info", "mobilenet_v1", "--width", "0.25", "--resolution", "128", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "mobilenet_v1" and data["params"] == 470_072 and data["resolution"] == 128
    assert data["macs"] > 0 and data["separable"]["ratio"] == pytest.approx(data["separable"]["theory_ratio"])
    assert main(["info", "mobilenet_v2"]) == 0
    text = capsys.readouterr().out
    assert "InvertedResidual" in text and "3,504,872" in text and "1/N + 1/Dk^2" in text


@pytest.mark.slow  # builds every model of the zoo at full size to count its parameters (15-35 s)
def test_cli_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == edgekit.list_models()
    b2 = next(r for r in rows if r["name"] == "efficientnet_b2")
    assert b2["resolution"] == 288 and b2["paper_resolution"] == 260 and b2["params"] == 9_109_994


def test_cli_errors_are_one_line(capsys):
    assert main(["info", "resnet51"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekit: error: unknown model 'resnet51'") and "\n" not in err


def test_imagenet_labels_follow_the_standard_order(shared_data):
    import csv

    from edgekit.labels import default_labels, imagenet_labels

    names = imagenet_labels()
    with open(shared_data / "imagenet-samples" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the short names must agree with the shared set's long names for (nearly) every class present
    agree = sum(names[int(r["class_index"])].lower().split()[0] in r["name"].lower() for r in rows)
    assert agree / len(rows) > 0.8
    assert default_labels(1001)[0] == "background" and default_labels(1001)[1] == names[0]
    assert default_labels(3) == ("class_0", "class_1", "class_2")


def test_quiet_flag_before_or_after_the_command(capsys):
    assert main(["-q", "info", "mobilenet_v1", "--json"]) == 0
    assert main(["info", "mobilenet_v1", "--json", "-q"]) == 0
    assert main(["info", "mobilenet_v1", "--json"]) == 0
