"""Calibration sets and the int8 entry points' input checks: real image files, no model conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.images import preprocess_file
from edgekit.quantize.calibration import CalibrationSet, input_range
from edgekit.types import IMAGENET_PREPROCESSING, Preprocessing

TF_PIXELS = Preprocessing(mean=(128.0,) * 3, std=(128.0,) * 3)


@pytest.fixture()
def image_tree(tmp_path, shared_data) -> Path:
    """Real photos of every accepted suffix, nested two levels deep, plus files that are not images."""
    root = tmp_path / "calib"
    photos = sorted((shared_data / "photos").iterdir())
    (root / "a" / "b").mkdir(parents=True)
    shutil.copy(photos[0], root / "a" / "b" / photos[0].name)  # .bmp
    shutil.copy(next(p for p in photos if p.suffix == ".jpg"), root / "a" / "photo.JPG")
    from PIL import Image

    Image.open(photos[1]).save(root / "converted.png")
    shutil.copy(next(p for p in photos if p.suffix == ".jpg"), root / "photo.jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_from_folder_reads_recursively_and_preprocesses_like_edgekit_images(image_tree):
    calib = CalibrationSet.from_folder(image_tree, IMAGENET_PREPROCESSING, 96, samples=100)
    assert len(calib) == 4
    assert calib.nchw.shape == (4, 3, 96, 96) and calib.nchw.dtype == np.float32
    assert calib.batches is calib.nchw
    assert calib.nhwc.shape == (4, 96, 96, 3)
    np.testing.assert_array_equal(calib.nhwc[0], np.moveaxis(calib.nchw[0], 0, -1))
    for array, path in zip(calib.nchw, calib.files):
        np.testing.assert_array_equal(array, preprocess_file(path, 96, IMAGENET_PREPROCESSING))
    record = calib.to_dict()
    assert record["samples"] == 4 and record["skipped"] == 0 and record["builtin"] is False
    assert record["source"] == str(image_tree)


def test_samples_limit_is_reproducible_and_spread(shared_data):
    folder = shared_data / "imagenet-samples" / "images"
    first = CalibrationSet.from_folder(folder, TF_PIXELS, 32, samples=8)
    again = CalibrationSet.from_folder(folder, TF_PIXELS, 32, samples=8)
    assert len(first) == 8 and first.files == again.files
    # a seeded shuffle, not the first 8 files of a folder sorted by class
    assert first.files != sorted(folder.iterdir())[:8]


def test_unreadable_images_are_counted_skipped_and_reported(image_tree, capsys):
    (image_tree / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (image_tree / "a" / "empty.png").write_bytes(b"")
    calib = CalibrationSet.from_folder(image_tree, TF_PIXELS, 64, samples=100)
    assert len(calib) == 4
    assert len(calib.skipped) == 2 and calib.to_dict()["skipped"] == 2
    assert "skipped 2 unreadable" in capsys.readouterr().err


def test_folder_without_a_usable_image_is_one_line_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    (bad / "y.png").write_bytes(b"more garbage")
    with pytest.raises(EdgekitError) as e:
        CalibrationSet.from_folder(bad, TF_PIXELS, 64, samples=10)
    assert "none of the 2 images" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("make", ["empty", "only_text", "missing"])
def test_empty_or_missing_folder_is_an_error(tmp_path, make):
    folder = tmp_path / "calib"
    if make != "missing":
        folder.mkdir()
    if make == "only_text":
        (folder / "readme.txt").write_text("no pictures here")
    with pytest.raises(EdgekitError) as e:
        CalibrationSet.from_folder(folder, TF_PIXELS, 64, samples=10)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)


def test_zero_samples_is_an_error(image_tree):
    with pytest.raises(EdgekitError, match="at least 1"):
        CalibrationSet.from_folder(image_tree, TF_PIXELS, 64, samples=0)


def test_builtin_photos_warn_that_own_data_calibrates_better(capsys):
    from edgekit.sample_images import sample_image_paths

    calib = CalibrationSet.builtin(TF_PIXELS, 64, samples=100)
    assert len(calib) == len(sample_image_paths()) and calib.from_builtin_photos
    assert calib.to_dict()["builtin"] is True
    assert "--calib" in capsys.readouterr().err
    assert len(CalibrationSet.builtin(TF_PIXELS, 64, samples=3)) == 3


def test_input_range_puts_uint8_grid_on_pixels():
    """mean = std = 128 (Google's MobileNets): the range is [-1, 127/128], so scale 1/128, zero point 128."""
    calib = CalibrationSet(np.zeros((1, 3, 8, 8), np.float32), "test", [], TF_PIXELS, 8)
    low, high = input_range(calib)
    assert (low, high) == (-1.0, 127 / 128)
    assert (high - low) / 255 == 1 / 128
    # ImageNet's per-channel statistics: the range must cover every channel's extremes
    calib = CalibrationSet(np.zeros((1, 3, 8, 8), np.float32), "test", [], IMAGENET_PREPROCESSING, 8)
    low, high = input_range(calib)
    assert low == pytest.approx(-123.675 / 58.395) and high == pytest.approx((255 - 103.53) / 57.375)


def test_quantizers_reject_bad_arguments_with_one_line(tmp_path, image_tree):
    from edgekit.quantize.onnx_int8 import quantize_onnx
    from edgekit.quantize.tflite_int8 import integer_report, quantize_tflite

    calib = CalibrationSet.from_folder(image_tree, TF_PIXELS, 32, samples=2)
    cases = [
        (lambda: quantize_onnx(tmp_path / "missing.onnx", tmp_path / "o.onnx", calib), "does not exist"),
        (lambda: quantize_onnx(tmp_path / "missing.onnx", tmp_path / "o.onnx", calib, method="kl"), "minmax"),
        (lambda: quantize_onnx(tmp_path / "m.onnx", tmp_path / "o.onnx", calib, activation_type="fp8"), "uint8"),
        (lambda: quantize_tflite(tmp_path / "missing.tflite", tmp_path / "o.tflite", calib), "does not exist"),
        (lambda: quantize_tflite(tmp_path / "m.tflite", tmp_path / "o.tflite", calib, io_dtype="int4"), "uint8"),
    ]
    for call, fragment in cases:
        with pytest.raises(EdgekitError) as e:
            call()
        assert fragment in str(e.value) and "\n" not in str(e.value)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(EdgekitError, match="not a TFLite model"):
        quantize_tflite(corrupt, tmp_path / "o.tflite", calib)
    with pytest.raises(EdgekitError, match="not a TFLite model"):
        integer_report(corrupt)
    assert not (tmp_path / "o.tflite").exists() and not (tmp_path / "o.onnx").exists()


def test_unreadable_model_files_are_one_line_errors(tmp_path, image_tree):
    from edgekit.quantize.onnx_int8 import quantize_onnx

    calib = CalibrationSet.from_folder(image_tree, TF_PIXELS, 32, samples=2)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage that is not a protobuf model")
    with pytest.raises(EdgekitError) as e:
        quantize_onnx(garbage, tmp_path / "o.onnx", calib)
    assert "garbage.onnx" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "o.onnx").exists()


