"""Real int8 judged on real weights and real images.

Google's ImageNet MobileNet v2 1.0/224 and v1 0.25/128 files are imported into edgekit models, exported to
fp32 ONNX and TFLite with edgekit's exporters (`edgekit export`, once per test session, tests/conftest.py), and
quantized once per model (module fixture). Calibration
uses the 9 everyday photos plus every 5th of the 250 shared ImageNet images (50); the other 200 are scored,
so no scored image set a range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edgekit.images import preprocess_file, read_labelled_set
from edgekit.parity import compare
from edgekit.quantize.calibration import CalibrationSet
from edgekit.parity import KERNEL_TOLERANCE, kernel_check
from edgekit.quantize.onnx_int8 import quantize_onnx
from edgekit.quantize.onnx_saturation import INT16_MAX, LayerLimit
from edgekit.quantize.tflite_int8 import REQUIRED_INT8_OPS, integer_report, quantize_tflite
from edgekit.runtimes import open_runtime
from edgekit.tflite_model import TFLiteModel

pytestmark = pytest.mark.slow  # MobileNet v2 at 224 quantized twice, 200-image scoring

MODELS = {
    "mobilenet_v2_1.0_224": ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite", None, None),
    "mobilenet_v1_0.25_128": ("mobilenet_v1", "mobilenet_v1_0.25_128_quant.tflite", 0.25, 128),
}
CALIBRATION_STRIDE = 5  # every 5th ImageNet image calibrates, the rest are scored
MAX_TOP1_DROP = 0.02  # issue 5: int8 top-1 within 2 points of the fp32 PyTorch model


@dataclass
class Quantized:
    name: str
    fp32: dict[str, Path]
    int8: dict[str, Path]
    inputs: np.ndarray  # scored images, NCHW
    labels: np.ndarray
    reference: np.ndarray  # PyTorch fp32 logits on ``inputs``
    calibration: CalibrationSet
    limits: list[LayerLimit]  # what the int8 ONNX did against 16-bit saturation, per layer
    scored: dict[str, np.ndarray] = field(default_factory=dict)

    def outputs(self, fmt: str) -> np.ndarray:
        """The int8 file's outputs on every scored image with the host's kernels: run once, read by each test."""
        if fmt not in self.scored:
            self.scored[fmt] = open_runtime(self.int8[fmt])(self.inputs)
        return self.scored[fmt]


# The fp32 files come from the session's export bundles (tests/conftest.py), which test_export.py and
# test_validate.py check: the same exporters, called the same way, so they are not exported a second time here.
FP32_BUNDLES = {"mobilenet_v2_1.0_224": "v2_fp16_export", "mobilenet_v1_0.25_128": "v1_fp32_bundle"}
# v2's PyTorch outputs on the 250 images come from the session's one pass (conftest.v2_imagenet_logits, which
# test_tflite_import.py reads too); v1 0.25/128 is cheap enough to run here
SHARED_REFERENCE = {"mobilenet_v2_1.0_224": "v2_imagenet_logits"}


def _fp32_files(export: dict, variant: str) -> dict[str, Path]:
    paths = {fmt: export["bundle"] / f"{variant}.{fmt}" for fmt in ("onnx", "tflite")}
    assert export["code"] in (0, 1) and all(p.exists() for p in paths.values()), export["stdout"] + export["stderr"]
    return paths


@pytest.fixture(scope="module")
def build(shared_data, tmp_path_factory, request):
    """Quantize each model once for the whole module, whichever test asks first."""
    cache: dict[str, Quantized] = {}

    def get(key: str) -> Quantized:
        if key not in cache:
            shared = request.getfixturevalue(SHARED_REFERENCE[key]) if key in SHARED_REFERENCE else None
            cache[key] = _build(key, shared_data, tmp_path_factory, request.getfixturevalue(FP32_BUNDLES[key]),
                                shared)
        return cache[key]

    return get


@pytest.fixture(scope="module", params=list(MODELS))
def quantized(request, build) -> Quantized:
    return build(request.param)


@pytest.fixture(scope="module")
def mobilenet_v1(build) -> Quantized:
    return build("mobilenet_v1_0.25_128")


def _build(key: str, shared_data: Path, tmp_path_factory, export: dict, all_logits: np.ndarray | None) -> Quantized:
    import torch

    import edgekit

    name, weights_file, width, resolution = MODELS[key]
    model = edgekit.create_model(name, weights=shared_data / "tflite" / weights_file, width=width,
                                 resolution=resolution)
    config = model.edgekit_config
    folder = tmp_path_factory.mktemp(key)
    fp32 = _fp32_files(export, config.variant)

    items = read_labelled_set(shared_data / "imagenet-samples" / "labels.csv")
    calibration_items = items[::CALIBRATION_STRIDE]
    scored = [item for i, item in enumerate(items) if i % CALIBRATION_STRIDE]
    calibration = CalibrationSet.from_files(
        sorted((shared_data / "photos").iterdir()) + [item.path for item in calibration_items],
        config.preprocessing, config.resolution, source="photos + every 5th ImageNet sample")
    int8 = {"onnx": folder / "int8.onnx", "tflite": folder / "int8.tflite"}
    limits = quantize_onnx(fp32["onnx"], int8["onnx"], calibration)
    quantize_tflite(fp32["tflite"], int8["tflite"], calibration)

    inputs = np.stack([preprocess_file(item.path, config.resolution, config.preprocessing) for item in scored])
    if all_logits is not None:  # PyTorch's outputs on every image, in labels.csv order
        reference = all_logits[[i for i in range(len(items)) if i % CALIBRATION_STRIDE]]
    else:
        with torch.inference_mode():
            reference = torch.cat([model(torch.from_numpy(chunk)) for chunk in np.array_split(inputs, 4)]).numpy()
    return Quantized(key, fp32, int8, inputs, np.array([item.label for item in scored]), reference,
                     calibration, limits)


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_int8_top1_within_two_points_of_pytorch(quantized, fmt):
    fp32_top1 = _top1(quantized.reference, quantized.labels)
    int8_top1 = _top1(quantized.outputs(fmt), quantized.labels)
    assert len(quantized.labels) == 200
    assert fp32_top1 - int8_top1 <= MAX_TOP1_DROP, (
        f"{quantized.name} int8 {fmt}: top-1 {int8_top1:.3f} vs fp32 PyTorch {fp32_top1:.3f}")


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_int8_parity_on_real_images(quantized, fmt):
    """Floors under the figures measured on these images (README, int8 section): v2 cosine mean 0.991,
    PSNR 39 dB, top-1 agreement 98%; v1 0.25/128 (a 45%-accurate model, many near-ties) 0.994, 36.5 dB, 87%."""
    metrics = compare(quantized.reference, quantized.outputs(fmt))
    assert metrics.cosine_mean >= 0.98
    assert metrics.psnr_db >= 33.0
    assert metrics.top1_agreement >= 0.8
    assert metrics.top5_agreement >= 0.8


MAX_TOP1_DROP_V2 = 0.01  # issue 9: MobileNet v2 int8 ONNX top-1 within 1 point of fp32, on any CPU
MIN_COSINE_V2 = 0.985


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_int8_computes_the_same_on_this_cpu_as_on_the_reference_path(quantized, fmt):
    """The host's int8 kernels (whatever this CPU is: AVX2 only, AVX-512, VNNI, AMX) agree with the runtime's
    portable reference path (ONNX: QDQ computed in float; TFLite: LiteRT's reference kernels). Measured on an AMD
    EPYC with AVX2 only: ONNX 47.9 dB / TFLite 45.5 dB; the ONNX file before the per-channel limit: 30.2 dB."""
    # 20 images, as many as an export's parity pictures: LiteRT's reference kernels are slow at 224
    check = kernel_check(quantized.int8[fmt], fmt, quantized.inputs[:20], quantized.reference[:20],
                         quantized.outputs(fmt)[:20])
    assert not KERNEL_TOLERANCE.failures(check.host_kernels), check
    assert check.finding is None


def test_int8_onnx_meets_the_issue_goals_on_this_cpu(build):
    """MobileNet v2 with Google's weights, 200 held-out images, this host's ONNX Runtime kernels: cosine >= 0.985
    and top-1 within 1 point of fp32. Measured on an AMD EPYC (AVX2 only): cosine 0.9908, top-1 94.0% vs 93.0%;
    the file made without the per-channel limit: 0.932 and 88.5%."""
    quantized = build("mobilenet_v2_1.0_224")
    outputs = quantized.outputs("onnx")
    metrics = compare(quantized.reference, outputs)
    assert metrics.cosine_mean >= MIN_COSINE_V2
    assert _top1(quantized.reference, quantized.labels) - _top1(outputs, quantized.labels) <= MAX_TOP1_DROP_V2


def test_saturation_limit_is_recorded_per_layer(quantized):
    import onnx

    limits = quantized.limits
    model = onnx.load(str(quantized.int8["onnx"]))
    depthwise = [n for n in model.graph.node if n.op_type == "Conv" and
                 any(a.name == "group" and a.i > 1 for a in n.attribute)]
    convs_and_gemms = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    # every Conv and Gemm but the depthwise ones (MLAS's depthwise kernel accumulates in int32)
    assert len(limits) == len(convs_and_gemms) - len(depthwise) > 10
    assert {r.kind for r in limits} == {"spatial", "pointwise", "matmul"}
    for record in limits:
        assert record.pair_sum_after <= INT16_MAX, record
        assert 1 <= record.min_levels <= 127 and 0 <= record.channels_limited <= record.channels
        assert (record.channels_limited > 0) == (record.pair_sum_before > INT16_MAX)
    # the first convolution reads raw pixels (up to 255) with weights up to 127: it must be limited
    assert limits[0].kind == "spatial" and INT16_MAX < limits[0].pair_sum_before <= 2 * 255 * 127
    assert limits[0].channels_limited
    record = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])["saturation"]
    assert record["channels_limited"] == sum(r.channels_limited for r in limits) > 0
    assert record["int16_pair_sum_limit"] == INT16_MAX


def test_kernel_disagreement_names_what_the_cpu_lacks(mobilenet_v1, monkeypatch):
    """A host whose kernels disagree (stood in for by damaged outputs, so this runs the same on every CPU) gets a
    one-line finding naming the CPU and, where it has no 8-bit dot product, the missing feature."""
    import edgekit.parity as parity

    inputs, reference = mobilenet_v1.inputs[:8], mobilenet_v1.reference[:8]
    path = mobilenet_v1.int8["onnx"]
    host = open_runtime(path)(inputs)
    damaged = host + np.random.default_rng(0).normal(0, float(np.abs(host).max()) * 0.05, host.shape)
    avx2 = {"vendor": "AuthenticAMD", "model": "AMD EPYC", "arch": "x86_64", "features": ["avx2"],
            "int8_dot_product": False}
    monkeypatch.setattr(parity, "host_cpu", lambda: avx2)
    assert kernel_check(path, "m_int8.onnx", inputs, reference, host).finding is None
    finding = kernel_check(path, "m_int8.onnx", inputs, reference, damaged).finding
    assert finding.startswith("m_int8.onnx: ONNX Runtime's int8 kernels on AMD EPYC (x86_64: avx2) disagree with "
                              "ORT float QDQ")
    assert "no AVX-VNNI, AVX512-VNNI or AMX" in finding and "\n" not in finding
    vnni = avx2 | {"model": "Intel Xeon", "features": ["avx2", "avx512f", "avx512_vnni"], "int8_dot_product": True}
    monkeypatch.setattr(parity, "host_cpu", lambda: vnni)
    finding = kernel_check(path, "m_int8.onnx", inputs, reference, damaged).finding
    assert "Intel Xeon (x86_64: avx2, avx512f, avx512_vnni)" in finding and "saturate" not in finding
    assert "rounding step" in finding
    # XNNPACK sums 8-bit products in 32 bits: a TFLite disagreement is rounding, even without VNNI
    monkeypatch.setattr(parity, "host_cpu", lambda: avx2)
    tflite = mobilenet_v1.int8["tflite"]
    host = open_runtime(tflite)(inputs)
    damaged = host + np.random.default_rng(0).normal(0, float(np.abs(host).max()) * 0.05, host.shape)
    finding = kernel_check(tflite, "m_int8.tflite", inputs, reference, damaged).finding
    assert finding.startswith("m_int8.tflite: LiteRT's XNNPACK kernels on AMD EPYC (x86_64: avx2) disagree with "
                              "LiteRT reference kernels")
    assert "rounding step" in finding and "not saturation" in finding and "VNNI" not in finding


def test_tflite_is_fully_integer_and_small(quantized):
    report = integer_report(quantized.int8["tflite"])
    assert report["fully_integer"], report["problems"]
    assert report["float_ops"] == [] and report["edge_conversions"] == []
    counts = report["required_int8_ops"]
    assert counts["CONV_2D"] > 10 and counts["DEPTHWISE_CONV_2D"] > 10 and counts["FULLY_CONNECTED"] == 1
    if quantized.name.startswith("mobilenet_v2"):
        assert counts["ADD"] == 10  # every residual add, none left in float
    model = TFLiteModel.from_file(quantized.int8["tflite"])
    for op in model.operators:
        if op.opcode in REQUIRED_INT8_OPS:
            tensors = [model.tensors[i] for i in op.inputs + op.outputs if i >= 0]
            assert {t.dtype for t in tensors} <= {"INT8", "INT32"}, op
    (source,) = report["inputs"]
    assert source["dtype"] == "int8" and source["shape"][-1] == 3
    # mean = std = 128: the int8 input is pixel - 128 exactly (scale 1/128, zero point 0)
    assert source["scale"] == pytest.approx(1 / 128) and source["zero_point"] == 0
    ratio = quantized.int8["tflite"].stat().st_size / quantized.fp32["tflite"].stat().st_size
    # tiny models carry fixed overhead (tensor names, labels, per-channel parameters): 0.33 for v1 0.25/128
    assert ratio <= (0.3 if quantized.name.startswith("mobilenet_v2") else 0.35), ratio


def test_tflite_keeps_metadata_and_runner_reads_quantization(quantized):
    from edgekit.exporters.tflite import read_metadata
    from edgekit.runtimes import TFLiteRunner

    assert read_metadata(quantized.int8["tflite"]) == read_metadata(quantized.fp32["tflite"])
    record = json.loads(TFLiteModel.from_file(quantized.int8["tflite"]).metadata["edgekit_quantization"])
    assert record["calibration_samples"] == len(quantized.calibration) and record["io_dtype"] == "int8"
    runner = TFLiteRunner(quantized.int8["tflite"])
    assert runner.inputs[0].dtype == "int8" and runner.inputs[0].scale == pytest.approx(1 / 128)
    assert runner.outputs[0].dtype == "int8" and runner.outputs[0].scale > 0


def test_dead_channels_keep_their_bias(quantized):
    """Channels whose weights are all zero output act(bias); ai-edge-quantizer saturates their int32 bias
    (MobileNet v2's first convolution has 8 such channels) and edgekit repairs it."""
    fp32 = TFLiteModel.from_file(quantized.fp32["tflite"])
    int8 = TFLiteModel.from_file(quantized.int8["tflite"])
    fp32_ops = {fp32.tensors[op.outputs[0]].name: op for op in fp32.operators}
    checked = 0
    for op in int8.operators:
        if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        weight, bias = int8.tensors[op.inputs[1]], int8.tensors[op.inputs[2]]
        axis = weight.quantization.axis
        dead = np.flatnonzero(np.abs(np.moveaxis(weight.data, axis, 0).reshape(weight.shape[axis], -1)).max(1) == 0)
        if not dead.size:
            continue
        float_bias = fp32.tensors[fp32_ops[int8.tensors[op.outputs[0]].name].inputs[2]].data
        np.testing.assert_allclose(bias.dequantized()[dead], float_bias[dead],
                                   atol=float(bias.quantization.scale.max()))
        checked += dead.size
    if quantized.name.startswith("mobilenet_v2"):
        assert checked >= 8


def test_onnx_is_static_qdq_with_per_channel_int8_weights(quantized):
    import onnx

    model = onnx.load(str(quantized.int8["onnx"]))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # never dynamic quantization under the int8 name
    assert not ops & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        activation_dq, weight_dq = producers[conv.input[0]], producers[conv.input[1]]
        assert weight_dq.op_type == activation_dq.op_type == "DequantizeLinear"
        weight = initializers[weight_dq.input[0]]
        assert weight.data_type == onnx.TensorProto.INT8
        assert len(onnx.numpy_helper.to_array(initializers[weight_dq.input[1]]).shape) == 1  # per channel
        zero_point = initializers[activation_dq.input[2]]
        assert zero_point.data_type == onnx.TensorProto.UINT8  # U8S8, the fast pair here
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["model"] == MODELS[quantized.name][0]  # the fp32 file's metadata survives
    assert json.loads(metadata["quantization"])["calibration_samples"] == len(quantized.calibration)
    assert len(quantized.calibration) == 59


def test_io_dtypes_give_the_same_results(mobilenet_v1, tmp_path):
    """uint8 I/O is what a camera hands over: same scale, zero point + 128 (for these weights: the raw pixel
    bytes, scale 1/128 and zero point 128, like Google's own files); float32 I/O converts at the edges only."""
    quantized = mobilenet_v1
    calibration = quantized.calibration
    outputs = {"int8": open_runtime(quantized.int8["tflite"])(quantized.inputs[:24])}
    for io_dtype in ("uint8", "float32"):
        path = tmp_path / f"{io_dtype}.tflite"
        quantize_tflite(quantized.fp32["tflite"], path, calibration, io_dtype=io_dtype)
        report = integer_report(path)
        assert report["fully_integer"], report["problems"]
        assert report["inputs"][0]["dtype"] == report["outputs"][0]["dtype"] == io_dtype
        edges = [(e["opcode"], e["from"], e["to"]) for e in report["edge_conversions"]]
        if io_dtype == "uint8":
            assert report["inputs"][0]["scale"] == pytest.approx(1 / 128)
            assert report["inputs"][0]["zero_point"] == 128
            assert edges == [("QUANTIZE", "UINT8", "INT8"), ("QUANTIZE", "INT8", "UINT8")]
        else:
            assert report["inputs"][0]["scale"] is None
            assert edges == [("QUANTIZE", "FLOAT32", "INT8"), ("DEQUANTIZE", "INT8", "FLOAT32")]
        outputs[io_dtype] = open_runtime(path)(quantized.inputs[:24])
    np.testing.assert_array_equal(outputs["uint8"], outputs["int8"])
    np.testing.assert_allclose(outputs["float32"], outputs["int8"], atol=1e-6)


def test_integer_report_flags_float_and_uint8_files(mobilenet_v1, shared_data):
    fp32 = integer_report(mobilenet_v1.fp32["tflite"])
    assert not fp32["fully_integer"]
    assert {op["opcode"] for op in fp32["float_ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    # Google's TF1 file is integer, but uint8 per-tensor: not the int8 this issue asks for
    google = integer_report(shared_data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite")
    assert not google["fully_integer"] and google["float_ops"] == []
    assert any("CONV_2D" in p and "UINT8" in p for p in google["problems"])


def _small_onnx(path: Path, resolution: int) -> None:
    """Conv-ReLU-Conv-ReLU-pool-Gemm with seeded weights: a graph with few activations, because the entropy
    search costs about a quarter of a second per activation tensor whatever the network (ORT's own: 1.5 s)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
               "w2": rng.normal(0, 0.3, (16, 8, 3, 3)), "b2": rng.normal(0, 0.1, 16),
               "fc": rng.normal(0, 0.3, (10, 16)), "fcb": np.zeros(10)}
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, resolution, resolution])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs; the onnx package's newest IR is beyond ONNX Runtime 1.31
    onnx.save(model, str(path))


def test_histogram_methods_really_differ_from_minmax(tmp_path, shared_data):
    """ORT 1.31's quantize_static gives Entropy as many bins as quantized bins, which makes it byte-identical
    to MinMax; edgekit builds the calibrator with 2048 bins. This checks the mechanism, not accuracy."""
    import onnx

    from edgekit.types import IMAGENET_PREPROCESSING

    fp32 = tmp_path / "small.onnx"
    _small_onnx(fp32, 48)
    calibration = CalibrationSet.from_folder(shared_data / "imagenet-samples" / "images", IMAGENET_PREPROCESSING,
                                             48, 32)

    def activation_scales(path: Path) -> dict[str, float]:
        graph = onnx.load(str(path)).graph
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1}

    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        quantize_onnx(fp32, tmp_path / f"{method}.onnx", calibration, method=method)
        scales[method] = activation_scales(tmp_path / f"{method}.onnx")
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    hidden = [k for k in scales["minmax"] if k not in ("image", "logits")]
    assert len(hidden) >= 3
    for method in ("entropy", "percentile"):
        # histogram methods clip tails: never wider than min/max, narrower somewhere
        assert all(scales[method][k] <= scales["minmax"][k] * 1.0001 for k in hidden), method
        assert any(scales[method][k] < scales["minmax"][k] * 0.999 for k in hidden), method
        # the input keeps the pixel grid and the output its full range, whatever the method
        for k in ("image", "logits"):
            assert scales[method].get(k, 0) == pytest.approx(scales["minmax"].get(k, 0)), (method, k)


def test_untrained_network_loads_in_litert_reference_kernels(tmp_path, shared_data):
    """Random weights on purpose: this is about a file LiteRT accepts, not its quality. An untrained MobileNet
    v2 shrinks its activations to ~1e-11, where 6 / scale of a fused RELU6 overflows int32 and LiteRT's
    reference kernels (which the per-layer comparison needs) refused the file; XNNPACK ran it."""
    import edgekit
    from edgekit.exporters.common import edgekit_metadata, export_ready
    from edgekit.exporters.tflite import torch_to_tflite
    from edgekit.layerwise import compare_layers
    from edgekit.quantize.tflite_int8 import QUANTIZATION_METADATA

    model = edgekit.create_model("mobilenet_v2", weights="random", resolution=96)
    config = model.edgekit_config
    fp32, int8 = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    metadata = edgekit_metadata(config, tuple(f"class_{i}" for i in range(config.num_classes)))
    torch_to_tflite(export_ready(model, config.resolution), fp32, resolution=config.resolution, metadata=metadata)
    calibration = CalibrationSet.from_folder(shared_data / "photos", config.preprocessing, config.resolution, 4)
    quantize_tflite(fp32, int8, calibration)

    from ai_edge_litert.schema_py_generated import ActivationFunctionType

    quantized = TFLiteModel.from_file(int8)
    tiny = {t.index for t in quantized.tensors
            if t.data is None and t.dtype == "INT8" and 6.0 / float(t.quantization.scale[0]) > 2.0**31}
    assert tiny, "the untrained network no longer produces the tiny scales this test is about"
    fused = {op.outputs[0]: getattr(op.options, "fusedActivationFunction", None) for op in quantized.operators}
    relaxed = [i for i in tiny if fused.get(i) == ActivationFunctionType.RELU]
    assert relaxed and all(fused.get(i) != ActivationFunctionType.RELU6 for i in tiny)
    # only those ops changed (the fp32 file fuses RELU6 everywhere), and the metadata says how many
    changed = sum(fused.get(i) == ActivationFunctionType.RELU for i in fused)
    assert len(relaxed) <= changed == json.loads(quantized.metadata[QUANTIZATION_METADATA])["relu6_as_relu"]
    assert all(getattr(op.options, "fusedActivationFunction", None) != ActivationFunctionType.RELU
               for op in TFLiteModel.from_file(fp32).operators)
    assert integer_report(quantized)["fully_integer"]
    report = compare_layers(int8, fp32, calibration.nchw[:2])  # LiteRT's reference kernels, every tensor kept
    assert len(report.layers) >= 60 and report.output.cosine > 0.99
