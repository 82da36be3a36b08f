"""Importing Google's hosted MobileNet .tflite files into edgekit's PyTorch models.

Accuracy is checked on the real files and the 250 shared ImageNet images against the source file run by the
LiteRT interpreter on the very same preprocessed inputs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.errors import EdgekitError
from edgekit.evaluate import evaluate, image_batches, top1_agreement, torch_predictor
from edgekit.images import read_labelled_set
from edgekit.models.registry import build_model
from edgekit.models.tflite_import import import_tflite, model_layers
from edgekit.runtimes import open_runtime

FILES = {  # file -> (model, width, resolution)
    "mobilenet_v1_0.25_128_quant.tflite": ("mobilenet_v1", 0.25, 128),
    "mobilenet_v1_0.5_160_quant.tflite": ("mobilenet_v1", 0.5, 160),
    "mobilenet_v1_0.75_192_quant.tflite": ("mobilenet_v1", 0.75, 192),
    "mobilenet_v2_1.0_224_quant.tflite": ("mobilenet_v2", 1.0, 224),
}
SMALL = "mobilenet_v1_0.25_128_quant.tflite"
V2 = "mobilenet_v2_1.0_224_quant.tflite"


@pytest.fixture(scope="module")
def tflite_dir(shared_data) -> Path:
    return shared_data / "tflite"


@pytest.fixture(scope="module")
def imported(tflite_dir):
    """One import per file, shared by the tests of this module."""
    cache = {}

    def get(filename: str):
        if filename not in cache:
            cache[filename] = edgekit.create_model(FILES[filename][0], weights=tflite_dir / filename)
        return cache[filename]

    return get


@pytest.fixture(scope="module")
def image_sets(shared_data):
    """The 250 shared images, decoded and preprocessed once per (resolution, preprocessing)."""
    items = read_labelled_set(shared_data / "imagenet-samples" / "labels.csv")
    assert len(items) == 250
    cache = {}

    def get(config):
        key = (config.resolution, config.preprocessing)
        if key not in cache:
            cache[key] = list(image_batches(items, config.resolution, config.preprocessing, batch_size=50))
        return cache[key]

    return get


# 250 images through the source file and the import: 2 s for v1 0.25/128, 5-45 s for the larger files
@pytest.mark.parametrize("filename", [f if f == SMALL else pytest.param(f, marks=pytest.mark.slow) for f in FILES])
def test_imported_model_matches_source_file(filename, tflite_dir, imported, image_sets, request):
    model = imported(filename)
    batches = image_sets(model.edgekit_config)
    source = evaluate(open_runtime(tflite_dir / filename), batches)
    if filename == V2:  # v2's PyTorch pass over these images is the session's (test_quantize.py reads it too)
        ours = evaluate(_replay(request.getfixturevalue("v2_imagenet_logits")), batches)
    else:
        ours = evaluate(torch_predictor(model), batches)
    assert source.images == ours.images == 250
    assert source.top1 > 0.3  # the source really classifies: the comparison is meaningful
    assert abs(ours.top1 - source.top1) <= 0.02, (ours.top1, source.top1)
    assert top1_agreement(source, ours) >= 0.90


def _replay(logits: np.ndarray):
    """A predictor that returns stored outputs, batch after batch, for images fed in the order they were stored."""
    fed = 0

    def predict(x: np.ndarray) -> np.ndarray:
        nonlocal fed
        fed += len(x)
        return logits[fed - len(x):fed]

    return predict


def test_symmetric_padding_is_measurably_worse(imported, image_sets):
    """The same weights with PyTorch's symmetric padding lose a large part of their accuracy: TF SAME matters."""
    model = imported(SMALL)
    symmetric = build_model(replace(model.edgekit_config, padding="symmetric"))
    symmetric.load_state_dict(model.state_dict())
    batches = image_sets(model.edgekit_config)
    tf_same = evaluate(torch_predictor(model), batches)
    naive = evaluate(torch_predictor(symmetric), batches)
    assert naive.top1 < tf_same.top1 - 0.10, (naive.top1, tf_same.top1)
    assert top1_agreement(tf_same, naive) < 0.6


