"""`edgekit validate DIR`: the CI gate re-checks a bundle with ONNX Runtime and LiteRT alone (no torch), and
fails on an altered file, a failed gate or a failed export. The bundle comes from Google's MobileNet v1
0.25/128 imported as real weights, exported once per test session (test_quantize.py quantizes its fp32
files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main

pytestmark = pytest.mark.slow  # a real export, validate in subprocesses

VARIANT = "mobilenet_v1_w0.25_r128"


@pytest.fixture(scope="module")
def bundle(v1_fp32_bundle) -> Path:
    """conftest.v1_fp32_bundle: `edgekit export mobilenet_v1 --width 0.25 --resolution 128 --weights FILE
    --data IMAGES --parity-samples 6 --parity-random 2 --latency-runs 0` (validate never reads latency)."""
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stdout"] + v1_fp32_bundle["stderr"]
    return v1_fp32_bundle["bundle"]


@pytest.fixture()
def copy(bundle, tmp_path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(bundle, tmp_path / VARIANT))


def _validate_in_subprocess(*args: str) -> subprocess.CompletedProcess:
    # The way CI runs it, plus a check that nothing imported torch along the way.
    code = ("import sys\nfrom edgekit.cli import main\nrc = main(sys.argv[1:])\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "validate", *args], capture_output=True, text=True,
                          timeout=300)


def test_validate_passes_without_importing_torch(bundle):
    result = _validate_in_subprocess(str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "NO_TORCH"
    assert f"{bundle}: PASS" in result.stdout
    assert f"{VARIANT}.onnx" in result.stdout and f"{VARIANT}.tflite" in result.stdout
    # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." stays off the terminal
    assert "XNNPACK" not in result.stderr + result.stdout and "INFO:" not in result.stderr, result.stderr


def test_altered_model_file_fails_with_a_hash_message(copy, capsys):
    model = copy / f"{VARIANT}.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight byte: the file still loads, the numbers move a little
    model.write_bytes(bytes(data))
    assert main(["validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"{VARIANT}.tflite: sha256 mismatch, the file was altered after export" in out
    assert f"{copy}: FAIL" in out


def test_missing_model_file_fails(copy, capsys):
    (copy / f"{VARIANT}.onnx").unlink()
    assert main(["validate", str(copy)]) == 1
    assert f"{VARIANT}.onnx is missing" in capsys.readouterr().out


def test_altered_reference_fails(copy, capsys):
    (copy / "reference.npz").write_bytes(b"PK\x03\x04 not the stored reference")
    assert main(["validate", str(copy)]) == 1
    assert "reference was altered after export" in capsys.readouterr().out


def test_stricter_gate_from_the_command_line_fails(bundle, capsys, tmp_path):
    report = tmp_path / "verdict.json"
    assert main(["validate", str(bundle), "--gate", "fp32.psnr_db=1000", "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "FAIL: psnr_db" in out and "< 1000" in out
    verdicts = json.loads(report.read_text())
    assert verdicts[0]["passed"] is False
    assert {p["artifact"] for p in verdicts[0]["parity"]} == {f"{VARIANT}.onnx", f"{VARIANT}.tflite"}
    assert all(not p["passed"] for p in verdicts[0]["parity"])


def test_folder_of_bundles(bundle, capsys):
    assert main(["validate", str(bundle.parent)]) == 0
    assert "validate passed: 1 bundle(s), 2 file(s)" in capsys.readouterr().out


def test_bad_usage_exits_2(tmp_path, copy, capsys):
    assert main(["validate", str(tmp_path / "nowhere")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 2
    assert main(["validate", str(copy), "--gate", "fp32"]) == 2
    (copy / "manifest.json").write_text("{ not json")
    assert main(["validate", str(copy)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 4
    assert "is not a valid edgekit manifest" in errors[-1]


def test_json_to_stdout_is_json_alone(bundle, capsys):
    """--json - leaves stdout to the JSON (tables and verdict on stderr), so a program can parse it."""
    assert main(["validate", str(bundle), "--json", "-"]) == 0
    captured = capsys.readouterr()
    verdicts = json.loads(captured.out)
    assert verdicts[0]["passed"] is True and "validate passed" in captured.err