ACTIVATION_SHAPES = {  # how activations spread, as the calibrator's histograms see them
    "bell": lambda rng, shape: rng.normal(size=shape),
    "relu6": lambda rng, shape: np.clip(rng.normal(1.0, 3.0, size=shape), 0.0, 6.0),
    "heavy_tails": lambda rng, shape: rng.standard_cauchy(size=shape),
    "mostly_zero": lambda rng, shape: rng.normal(size=shape) * (rng.random(shape) < 0.02),
    "all_positive": lambda rng, shape: rng.exponential(size=shape) + 3.0,
}


@pytest.mark.parametrize("bins, levels, shapes", [
    (300, 128, list(ACTIVATION_SHAPES)),  # bin counts that do not merge evenly into the levels
    pytest.param(513, 128, list(ACTIVATION_SHAPES), marks=pytest.mark.slow),
    pytest.param(2048, 256, ["relu6", "heavy_tails"], marks=pytest.mark.slow),  # edgekit's; ORT's search: ~1.5 s each
])
def test_entropy_search_chooses_onnx_runtimes_thresholds(bins, levels, shapes):
    """quantize/entropy_threshold.py against ONNX Runtime's own HistogramCollector.get_entropy_threshold, on the
    histograms ORT's collector builds over two calibration batches (the second widens the first's range)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from edgekit.quantize.entropy_threshold import entropy_threshold, faster_entropy

    rng = np.random.default_rng(0)
    collector = HistogramCollector(method="entropy", symmetric=False, num_bins=bins, num_quantized_bins=levels,
                                   percentile=99.999, scenario="same")
    for scale in (1.0, 1.5):
        collector.collect({name: [(scale * ACTIVATION_SHAPES[name](rng, (4, 16, 12, 12))).astype(np.float32)]
                           for name in shapes})
    for name, histogram in collector.histogram_dict.items():
        theirs = collector.get_entropy_threshold(histogram, levels)
        ours = entropy_threshold(histogram, levels)
        assert [(np.asarray(t).dtype, t.item()) for t in ours] == [(np.asarray(t).dtype, t.item()) for t in theirs], \
            name
        assert histogram[2] <= ours[0] < ours[1] <= histogram[3], name
    faster_entropy(collector)  # the quantizer installs it on its collector: same ranges, from the one search
    assert collector.get_entropy_threshold is entropy_threshold