@pytest.mark.parametrize("filename", list(FILES))
def test_width_resolution_and_settings_come_from_the_file(filename, tflite_dir, imported):
    name, width, resolution = FILES[filename]
    cfg = imported(filename).edgekit_config
    assert (cfg.name, cfg.width, cfg.resolution, cfg.num_classes) == (name, width, resolution, 1000)
    assert cfg.padding == "tf_same"
    # x = scale * (u8 - zero_point) with scale 1/128, zero point 128
    assert cfg.preprocessing.mean == (128.0,) * 3 and cfg.preprocessing.std == (128.0,) * 3
    assert cfg.preprocessing.crop_fraction == 0.875
    assert cfg.weights.source == "tflite" and cfg.weights.trained
    assert cfg.weights.path == str(tflite_dir / filename) and len(cfg.weights.sha256) == 64
    assert "background" in cfg.weights.note
    assert cfg.to_dict()["padding"] == "tf_same"
    # labels packed in the file, background removed: class 0 is ImageNet's tench
    assert len(cfg.labels) == 1000 and cfg.labels[0].startswith("tench")


def test_folded_batch_norm_is_identity_plus_bias(imported):
    model = imported(SMALL)
    for layer in model_layers(model):
        if layer.norm is not None:
            norm = layer.norm
            x = torch.randn(2, norm.num_features, 3, 3)
            expected = x + norm.bias[None, :, None, None]
            torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-5)


def test_keep_background_gives_1001_classes(tflite_dir, imported):
    default = imported(SMALL)
    kept = edgekit.create_model("mobilenet_v1", weights=tflite_dir / SMALL, keep_background=True)
    cfg = kept.edgekit_config
    assert cfg.num_classes == 1001 and cfg.labels[0] == "background" and len(cfg.labels) == 1001
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(kept(x)[:, 1:], default(x))


def test_other_num_classes_replaces_the_head(tflite_dir, imported, capsys):
    model = edgekit.create_model("mobilenet_v1", weights=tflite_dir / SMALL, num_classes=10)
    assert model.edgekit_config.num_classes == 10 and model.edgekit_config.labels is None
    assert "classifier replaced" in model.edgekit_config.weights.note
    assert "replacing the classifier" in capsys.readouterr().err
    # the feature extractor is the imported one
    torch.testing.assert_close(model.features.state_dict(), imported(SMALL).features.state_dict())
    with pytest.raises(EdgekitError, match="--keep-background"):
        edgekit.create_model("mobilenet_v1", weights=tflite_dir / SMALL, num_classes=1001)


def test_matching_width_and_resolution_are_accepted(tflite_dir):
    model = import_tflite(tflite_dir / SMALL, "mobilenet_v1", width=0.25, resolution=128)
    assert model.edgekit_config.width == 0.25


def test_v1_file_as_v2_names_the_first_layer(tflite_dir):
    with pytest.raises(EdgekitError) as e:
        edgekit.create_model("mobilenet_v2", weights=tflite_dir / SMALL)
    message = str(e.value)
    assert "\n" not in message
    assert "layer 0 (features.0.0" in message and "MobilenetV1/MobilenetV1/Conv2d_0" in message
    assert "expected weight (32, 3, 3, 3), the file has (8, 3, 3, 3)" in message
    assert "mobilenet_v1 width 0.25" in message  # what the file actually is


def test_v2_file_as_v1_names_the_first_layer(tflite_dir):
    with pytest.raises(EdgekitError, match=r"layer 2 \(features\.1\.pw\.0.*expected weight \(64, 32, 1, 1\)"):
        edgekit.create_model("mobilenet_v1", weights=tflite_dir / "mobilenet_v2_1.0_224_quant.tflite")


def test_width_mismatch_names_the_first_layer(tflite_dir):
    with pytest.raises(EdgekitError) as e:
        edgekit.create_model("mobilenet_v1", width=0.5, weights=tflite_dir / SMALL)
    message = str(e.value)
    assert "width 0.5" in message and "layer 0 (features.0.0" in message
    assert "expected weight (16, 3, 3, 3), the file has (8, 3, 3, 3)" in message
    assert "--width 0.25" in message


def test_resolution_mismatch_is_an_error(tflite_dir):
    with pytest.raises(EdgekitError, match="128x128.*--resolution 128"):
        edgekit.create_model("mobilenet_v1", resolution=160, weights=tflite_dir / SMALL)


def test_only_mobilenets_take_tflite_weights(tflite_dir):
    with pytest.raises(EdgekitError, match="mobilenet_v1 and mobilenet_v2 only"):
        edgekit.create_model("efficientnet_b0", weights=tflite_dir / SMALL)


@pytest.mark.parametrize("fraction", [0.0, 0.00002, 0.1, 0.5, 0.9])
def test_truncated_file_fails_cleanly(fraction, tflite_dir, tmp_path):
    data = (tflite_dir / SMALL).read_bytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(EdgekitError) as e:
        edgekit.create_model("mobilenet_v1", weights=broken)
    assert "broken.tflite" in str(e.value) and "\n" not in str(e.value)


