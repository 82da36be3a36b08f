"""Standard TFLite Metadata in every .tflite edgekit writes, read back by readers edgekit did not write: flatc turning the
entry into JSON with the schema itself, Python's zipfile for the associated labels file, MediaPipe's image classifier
(which reads the normalisation and the labels from the file with no code) and the LiteRT interpreter."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import V1_SMALL, V1_SMALL_VARIANT, _run_cli
from edgekit.errors import EdgekitError
from edgekit.exporters import onnx as onnx_exporter
from edgekit.exporters import tflite as tflite_exporter
from edgekit.tflite_metadata import (LABELS_FILE, METADATA_NAME, ModelFacts, add_standard_metadata,
                                     camera_bytes_exact, read_standard_metadata)
from edgekit.tflite_model import TFLiteModel

SCHEMA = Path(__file__).resolve().parents[1] / "edgekit" / "tflite_metadata_schema.fbs"
FP32 = f"{V1_SMALL_VARIANT}.tflite"
INT8 = f"{V1_SMALL_VARIANT}_int8.tflite"


def flatc_json(flat: bytes, tmp_path: Path) -> dict:
    """The TFLITE_METADATA entry as JSON, decoded by flatc from the schema file (not by edgekit's generated code)."""
    flatc = shutil.which("flatc") or str(Path(sys.executable).parent / "flatc")
    raw = TFLiteModel(flat).metadata[METADATA_NAME]
    (tmp_path / "entry.bin").write_bytes(raw)
    subprocess.run([flatc, "--json", "--raw-binary", "--strict-json", "--defaults-json", "-o", str(tmp_path),
                    str(SCHEMA), "--", str(tmp_path / "entry.bin")], check=True, capture_output=True)
    return json.loads((tmp_path / "entry.json").read_text())


def zipped(flat: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(flat)) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())  # readers need it stored
        return {name: archive.read(name) for name in archive.namelist()}


def input_quantization(path: Path) -> tuple[str, float, int]:
    """dtype, scale, zero point of the input, as LiteRT's interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    scale, zero = detail["quantization"]
    return np.dtype(detail["dtype"]).name, float(scale), int(zero)


@pytest.fixture(scope="module")
def bundle(v1_int8_bundle) -> Path:
    assert v1_int8_bundle["code"] == 0, v1_int8_bundle["stderr"][-2000:]
    return v1_int8_bundle["bundle"]


@pytest.fixture(scope="module")
def manifest_json(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.parametrize("name", [FP32, INT8])
def test_flatc_reads_the_standard_metadata(bundle, manifest_json, tmp_path, name):
    flat = (bundle / name).read_bytes()
    doc = flatc_json(flat, tmp_path)
    mean, std = manifest_json["preprocessing"]["mean"], manifest_json["preprocessing"]["std"]
    edgekit_entry = tflite_exporter.read_metadata(bundle / name)  # edgekit's own records are still there
    assert edgekit_entry["variant"] == V1_SMALL_VARIANT and edgekit_entry["preprocessing"]["mean"] == mean
    assert doc["name"] == V1_SMALL_VARIANT and doc["min_parser_version"] == "1.0.0"
    assert doc["version"] == f"weights sha256 {manifest_json['weights']['sha256'][:16]}"
    assert doc["author"] and doc["license"] and "1000 classes" in doc["description"]
    (sub,) = doc["subgraph_metadata"]
    (image,) = sub["input_tensor_metadata"]
    assert image["content"]["content_properties_type"] == "ImageProperties"
    assert image["content"]["content_properties"] == {"color_space": "RGB",
                                                      "default_size": {"width": 128, "height": 128}}
    (unit,) = image["process_units"]
    assert unit["options_type"] == "NormalizationOptions"
    # Google's MobileNet v1 reads the same on every channel: one value, as the schema allows
    assert len(set(mean)) == 1 and unit["options"] == {"mean": mean[:1], "std": std[:1]}
    (scores,) = sub["output_tensor_metadata"]
    (labels,) = scores["associated_files"]
    assert labels["type"] == "TENSOR_AXIS_LABELS" and labels["name"] == LABELS_FILE
    packed = zipped(flat)
    assert list(packed) == [LABELS_FILE]
    assert packed[LABELS_FILE].decode().splitlines() == (bundle / "labels.txt").read_text().splitlines()
    dtype, scale, zero = input_quantization(bundle / name)
    if name == INT8:
        # int8 input: the camera byte minus 128 is the input, so the float normalisation equals the quantization
        assert dtype == "int8" and image["stats"] == {"min": [-128.0], "max": [127.0]}
        assert zero == mean[0] - 128 and scale == pytest.approx(1 / std[0], rel=1e-6)
        assert "minus 128" in image["description"]
    else:
        # flatc prints 6 significant digits
        assert dtype == "float32" and image["stats"] == {"min": [pytest.approx(-mean[0] / std[0], rel=1e-5)],
                                                          "max": [pytest.approx((255 - mean[0]) / std[0], rel=1e-5)]}


def test_mediapipe_classifies_with_the_files_own_metadata(bundle, manifest_json, shared_data):
    """MediaPipe's image classifier takes nothing but the file: normalisation and labels come from its metadata.
    Fed a picture already at the input size, it must score exactly what LiteRT scores on edgekit's preprocessing."""
    import mediapipe as mp
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.python import BaseOptions, vision

    from edgekit.images import load_rgb, normalize, resize_and_crop
    from edgekit.types import Preprocessing

    path = bundle / FP32
    labels = (bundle / "labels.txt").read_text().splitlines()
    preprocessing = Preprocessing.from_dict(manifest_json["preprocessing"])
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for photo in ("cat.bmp", "parrot.jpg", "grace_hopper.bmp"):
            crop = np.ascontiguousarray(resize_and_crop(load_rgb(shared_data / "photos" / photo), 128, preprocessing))
            (top,) = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop)).classifications[0] \
                .categories
            logits = runner(image=np.moveaxis(normalize(crop, preprocessing), 0, -1)[None])["logits"][0]
            assert top.category_name == labels[int(np.argmax(logits))]
            assert top.score == pytest.approx(float(logits.max()), abs=1e-4)


