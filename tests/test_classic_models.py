"""The classic CNNs (LeNet-5, AlexNet, VGG, ResNet, GoogLeNet), U-Net and the Siamese embedding network:
exact sizes, torchvision's checkpoint layout, weights through every source, options, profiles and export."""

from __future__ import annotations

import json
import math

import pytest
import torch

import edgekit
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.exporters.common import export_ready
from edgekit.models.googlenet import GoogLeNet
from edgekit.models.registry import get_spec, resolve_config
from edgekit.models.siamese import SiameseNet, contrastive_loss
from edgekit.models.unet import UNet

# sum(p.numel() for p in torchvision.models.<name>().parameters()); LeNet-5 by hand (156 + 2,416 + 48,120 +
# 10,164 + 850); GoogLeNet without its auxiliary heads, as torchvision builds it for inference
PARAMETERS = {"lenet5": 61_706, "alexnet": 61_100_840, "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
              "resnet18": 11_689_512, "resnet50": 25_557_032, "resnet152": 60_192_808, "googlenet": 6_624_904}

# len(torchvision.models.<name>().state_dict()) and a sample of its keys with their shapes, written from
# torchvision's checkpoints rather than from edgekit's code
TORCHVISION_KEYS = {
    "alexnet": (16, {"features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
                     "features.10.weight": (256, 256, 3, 3), "classifier.1.weight": (4096, 9216),
                     "classifier.4.weight": (4096, 4096), "classifier.6.bias": (1000,)}),
    "vgg16": (32, {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3),
                   "classifier.0.weight": (4096, 25088), "classifier.3.weight": (4096, 4096),
                   "classifier.6.weight": (1000, 4096)}),
    "vgg16_bn": (97, {"features.1.running_var": (64,), "features.40.weight": (512, 512, 3, 3),
                      "features.41.bias": (512,), "classifier.0.weight": (4096, 25088)}),
    "resnet18": (122, {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,),
                       "layer1.0.conv1.weight": (64, 64, 3, 3), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                       "layer2.0.downsample.1.running_var": (128,), "layer4.1.bn2.weight": (512,),
                       "fc.weight": (1000, 512)}),
    "resnet50": (320, {"layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.conv3.weight": (256, 64, 1, 1),
                       "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
                       "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (1000, 2048)}),
    "resnet152": (932, {"layer2.7.bn3.running_mean": (512,), "layer3.35.conv3.weight": (1024, 256, 1, 1)}),
    "googlenet": (344, {"conv1.conv.weight": (64, 3, 7, 7), "conv1.bn.running_var": (64,),
                        "conv3.conv.weight": (192, 64, 3, 3), "inception3a.branch1.conv.weight": (64, 192, 1, 1),
                        "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
                        "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
                        "inception3a.branch4.1.conv.weight": (32, 192, 1, 1),
                        "inception5b.branch4.1.bn.bias": (128,), "fc.weight": (1000, 1024)}),
}
# the auxiliary heads in torchvision's GoogLeNet checkpoint (googlenet-1378be20.pth)
GOOGLENET_AUX = {"aux1.conv.conv.weight": (128, 512, 1, 1), "aux1.conv.bn.weight": (128,),
                 "aux1.conv.bn.bias": (128,), "aux1.conv.bn.running_mean": (128,),
                 "aux1.conv.bn.running_var": (128,), "aux1.fc1.weight": (1024, 2048), "aux1.fc1.bias": (1024,),
                 "aux1.fc2.weight": (1000, 1024), "aux1.fc2.bias": (1000,),
                 "aux2.conv.conv.weight": (128, 528, 1, 1), "aux2.conv.bn.weight": (128,),
                 "aux2.conv.bn.bias": (128,), "aux2.conv.bn.running_mean": (128,),
                 "aux2.conv.bn.running_var": (128,), "aux2.fc1.weight": (1024, 2048), "aux2.fc1.bias": (1024,),
                 "aux2.fc2.weight": (1000, 1024), "aux2.fc2.bias": (1000,)}


def _on_meta(name: str, **options):
    """The registered architecture with its parameters on the meta device: exact shapes, no memory, no init
    time (VGG-16's random initialisation alone takes 5 s here)."""
    config = resolve_config(name, **options)
    with torch.device("meta"):
        return get_spec(name).build(config.width, config.num_classes, config.padding)


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_parameter_counts_are_exact(name):
    assert sum(p.numel() for p in _on_meta(name).parameters()) == PARAMETERS[name]


@pytest.mark.parametrize("name", list(TORCHVISION_KEYS))
def test_state_dict_has_torchvision_layout(name):
    count, samples = TORCHVISION_KEYS[name]
    state = _on_meta(name).state_dict()
    assert len(state) == count
    for key, shape in samples.items():
        assert tuple(state[key].shape) == shape, key


def _torchvision_checkpoint(name: str) -> dict[str, torch.Tensor]:
    """A state dict laid out as torchvision's published file (random values; GoogLeNet with its aux heads)."""
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in edgekit.create_model(name, weights="random").state_dict().items()}
    for key, value in state.items():
        if key.endswith("running_var"):
            value.abs_()
    if name == "googlenet":
        state |= {k: torch.randn(shape) for k, shape in GOOGLENET_AUX.items()}
    return state


