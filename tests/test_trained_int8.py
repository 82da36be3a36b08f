"""int8 judged on a trained network: LeNet-5 trained briefly on scikit-learn's real digits, exported by edgekit
(fp32 and int8, ONNX and TFLite), scored on held-out digits through the runtimes with this host's kernels.

Measured (benchmarks/results/train_lenet_digits.md, AMD EPYC avx2): after 10 epochs, every file scores 96.89% on the
450 held-out digits, int8 within 0.00 points of fp32, int8 parity cosine mean 0.99994-0.99996 and PSNR 50 dB. This test
trains 4 epochs (seeded); the bound is the issue's goal, one point (4.5 of 450 digits): no x86 CPU class may
move int8 further, because edgekit's ONNX int8 weights are limited so that AVX2's 16-bit pair sums cannot saturate
(VNNI and AMX add in 32 bits: the same integers) and LiteRT's int8 kernels compute the spec's arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trained_tasks import (as_trained, digit_inputs, digit_pictures, digits_split, export_bundle, predict,
                           save_images, save_state, score_files, train)


@pytest.mark.slow
def test_lenet5_trained_on_digits_int8_within_one_point_of_fp32(tmp_path):
    from edgekit.models import create_model

    split = digits_split(seed=0)
    torch.manual_seed(0)
    model = create_model("lenet5")
    preprocessing = model.edgekit_config.preprocessing
    train(model, digit_inputs(split.train_x, preprocessing), split.train_y, epochs=4, seed=0)
    pytorch = float(np.mean(predict(model, digit_inputs(split.test_x, preprocessing)).argmax(1) == split.test_y))
    assert pytorch > 0.9, f"LeNet-5 learned too little to judge int8 ({pytorch:.1%} held out)"

    calib = save_images(digit_pictures(split.train_x[:128]), tmp_path / "calib")
    parity = save_images(digit_pictures(split.test_x[::28][:16]), tmp_path / "parity")
    manifest, bundle = export_bundle(as_trained(model, save_state(model, tmp_path / "lenet5.pt")),
                                     tmp_path / "out", calib, parity)
    assert manifest.passed, [p.verdict for p in manifest.parity]
    assert {(a.format, a.precision) for a in manifest.artifacts} == {
        ("onnx", "fp32"), ("tflite", "fp32"), ("onnx", "int8"), ("tflite", "int8")}
    assert all(p.gated for p in manifest.parity), "trained weights: int8 must be gated"

    inputs = digit_inputs(split.test_x, preprocessing)
    rows = {(r["format"], r["precision"]): r["accuracy"] for r in score_files(
        bundle, manifest, inputs, lambda out: {"accuracy": float(np.mean(out.argmax(1) == split.test_y))})}
    for fmt in ("onnx", "tflite"):
        assert rows[(fmt, "fp32")] == pytest.approx(pytorch, abs=1e-9), "the fp32 file must be the PyTorch model"
        assert abs(rows[(fmt, "int8")] - rows[(fmt, "fp32")]) <= 0.01, (fmt, rows)
