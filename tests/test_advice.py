"""A failed export says what it can see and the command that fixes each cause; calibration below a sound minimum is
a warning before the work; `--formats` keeps validate, eval and bench to what a project ships."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.cli import build_parser, main
from edgekit.commands.export import export_command, failure_advice
from edgekit.manifest import Artifact, Manifest
from edgekit.parity import DEFAULT_GATES, KernelCheck, ParityMetrics, ParityResult
from edgekit.pipeline import CALIBRATION_MINIMUM, ExportSpec, calibration_warning

VARIANT = "mobilenet_v1_w0.25_r128"
GOOD = ParityMetrics(16, 0.1, 0.01, 0.98, 0.995, 40.0, 0.9, 0.9)
BAD = ParityMetrics(16, 2.0, 0.5, 0.5, 0.90, 20.0, 0.4, 0.5)


def _args(*extra):
    return build_parser().parse_args(["export", "mobilenet_v1", "--int8", *map(str, extra)])


def _result(name, precision, metrics, kernels=None):
    gates = DEFAULT_GATES.for_precision(precision)
    return ParityResult(name, precision, metrics, gates, tuple(gates.failures(metrics)), kernels=kernels)


def _manifest(parity, calibration_used):
    manifest = Manifest(model={}, preprocessing={}, options={"calibration": {"used": calibration_used}})
    manifest.artifacts = [Artifact(p.artifact, p.artifact.rsplit(".", 1)[1], p.precision, 1, "0" * 64, (), ())
                          for p in parity]
    manifest.parity = parity
    return manifest


def test_calibration_count_advice_names_the_fix(tmp_path):
    parity = [_result(f"{VARIANT}_int8.onnx", "int8", BAD), _result(f"{VARIANT}_int8.tflite", "int8", BAD)]
    builtin = failure_advice(_manifest(parity, {"builtin": True, "samples": 12}), _args(), tmp_path)
    (cause, command), = builtin
    assert "calibrated on 12 pictures (edgekit's built-in photos)" in cause and f"minimum of {CALIBRATION_MINIMUM}" in cause
    assert command.startswith("edgekit export mobilenet_v1 --int8 --calib FOLDER_OF_100_OR_MORE_PICTURES/")

    big = tmp_path / "my photos"
    big.mkdir()
    for i in range(CALIBRATION_MINIMUM + 5):
        (big / f"{i}.jpg").write_bytes(b"")
    used = {"builtin": False, "samples": 20, "source": str(big)}
    (cause, command), = failure_advice(_manifest(parity, used), _args("--calib", big, "--calib-samples", 20), tmp_path)
    assert f"holds {CALIBRATION_MINIMUM + 5}" in cause and command.endswith("--calib-samples 128")
    assert f"--calib '{big}'" in command  # quoted: pasted into a shell as it is


def test_a_format_the_project_may_not_ship():
    parity = [_result(f"{VARIANT}_int8.onnx", "int8", BAD), _result(f"{VARIANT}_int8.tflite", "int8", GOOD),
              _result(f"{VARIANT}.onnx", "fp32", ParityMetrics(16, 0, 0, 1, 1, 140, 1, 1)),
              _result(f"{VARIANT}.tflite", "fp32", ParityMetrics(16, 0, 0, 1, 1, 140, 1, 1))]
    advice = failure_advice(_manifest(parity, {"builtin": False, "samples": 200}), _args(), Path("b"))
    (cause, command), = advice
    assert "only the onnx files fail" in cause and "edgekit validate b --formats tflite" in cause
    assert command == "edgekit export mobilenet_v1 --formats tflite --int8"


def test_host_kernel_error_is_told_apart_from_quantization():
    finding = "m_int8.onnx: ONNX Runtime's int8 kernels on AMD EPYC (x86_64: avx2) disagree with ORT float QDQ"
    kernels = KernelCheck("ORT float QDQ (optimizations off)", "AMD EPYC (x86_64: avx2)", GOOD, BAD, finding)
    parity = [_result(f"{VARIANT}_int8.onnx", "int8", BAD, kernels)]
    advice = failure_advice(_manifest(parity, {"builtin": False, "samples": 300}), _args(), Path("exports/m"))
    (cause, command), = advice
    assert "host-kernel error" in cause and finding in cause and "the error is this CPU's, not the file's" in cause
    assert command == "edgekit validate exports/m --emulate aarch64"
    worse = KernelCheck("ORT float QDQ (optimizations off)", "AMD EPYC", BAD, BAD, finding)
    (cause, _), = failure_advice(_manifest([_result(f"{VARIANT}_int8.onnx", "int8", BAD, worse)],
                                           {"builtin": False, "samples": 300}), _args(), Path("b"))
    assert "on the reference path it still fails (" in cause


def test_nothing_failed_nothing_advised():
    parity = [_result(f"{VARIANT}_int8.onnx", "int8", GOOD)]
    assert failure_advice(_manifest(parity, {"builtin": True, "samples": 12}), _args(), Path("b")) == []


def test_export_command_keeps_the_users_options():
    args = _args("--weights", "w.tflite", "--out", "out dir", "--gate", "int8.psnr_db=30", "--formats", "onnx")
    assert export_command(args) == ("edgekit export mobilenet_v1 --weights w.tflite --formats onnx --int8 "
                                    "--out 'out dir' --gate int8.psnr_db=30")


# --- calibration below the minimum: a warning before the work ---------------------------------------------------

def test_calibration_warning_says_how_many_would_do(tmp_path):
    assert calibration_warning(ExportSpec("mobilenet_v1")) is None  # no int8, no calibration
    assert "pass --calib DIR with at least 100" in calibration_warning(ExportSpec("mobilenet_v1", int8=True))
    few = tmp_path / "few"
    few.mkdir()
    for i in range(9):
        (few / f"{i}.jpg").write_bytes(b"")
    text = calibration_warning(ExportSpec("mobilenet_v1", int8=True, calib=few))
    assert "calibrated on 9 pictures" in text and "add at least 91 more" in text
    for i in range(9, 150):
        (few / f"{i}.jpg").write_bytes(b"")
    assert calibration_warning(ExportSpec("mobilenet_v1", int8=True, calib=few)) is None  # 128 of 150
    text = calibration_warning(ExportSpec("mobilenet_v1", int8=True, calib=few, calib_samples=20))
    assert "calibrated on 20 pictures" in text and "raise --calib-samples to at least 100" in text


def test_the_calibration_warning_comes_before_any_work(tmp_path, shared_data, capsys):
    # the weights file is missing, so the export stops at its first step: the warning was already out
    code = main(["export", "mobilenet_v1", "--weights", str(tmp_path / "missing.pt"), "--int8", "--calib",
                 str(shared_data / "photos"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out" / VARIANT).exists()
    assert err.index("int8 will be calibrated on 9 pictures") < err.index("edgekit: error:")


# --- --formats: only what a project ships --------------------------------------------------------------------

@pytest.fixture()
def tflite_only(v1_fp32_bundle, tmp_path) -> Path:
    """The fp32 bundle as a project that ships only the .tflite has it: the .onnx deleted."""
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stderr"]
    bundle = Path(shutil.copytree(v1_fp32_bundle["bundle"], tmp_path / VARIANT))
    (bundle / f"{VARIANT}.onnx").unlink()
    return bundle


@pytest.mark.slow  # exports a bundle of its own
def test_validate_checks_only_the_formats_asked_for(tflite_only, tmp_path, capsys):
    assert main(["validate", str(tflite_only)]) == 1
    assert f"{VARIANT}.onnx is missing" in capsys.readouterr().out
    out = tmp_path / "v.json"
    assert main(["validate", str(tflite_only), "--formats", "tflite", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not checked (--formats tflite)" in text and "validate passed: 1 bundle(s), 1 file(s)" in text
    (check,) = json.loads(out.read_text())
    assert [p["artifact"] for p in check["parity"]] == [f"{VARIANT}.tflite"]
    assert main(["validate", str(tflite_only), "--formats", "onnx"]) == 1
    assert "holds no onnx file" not in capsys.readouterr().out  # it holds one, missing: that is the problem
    # pte is a registered format (issue 12): asking for it on a bundle without .pte files fails the check
    assert main(["validate", str(tflite_only), "--formats", "pte"]) == 1
    assert "the bundle holds no pte file" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(["validate", str(tflite_only), "--formats", "coreml"])
    assert exited.value.code == 2 and "choose from onnx,tflite,pte" in capsys.readouterr().err


def test_eval_and_bench_of_a_bundle_take_the_same_filter(tflite_only, shared_data, tmp_path, capsys):
    data = shared_data / "imagenet-samples" / "labels.csv"
    assert main(["eval", str(tflite_only), "--data", str(data), "--limit", "4", "--pytorch", "skip"]) == 2
    assert f"{VARIANT}.onnx is missing" in capsys.readouterr().err
    assert main(["eval", str(tflite_only), "--data", str(data), "--limit", "4", "--pytorch", "skip",
                 "--formats", "tflite"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:] if line.strip()
            and not line.startswith("(")]
    assert rows == [f"{VARIANT}.tflite"]
    out = tmp_path / "b.json"
    assert main(["bench", str(tflite_only), "--formats", "tflite", "--runs", "2", "--warmup", "0", "--threads", "1",
                 "--json", str(out), "--no-chart"]) == 0
    assert {r["artifact"] for r in json.loads(out.read_text())["results"]} == {f"{VARIANT}.tflite"}
    capsys.readouterr()
    assert main(["bench", str(tflite_only), "--formats", "tflite", "--runtime", "onnxruntime"]) == 2
    assert "disagree" in capsys.readouterr().err