def test_google_uint8_file_gets_edgekit_metadata_and_still_runs(shared_data, tmp_path):
    """A real uint8-input file (Google's): its metadata and labels replaced, the model itself untouched; MediaPipe
    feeds it the camera's bytes and finds edgekit's labels inside it."""
    import mediapipe as mp
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.python import BaseOptions, vision

    from edgekit.images import load_rgb, resize_and_crop
    from edgekit.types import Preprocessing

    original = shared_data / "tflite" / V1_SMALL
    labels = tuple(f"class {i}: {name}" for i, name in
                   enumerate((shared_data / "tflite" / "imagenet_labels_1001.txt").read_text().splitlines()))
    facts = ModelFacts(name="google_v1", description="test", version="1", author="Google", license="Apache-2.0",
                       labels=labels, mean=(128.0,), std=(128.0,))
    flat = add_standard_metadata(original.read_bytes(), facts)
    assert add_standard_metadata(flat, facts) == flat  # replaced, not added again; the same bytes every time
    path = tmp_path / "google.tflite"
    path.write_bytes(flat)
    doc = flatc_json(flat, tmp_path)
    (image,) = doc["subgraph_metadata"][0]["input_tensor_metadata"]
    assert image["stats"] == {"min": [0.0], "max": [255.0]} and "as they are" in image["description"]
    assert list(zipped(flat)) == [LABELS_FILE]  # Google's own imagenet_labels.txt replaced
    standard = read_standard_metadata(path)
    assert standard.camera_bytes and standard.input_dtype == "UINT8" and standard.labels == labels

    crop = np.ascontiguousarray(resize_and_crop(load_rgb(shared_data / "photos" / "cat.bmp"), 128,
                                                Preprocessing(mean=(128.0,) * 3, std=(128.0,) * 3)))
    outputs = []
    for model in (original, path):
        interpreter = Interpreter(model_path=str(model))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        (top,) = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop)).classifications[0] \
            .categories
    assert top.category_name == labels[int(np.argmax(outputs[1]))]


def test_camera_bytes_rule():
    """Raw bytes are the input only when quantize((p - mean) / std) gives back every byte p on every channel."""
    assert camera_bytes_exact((128.0,), (128.0,), "UINT8", 1 / 128, 128)
    assert camera_bytes_exact((128.0,), (128.0,), "INT8", 1 / 128, 0)
    assert not camera_bytes_exact((128.0,), (128.0,), "INT8", 1 / 128, 128)  # int8 needs the byte - 128
    assert not camera_bytes_exact((127.5,), (127.5,), "UINT8", 2 / 255, 128)  # half a step off: ties round
    imagenet_mean, imagenet_std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    assert not camera_bytes_exact(imagenet_mean, imagenet_std, "UINT8", 4.7579 / 255, 114)
    assert not camera_bytes_exact((128.0,), (128.0,), "FLOAT32", None, None)


