"""Parity metrics, gates and inputs: the figures `edgekit export` and `edgekit validate` report and gate on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.parity import (DEFAULT_GATES, GateTable, ParityGates, ParityMetrics, ParityResult, build_inputs,
                            compare, is_gated, is_real, spread)
from edgekit.sample_images import SAMPLE_PHOTOS, licence_of, sample_image_paths
from edgekit.types import IMAGENET_PREPROCESSING, Preprocessing


def _logits(n=6, classes=20, seed=0):
    return np.random.default_rng(seed).normal(0, 3, size=(n, classes)).astype(np.float32)


def test_identical_outputs_are_exact():
    ref = _logits()
    m = compare(ref, ref.copy())
    assert m.max_abs_error == 0 and m.mean_abs_error == 0
    assert m.cosine_min == pytest.approx(1.0) and m.cosine_mean == pytest.approx(1.0)
    assert math.isinf(m.psnr_db) and m.psnr_db > 0
    assert m.top1_agreement == 1.0 and m.top5_agreement == 1.0
    assert m.samples == 6


def test_psnr_is_peak_over_rms_error():
    ref = np.zeros((2, 10))
    ref[0, 3] = 10.0  # peak |ref| = 10
    out = ref + 0.1  # RMS error 0.1 -> 20 log10(100) = 40 dB
    m = compare(ref, out)
    assert m.psnr_db == pytest.approx(40.0)
    assert m.max_abs_error == pytest.approx(0.1) and m.mean_abs_error == pytest.approx(0.1)


def test_cosine_and_top1_follow_the_outputs():
    ref = _logits()
    out = ref.copy()
    out[2] = -out[2]  # one sample points the opposite way
    m = compare(ref, out)
    assert m.cosine_min == pytest.approx(-1.0)
    assert m.cosine_mean == pytest.approx((5 - 1) / 6)
    assert m.top1_agreement == pytest.approx(5 / 6)


def test_top5_agreement_is_overlap_of_top5_sets():
    ref = np.tile(np.arange(10, dtype=np.float32)[::-1], (1, 1))  # top-5 = classes 0..4
    out = ref.copy()
    out[0, 4], out[0, 5] = out[0, 5], out[0, 4]  # class 5 replaces class 4 in the top 5
    m = compare(ref, out)
    assert m.top1_agreement == 1.0
    assert m.top5_agreement == pytest.approx(4 / 5)


def test_agreement_counts_real_pictures_only():
    ref = _logits(4)
    out = ref.copy()
    out[3] = -out[3]  # the disagreeing sample is a random picture
    real = is_real(["a.jpg", "b.png", "c.bmp", "random:0:0"])
    m = compare(ref, out, real)
    assert m.top1_agreement == 1.0
    assert m.cosine_min == pytest.approx(-1.0)  # numeric figures still count every input
    assert compare(ref, out).top1_agreement == pytest.approx(0.75)


def test_zero_outputs_and_shape_mismatch():
    zeros = np.zeros((2, 5))
    assert compare(zeros, zeros).cosine_min == 1.0
    assert compare(zeros, np.ones((2, 5))).cosine_min == 0.0
    with pytest.raises(EdgekitError, match="does not match the reference"):
        compare(zeros, np.zeros((2, 6)))


def test_gates_name_each_failure():
    gates = ParityGates(top1_agreement=1.0, cosine_min=0.9999, max_abs_error=0.01)
    good = ParityMetrics(8, 0.001, 0.0001, 0.99999, 0.99999, 90.0, 1.0, 1.0)
    bad = ParityMetrics(8, 0.5, 0.01, 0.998, 0.999, 30.0, 0.875, 0.9)
    assert gates.failures(good) == []
    failures = gates.failures(bad)
    assert len(failures) == 3
    assert any(f.startswith("top1_agreement 0.875 < 1") for f in failures)
    assert any(f.startswith("cosine_min 0.998 < 0.9999") for f in failures)
    assert any(f.startswith("max_abs_error 0.5 > 0.01") for f in failures)
    result = ParityResult("m.tflite", "fp32", bad, gates, tuple(failures))
    assert not result.passed and result.verdict.startswith("FAIL: ")
    assert ParityResult.from_dict(result.to_dict()) == result


def test_exact_psnr_round_trips_through_json():
    m = ParityMetrics(2, 0.0, 0.0, 1.0, 1.0, math.inf, 1.0, 1.0)
    d = m.to_dict()
    assert d["psnr_db"] == "inf"
    assert ParityMetrics.from_dict(d) == m


def test_default_gates_are_documented_values():
    assert DEFAULT_GATES.fp32.top1_agreement == 1.0
    assert DEFAULT_GATES.fp32.cosine_min == 0.9999
    assert DEFAULT_GATES.fp16.top1_agreement is not None and DEFAULT_GATES.int8.top1_agreement is not None
    assert GateTable.from_dict(DEFAULT_GATES.to_dict()) == DEFAULT_GATES


def test_gate_overrides_from_the_command_line():
    table = DEFAULT_GATES.with_overrides(["fp32.cosine_min=0.99999", "int8.top1_agreement=off",
                                          "fp16.top1_agreement=95%"])
    assert table.fp32.cosine_min == 0.99999
    assert table.fp32.top1_agreement == 1.0  # untouched
    assert table.int8.top1_agreement is None
    assert table.fp16.top1_agreement == pytest.approx(0.95)
    for bad, message in (("fp32.cosine_min", "PRECISION.METRIC=VALUE"), ("fp64.cosine_min=1", "unknown precision"),
                         ("fp32.speed=1", "unknown metric"), ("fp32.cosine_min=high", "not a number")):
        with pytest.raises(EdgekitError, match=message):
            DEFAULT_GATES.with_overrides([bad])


def test_int8_is_not_gated_on_random_weights():
    assert is_gated("int8", trained_weights=False)[0] is False
    assert "random weights" in is_gated("int8", trained_weights=False)[1]
    assert is_gated("int8", trained_weights=True) == (True, None)
    assert is_gated("fp32", trained_weights=False) == (True, None)
    assert is_gated("fp16", trained_weights=False) == (True, None)
    ungated = ParityResult("m_int8.tflite", "int8", ParityMetrics(2, 9.0, 1.0, 0.1, 0.2, 3.0, 0.0, 0.1),
                           DEFAULT_GATES.int8, ("top1_agreement 0 < 0.8",), gated=False)
    assert ungated.passed and ungated.verdict == "not gated"


def test_builtin_photos_are_real_licensed_files():
    paths = sample_image_paths()
    assert len(paths) == len(SAMPLE_PHOTOS) >= 8
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in paths)
    assert all(licence_of(p.name) in ("public domain", "CC0", "no known copyright restrictions") for p in paths)


def test_inputs_are_photos_plus_seeded_random_pictures():
    pre = Preprocessing(crop_fraction=0.875)
    a = build_inputs(sample_image_paths(), pre, 64, samples=3, random_count=2, seed=7)
    b = build_inputs(sample_image_paths(), pre, 64, samples=3, random_count=2, seed=7)
    assert a.nchw.shape == (5, 3, 64, 64) and a.nchw.dtype == np.float32
    assert a.real == 3 and a.sources[3:] == ["random:7:0", "random:7:1"]
    np.testing.assert_array_equal(a.nchw, b.nchw)
    low, high = pre.value_range
    assert a.nchw[3:].min() >= low - 1e-5 and a.nchw[3:].max() <= high + 1e-5
    other_seed = build_inputs([], pre, 64, samples=0, random_count=2, seed=8)
    assert not np.array_equal(other_seed.nchw, a.nchw[3:])


def test_unreadable_pictures_are_counted_and_skipped(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    good = sample_image_paths()[:2]
    inputs = build_inputs([broken, *good], IMAGENET_PREPROCESSING, 32, samples=2, random_count=0)
    assert inputs.real == 2 and len(inputs.skipped) == 1 and "broken.jpg" in inputs.skipped[0]
    with pytest.raises(EdgekitError, match="none of the 1 parity images could be read"):
        build_inputs([broken], IMAGENET_PREPROCESSING, 32, samples=2, random_count=1)


def test_spread_picks_evenly():
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread([1, 2], 5) == [1, 2]