def test_random_file_fails_cleanly(tmp_path):
    rng = np.random.default_rng(0)
    plain = tmp_path / "random.tflite"
    plain.write_bytes(rng.bytes(4096))
    tagged = tmp_path / "tagged.tflite"  # random bytes that carry the TFLite identifier
    tagged.write_bytes(rng.bytes(4) + b"TFL3" + rng.bytes(4096))
    for path in (plain, tagged):
        with pytest.raises(EdgekitError, match=path.name):
            edgekit.create_model("mobilenet_v1", weights=path)
    with pytest.raises(EdgekitError, match="does not exist"):
        edgekit.create_model("mobilenet_v1", weights=tmp_path / "missing.tflite")


def _requantize_int8_per_channel(source: Path, target: Path) -> None:
    """Rewrite every conv weight of ``source`` as int8 with a per-output-channel scale (the layout of newer
    TFLite files), keeping uint8 activations: the file is for reading weights, not for running."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)
    graph = model.subgraphs[0]
    ops = schema.BuiltinOperator
    kinds = {i: max(code.builtinCode, code.deprecatedBuiltinCode) for i, code in enumerate(model.operatorCodes)}
    for op in graph.operators:
        if kinds[op.opcodeIndex] not in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D):
            continue
        tensor = graph.tensors[op.inputs[1]]
        buffer = model.buffers[tensor.buffer]
        q = np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), np.uint8).reshape(tensor.shape)
        real = (q.astype(np.float64) - tensor.quantization.zeroPoint[0]) * tensor.quantization.scale[0]
        axis = 3 if kinds[op.opcodeIndex] == ops.DEPTHWISE_CONV_2D else 0
        reduce = tuple(a for a in range(real.ndim) if a != axis)
        scale = np.maximum(np.abs(real).max(axis=reduce, keepdims=True), 1e-12) / 127.0
        q8 = np.clip(np.round(real / scale), -127, 127).astype(np.int8)
        buffer.data = np.frombuffer(q8.tobytes(), np.uint8)
        tensor.type = schema.TensorType.INT8
        tensor.quantization.scale = scale.reshape(-1).astype(np.float32)
        tensor.quantization.zeroPoint = np.zeros(scale.size, np.int64)
        tensor.quantization.quantizedDimension = axis
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))


def test_int8_per_channel_weights_are_dequantized_per_channel(tflite_dir, tmp_path, imported, image_sets):
    per_channel = tmp_path / "per_channel_int8.tflite"
    _requantize_int8_per_channel(tflite_dir / SMALL, per_channel)
    model = edgekit.create_model("mobilenet_v1", weights=per_channel)
    reference = imported(SMALL)
    for ours, theirs in zip(model_layers(model), model_layers(reference)):
        w, ref = ours.module.weight, theirs.module.weight
        # int8 re-quantization moves each weight by at most half a step of its own channel's scale
        step = ref.abs().amax(dim=tuple(range(1, ref.ndim)), keepdim=True) / 127
        assert torch.all((w - ref).abs() <= step / 2 + 1e-6), ours.name
    first_batch = image_sets(reference.edgekit_config)[:1]
    agreement = top1_agreement(evaluate(torch_predictor(model), first_batch),
                               evaluate(torch_predictor(reference), first_batch))
    assert agreement >= 0.9


def _pad_explicitly(source: Path, target: Path, pads: tuple[int, int, int, int]) -> None:
    """Rewrite each stride-2 SAME convolution of ``source`` as PAD ``pads`` (top, bottom, left, right) + VALID
    convolution, the way Keras-built MobileNet files are laid out."""
    import copy

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    ops = schema.BuiltinOperator
    model = schema.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)
    graph = model.subgraphs[0]
    kinds = {i: max(code.builtinCode, code.deprecatedBuiltinCode) for i, code in enumerate(model.operatorCodes)}
    pad_code = schema.OperatorCodeT()
    pad_code.builtinCode = pad_code.deprecatedBuiltinCode = ops.PAD
    pad_code.version = 1
    model.operatorCodes.append(pad_code)
    top, bottom, left, right = pads
    rewritten = []
    for op in graph.operators:
        if kinds[op.opcodeIndex] in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D) and op.builtinOptions.strideH == 2:
            x = graph.tensors[op.inputs[0]]
            amounts = schema.BufferT()
            amounts.data = np.frombuffer(np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
                                         .tobytes(), np.uint8)
            model.buffers.append(amounts)
            amounts_tensor = schema.TensorT()
            amounts_tensor.shape, amounts_tensor.type = np.array([4, 2], np.int32), schema.TensorType.INT32
            amounts_tensor.buffer, amounts_tensor.name = len(model.buffers) - 1, f"pad_amounts_{op.inputs[0]}".encode()
            padded = copy.deepcopy(x)
            padded.shape = np.array([1, x.shape[1] + top + bottom, x.shape[2] + left + right, x.shape[3]], np.int32)
            padded.buffer, padded.name = 0, f"padded_{op.inputs[0]}".encode()
            graph.tensors.extend([amounts_tensor, padded])
            pad = schema.OperatorT()
            pad.opcodeIndex = len(model.operatorCodes) - 1
            pad.inputs = np.array([op.inputs[0], len(graph.tensors) - 2], np.int32)
            pad.outputs = np.array([len(graph.tensors) - 1], np.int32)
            pad.builtinOptionsType, pad.builtinOptions = schema.BuiltinOptions.PadOptions, schema.PadOptionsT()
            rewritten.append(pad)
            op.inputs[0] = len(graph.tensors) - 1
            op.builtinOptions.padding = schema.Padding.VALID
        rewritten.append(op)
    graph.operators = rewritten
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))


def test_explicit_pad_like_keras_is_recognised_as_tf_same(tflite_dir, tmp_path, imported, image_sets):
    keras_style = tmp_path / "pad_valid.tflite"
    _pad_explicitly(tflite_dir / SMALL, keras_style, (0, 1, 0, 1))
    batch = image_sets(imported(SMALL).edgekit_config)[:1]
    # the rewritten file computes what the original does (so the test file is what it claims to be) ...
    np.testing.assert_array_equal(open_runtime(keras_style)(batch[0].inputs[:8]),
                                  open_runtime(tflite_dir / SMALL)(batch[0].inputs[:8]))
    # ... and imports to the same model
    model = edgekit.create_model("mobilenet_v1", weights=keras_style)
    assert model.edgekit_config.padding == "tf_same"
    for key, value in imported(SMALL).state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_padding_that_is_not_tf_same_is_refused(tflite_dir, tmp_path):
    symmetric = tmp_path / "pad_symmetric.tflite"
    _pad_explicitly(tflite_dir / SMALL, symmetric, (1, 1, 1, 1))
    with pytest.raises(EdgekitError, match=r"layer 0 \(features\.0\.0.*PAD \(1, 1, 1, 1\) \+ VALID.*TF SAME"):
        edgekit.create_model("mobilenet_v1", weights=symmetric)


@pytest.mark.slow
def test_reimports_a_float_tflite_converted_from_pytorch(imported, v1_fp32_bundle, tmp_path, capsys):
    """Our own float export of the small file (MEAN + FULLY_CONNECTED head, 1000 classes: litert-torch's layout,
    the session's bundle, conftest.v1_fp32_bundle) imports back to the same weights, with the preprocessing
    and labels the export recorded. Stripped of that metadata, its float input says nothing about
    preprocessing, and the import says so."""
    from edgekit.tflite_model import pack_model, unpack_model

    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stderr"]
    model = imported(SMALL)
    exported = v1_fp32_bundle["bundle"] / f"{model.edgekit_config.variant}.tflite"
    bare = unpack_model(exported.read_bytes())
    bare.metadata = None  # litert-torch's file as it leaves the converter: no metadata, no packed labels
    path = tmp_path / "mobilenet_v1_float.tflite"
    path.write_bytes(pack_model(bare))
    capsys.readouterr()

    recorded = edgekit.create_model("mobilenet_v1", weights=exported)
    cfg = recorded.edgekit_config
    assert (cfg.width, cfg.resolution, cfg.labels) == (0.25, 128, model.edgekit_config.labels)
    assert cfg.preprocessing == model.edgekit_config.preprocessing and "edgekit metadata" in cfg.weights.note
    assert "float input" not in capsys.readouterr().err

    again = edgekit.create_model("mobilenet_v1", weights=path)
    cfg = again.edgekit_config
    assert (cfg.width, cfg.resolution, cfg.num_classes, cfg.labels) == (0.25, 128, 1000, None)
    assert cfg.preprocessing.mean == (127.5,) * 3 and "float input" in cfg.weights.note
    assert "float input" in capsys.readouterr().err
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(recorded.state_dict()[key], value, rtol=1e-5, atol=1e-6)