def test_onnx_files_carry_the_same_facts(bundle, tmp_path):
    doc = flatc_json((bundle / FP32).read_bytes(), tmp_path)
    (unit,) = doc["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"]
    labels = (bundle / "labels.txt").read_text().splitlines()
    for name in (f"{V1_SMALL_VARIANT}.onnx", f"{V1_SMALL_VARIANT}_int8.onnx"):
        props = onnx_exporter.read_metadata(bundle / name)
        assert {key: props[f"model_{key}"] for key in ("name", "version", "author", "license", "description")} == \
            {key: doc[key] for key in ("name", "version", "author", "license", "description")}
        assert json.loads(props["normalization_mean"]) == unit["options"]["mean"]
        assert json.loads(props["normalization_std"]) == unit["options"]["std"]
        assert (props["image_width"], props["image_height"], props["color_space"]) == ("128", "128", "RGB")
        assert json.loads(props["labels"]) == labels


def test_files_without_or_with_damaged_metadata(bundle, tmp_path):
    flat = (bundle / FP32).read_bytes()
    model = TFLiteModel(flat)
    assert read_standard_metadata(flat, FP32) is not None
    bare = tmp_path / "bare.tflite"
    from edgekit.tflite_model import pack_model, unpack_model

    unpacked = unpack_model(flat)
    unpacked.metadata = [m for m in unpacked.metadata if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    bare.write_bytes(pack_model(unpacked))
    assert read_standard_metadata(bare) is None
    damaged = bytearray(flat)
    raw = model.metadata[METADATA_NAME]
    start = bytes(flat).index(raw)
    damaged[start + 4:start + 8] = b"XXXX"  # the schema's file identifier
    with pytest.raises(EdgekitError, match="is not TFLite Metadata; export the file again"):
        read_standard_metadata(bytes(damaged), "damaged.tflite")
    no_zip = tmp_path / "no_zip.tflite"
    no_zip.write_bytes(flat[:flat.rindex(b"PK\x03\x04")])  # the appended labels cut off
    with pytest.raises(EdgekitError, match="names the associated file labels.txt, which the file does not hold"):
        read_standard_metadata(no_zip)
    facts = ModelFacts("m", "d", "1", "a", "l", ("one\ntwo",) * 1000, (128.0,), (128.0,))
    with pytest.raises(EdgekitError, match="a label holds a line break"):
        add_standard_metadata(flat, facts)


@pytest.mark.slow
def test_uint8_export_feeds_camera_bytes(shared_data, tmp_path):
    """The Android recipe: int8 with uint8 camera input from Google's weights. MediaPipe feeds the raw bytes
    (it skips the normalisation for uint8), and that must be what the file expects."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from edgekit.images import load_rgb, resize_and_crop
    from edgekit.types import Preprocessing

    result = _run_cli(["export", "mobilenet_v1", "--weights", str(shared_data / "tflite" / V1_SMALL), "--int8",
                       "--io-dtype", "uint8", "--formats", "tflite", "--calib", str(shared_data / "photos"),
                       "--out", str(tmp_path), "--parity-samples", "4", "--latency-runs", "0"])
    assert result["code"] == 0, result["stderr"][-2000:]
    path = tmp_path / V1_SMALL_VARIANT / INT8
    dtype, scale, zero = input_quantization(path)
    assert (dtype, scale, zero) == ("uint8", 1 / 128, 128)
    standard = read_standard_metadata(path)
    assert standard.camera_bytes and (standard.mean, standard.std) == ((128.0,), (128.0,))
    labels = (tmp_path / V1_SMALL_VARIANT / "labels.txt").read_text().splitlines()
    crop = np.ascontiguousarray(resize_and_crop(load_rgb(shared_data / "photos" / "cat.bmp"), 128,
                                                Preprocessing(mean=(128.0,) * 3, std=(128.0,) * 3)))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
    interpreter.invoke()
    scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        (top,) = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop)).classifications[0] \
            .categories
    assert top.category_name == labels[int(np.argmax(scores))]
    report = (tmp_path / V1_SMALL_VARIANT / "report.md").read_text()
    assert "input.put(value.toByte())" in report and "feed the camera's bytes as they are" in report