@pytest.mark.slow  # builds and saves full-size checkpoints (resnet18 2 s, googlenet 10 s)
@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_torchvision_checkpoint_loads_strictly_from_hub_cache_and_file(name, tmp_path, monkeypatch):
    state = _torchvision_checkpoint(name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("EDGEKIT_WEIGHTS_URL", "http://127.0.0.1:9/")  # never the network
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / get_spec(name).checkpoint.filename)
    torch.save({"state_dict": state}, tmp_path / "mine.pth")
    probe = "fc.weight"
    for weights in ("imagenet", str(tmp_path / "mine.pth")):
        model = edgekit.create_model(name, weights=weights)
        assert torch.equal(model.state_dict()[probe], state[probe])
        assert model.edgekit_config.weights.trained
        if name == "googlenet":  # the aux heads are dropped, and the record says so
            assert "aux1, aux2" in model.edgekit_config.weights.note
            assert sum(p.numel() for p in model.parameters()) == PARAMETERS["googlenet"]
    assert edgekit.create_model(name, weights="imagenet").edgekit_config.preprocessing.crop_fraction == 224 / 256


def test_googlenet_preprocessing_equals_torchvisions_transform_input():
    """The registry declares (pixel - 127.5) / 127.5 for GoogLeNet's weights; torchvision feeds ImageNet-normalised
    input through transform_input=True. Same weights, same picture: same logits."""
    torch.manual_seed(0)
    ours, theirs = GoogLeNet(num_classes=10).eval(), GoogLeNet(num_classes=10, transform_input=True).eval()
    theirs.load_state_dict(ours.state_dict())
    pixels = torch.randint(0, 256, (2, 3, 64, 64)).float()
    spec = get_spec("inception_v1").checkpoint.preprocessing
    ours_input = (pixels - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    imagenet = edgekit.types.IMAGENET_PREPROCESSING
    theirs_input = (pixels - torch.tensor(imagenet.mean).view(1, 3, 1, 1)) / torch.tensor(imagenet.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(ours_input), theirs(theirs_input), rtol=1e-4, atol=1e-5)


def test_alias_and_options_are_checked():
    assert edgekit.create_model("inception_v1", resolution=64).edgekit_config.name == "googlenet"
    with pytest.raises(EdgekitError, match="resolution 32 is out of range for alexnet: use 63"):
        resolve_config("alexnet", resolution=32)
    with pytest.raises(EdgekitError, match="vgg16 has no width option"):
        resolve_config("vgg16", width=0.5)
    with pytest.raises(EdgekitError, match="multiple of 16"):
        resolve_config("unet", resolution=100)
    with pytest.raises(EdgekitError, match="resolution 64 is not valid for lenet5"):
        resolve_config("lenet5", resolution=64)
    assert resolve_config("lenet5").num_classes == 10 and resolve_config("unet").num_classes == 2
    assert resolve_config("siamese").num_classes == 128


def test_lenet5_takes_32x32_greyscale():
    model = edgekit.create_model("lenet5")
    with torch.no_grad():
        assert model(torch.randn(3, 1, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match="1x32x32"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize(("options", "size"), [({}, 64), ({"in_channels": 1, "num_classes": 5, "depth": 2}, 36),
                                               ({"base_channels": 8, "depth": 5, "batch_norm": True}, 96)])
def test_unet_mask_has_the_input_size(options, size):
    model = UNet(**options).eval()
    x = torch.randn(2, options.get("in_channels", 3), size, size)
    with torch.no_grad():
        assert model(x).shape == (2, options.get("num_classes", 2), size, size)
    with pytest.raises(ValueError, match="divisible by"):
        model(torch.randn(1, options.get("in_channels", 3), size + 2, size + 2))


def test_siamese_embeds_on_the_unit_sphere_and_compares_pairs():
    torch.manual_seed(0)
    model = SiameseNet("mobilenet_v2", embed_dim=32, width=0.35).eval()
    a, b = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        embeddings = model(a)
        assert embeddings.shape == (3, 32)
        torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
        assert torch.allclose(model.compare(a, a), torch.zeros(3), atol=1e-3)
        assert torch.allclose(model.compare(a, b), model.compare(b, a))
    assert "backbone.0.0.weight" in model.state_dict()  # MobileNet v2's features.0.0.weight, renamed
    assert contrastive_loss(torch.tensor([0.0, 2.0]), torch.tensor([1, 0])).item() == 0.0
    with pytest.raises(ValueError, match="unknown Siamese backbone"):
        SiameseNet("vgg99")


def test_info_shows_the_case_study_points(capsys):
    assert main(["info", "googlenet"]) == 0
    text = capsys.readouterr().out
    assert "inception4e + maxpool" in text and "6,624,904" in text
    assert "Inception 1x1 bottlenecks: the 18 reduced 3x3 branches" in text and "3.2x cheaper" in text
    assert main(["info", "resnet18", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shortcuts"] == {"identity": 5, "projection": 3, "projection_params": 173_824,
                                 "projection_macs": 19_267_584}
    assert round(data["macs"] / 1e9, 2) == 1.81 and "identity" in data["stages"][1]["block"]
    assert main(["info", "lenet5", "--json"]) == 0  # one input channel
    assert json.loads(capsys.readouterr().out)["macs"] == 416_520


@pytest.mark.slow  # full-size VGG-16 and AlexNet classifiers (2 s)
def test_grid_pool_folds_exactly_into_the_classifier():
    """AlexNet at 64 px: the 6x6 adaptive pool upsamples a 1x1 map, which ONNX refuses; folded into the first
    Linear it is gone, the Linear reads 256 features instead of 9,216, and the outputs are unchanged."""
    torch.manual_seed(0)
    model = edgekit.create_model("alexnet", resolution=64, num_classes=10)
    ready = export_ready(model, 64)
    assert ready.classifier[1].in_features == 256 and not isinstance(ready.avgpool, torch.nn.AdaptiveAvgPool2d)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ready(x), model(x), rtol=1e-5, atol=1e-6)
    assert isinstance(model.avgpool, torch.nn.AdaptiveAvgPool2d)  # the original is untouched


def test_batch_norm_folds_wherever_a_convolution_alone_feeds_it():
    """ResNet's bn1 after conv1 is no Sequential, yet every BN is folded (found by an fx trace), names kept and
    outputs unchanged: a graph with BN converts about twice as slowly. A conv whose output is also read elsewhere
    and a BN run twice stay; a model fx cannot trace gets the Sequential pairs only."""
    from torch import nn

    torch.manual_seed(0)
    model = edgekit.create_model("resnet18", resolution=32, num_classes=10)
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # not the identity statistics
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    ready = export_ready(model, 32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ready.modules())
    assert isinstance(ready.layer1[0].bn1, nn.Identity) and isinstance(ready.layer2[0].downsample[1], nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ready(x), model(x), rtol=1e-4, atol=1e-4)

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.read_twice, self.norm = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.other, self.run_twice = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.read_twice(x)
            return (self.norm(y) + y + self.run_twice(self.other(x)) + self.run_twice(y) + self.block(x)
                    + self.bn(self.conv(x)))

    class Untraceable(Shared):
        def forward(self, x):
            return super().forward(x) if x.sum() > 0 else super().forward(-x)  # control flow on a value

    for cls, folded in ((Shared, {"block.1", "bn"}), (Untraceable, {"block.1"})):
        ready = export_ready(cls().eval(), 8)
        assert {n for n, m in ready.named_modules() if isinstance(m, nn.Identity)} == folded, cls.__name__


def test_every_model_builds_and_runs():
    """Each new model at its smallest sensible input, on a batch of two (VGG-16 and ResNet-152 are built in the
    export tests: their random initialisation alone takes seconds)."""
    for name, resolution in (("lenet5", 32), ("alexnet", 64), ("resnet18", 32), ("googlenet", 32),
                             ("unet", 32), ("siamese", 32)):
        model = edgekit.create_model(name, resolution=resolution, width=0.125 if name == "unet" else None)
        channels = get_spec(name).in_channels
        with torch.no_grad():
            out = model(torch.randn(2, channels, resolution, resolution))
        assert out.shape[:2] == (2, model.edgekit_config.num_classes) and torch.isfinite(out).all(), name


# fp32 export through the whole pipeline (export-ready copy, ONNX and TFLite, parity against PyTorch) at small
# resolutions. A TFLite conversion takes 4-16 s per model here, so ResNet-50, VGG-16 and the Siamese network are
# converted to ONNX only: their blocks reach TFLite through ResNet-18, VGG-16 in test_classic_export.py (fp32
# parity gated, with its int8 file) and the trained Siamese of test_nonclassifier_parity.py. VGG-16-BN and
# ResNet-152 add no operator to VGG-16 and ResNet-50 (their sizes and checkpoint layouts are checked above on
# the meta device); exporting their 140 M and 60 M parameters only costs 8-10 s each.
EXPORTS = [("alexnet", 64, ("onnx", "tflite")), ("vgg16", 64, ("onnx",)), ("resnet18", 64, ("onnx", "tflite")),
           ("resnet50", 64, ("onnx",)), ("googlenet", 64, ("onnx", "tflite")), ("siamese", 96, ("onnx",))]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "resolution", "formats"), EXPORTS)
def test_fp32_export_passes_parity(name, resolution, formats, tmp_path):
    from edgekit.pipeline import ExportSpec, run_export

    model = edgekit.create_model(name, resolution=resolution, num_classes=None if name == "siamese" else 10,
                                 width=0.35 if name == "siamese" else None)
    spec = ExportSpec(name, width=model.edgekit_config.width, resolution=resolution, formats=formats, out=tmp_path,
                      parity_samples=3, parity_random=2, latency_runs=0)
    manifest = run_export(spec, model=model)
    assert manifest.status == "complete" and [p.artifact.rsplit(".", 1)[1] for p in manifest.parity] == list(formats)
    for result in manifest.parity:
        if name == "siamese":
            # an embedding has no classes; an untrained one maps every picture to one point, so there is no
            # same/different decision to compare (parity says so): the embeddings themselves must match
            assert math.isnan(result.metrics.decision_agreement) and "do not separate" in result.note
        else:
            assert result.metrics.top1_agreement == 1.0
        assert result.passed and result.metrics.cosine_min >= 0.9999, (result.artifact, result.failures)
    onnx_ops = manifest.artifacts[0].details["operators"]
    assert "BatchNormalization" not in onnx_ops and "Dropout" not in onnx_ops
