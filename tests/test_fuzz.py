"""Damaged bundles into validate, eval and bench (seeded; tests/fuzzing.py). No traceback, no hang, and never a
pass on a model file that differs from what the manifest recorded. More cases: benchmarks/fuzz_bundles.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main
from fuzzing import argv, cases, damage

IN_PROCESS_CASES = 240  # hash-checked damage and manifest damage: refused before any runtime parses a file
RUNTIME_CASES = 12  # damage the manifest vouches for, so the runtimes' own parsers meet it: one process each
TARGETS = ["mobilenet_v1_w0.25_r128.onnx", "mobilenet_v1_w0.25_r128.tflite", "manifest.json", "reference.npz",
           "labels.txt"]


@pytest.fixture(scope="module")
def fp32_bundle(v1_fp32_bundle) -> Path:
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stderr"]
    return v1_fp32_bundle["bundle"]


@pytest.fixture(scope="module")
def data_csv(shared_data) -> Path:
    return shared_data / "imagenet-samples" / "labels.csv"


@pytest.mark.slow  # a few hundred damaged copies of a bundle
def test_damaged_bundles_are_refused_in_process(fp32_bundle, data_csv, tmp_path, capsys):
    chosen = [c for c in cases(IN_PROCESS_CASES, TARGETS, seed=1) if not c.consistent]
    chosen = [c for c in chosen if c.command != "bench" or c.target != "manifest.json"][:IN_PROCESS_CASES]
    assert len(chosen) > 150
    outcomes: dict[int, int] = {}
    for case in chosen:
        copy = damage(fp32_bundle, case, tmp_path / case.id)
        try:
            code = main(argv(case, copy, data_csv))
        except BaseException as e:  # a traceback a user would have seen
            pytest.fail(f"{case.id}: {type(e).__name__}: {e}")
        capsys.readouterr()
        outcomes[code] = outcomes.get(code, 0) + 1
        assert code in (0, 1, 2), (case.id, code)
        if case.target != "manifest.json":
            assert code != 0, f"{case.id}: passed on a file that differs from the manifest"
    assert outcomes.get(0, 0) < len(chosen) // 2  # most damage is caught; a harmless manifest edit may pass


@pytest.mark.slow  # a fresh process per case: a runtime that crashed on a damaged file would take pytest with it
def test_damage_the_manifest_vouches_for_never_crashes_a_runtime(fp32_bundle, data_csv, tmp_path):
    chosen = [c for c in cases(400, TARGETS[:2], seed=2) if c.consistent][:RUNTIME_CASES]
    assert len(chosen) == RUNTIME_CASES
    for case in chosen:
        copy = damage(fp32_bundle, case, tmp_path / case.id)
        done = subprocess.run([sys.executable, "-m", "edgekit.cli", *argv(case, copy, data_csv)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode in (0, 1, 2), (case.id, done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (case.id, done.stderr[-2000:])
