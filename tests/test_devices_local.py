"""edgekit bench on this machine: the runner script, bundles, profiles, the table, JSON and chart.

Real runtimes on real files: Google's MobileNet v2 uint8 .tflite from the shared data and an ONNX exported here
from an edgekit model. Few runs: these tests check what is reported, never how fast anything is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from devices_helpers import export_small_onnx, int8_input_onnx, python_without_runtimes, write_bundle

from edgekit.cli import main
from edgekit.devices import runner
from edgekit.devices.artifacts import load_target
from edgekit.devices.base import RUNNER, BenchSettings, parse_runner_output
from edgekit.devices.profiles import LocalProfile
from edgekit.devices.results import LatencyResult, latency_stats
from edgekit.devices.session import run_benchmarks
from edgekit.errors import EdgekitError

QUICK = BenchSettings(runs=5, warmup=1, threads=(1, 2))


@pytest.fixture(scope="module")
def v2_quant(shared_data):
    return shared_data / "tflite" / "mobilenet_v2_1.0_224_quant.tflite"


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    return export_small_onnx(tmp_path_factory.mktemp("onnx") / "mobilenet_v2_035_96.onnx")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, v2_quant, small_onnx):
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle", {
        "model_uint8.tflite": (v2_quant, "int8"), "model_fp32.onnx": (small_onnx, "fp32")})


@pytest.fixture(scope="module")
def bundle_results(bundle):
    return run_benchmarks(load_target(bundle), [LocalProfile(name="local", kind="local")], QUICK)


def test_probe_reports_the_runtimes_of_this_python():
    done = subprocess.run([sys.executable, str(RUNNER), "--probe"], capture_output=True, text=True, check=True)
    info = parse_runner_output(done.stdout)
    assert {"ai_edge_litert", "onnxruntime"} <= set(info["runtimes"])
    assert info["numpy"] == np.__version__ and info["cpu_count"] >= 1


def test_runner_stays_python38_compatible():
    # Boards run older Pythons than edgekit needs (Debian bullseye: 3.9; Ubuntu 20.04: 3.8).
    import ast

    ast.parse(RUNNER.read_text(), feature_version=(3, 8))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "float32", "float16", "int64"])
def test_random_inputs_match_dtype_and_shape(dtype):
    data = runner.random_array(np.random.default_rng(0), np, (2, 8, 8, 3), dtype)
    assert data.dtype == np.dtype(dtype) and data.shape == (2, 8, 8, 3)
    if dtype == "uint8":
        assert data.min() < 20 and data.max() > 235  # the whole range, as a camera frame would
    if dtype == "int8":
        assert data.min() < -100 and data.max() > 100
    if dtype.startswith("float"):
        assert -1 <= data.min() < -0.5 and 0.5 < data.max() < 1
    if dtype == "int64":
        assert not data.any()  # indices: random values would be out of range


def test_every_artifact_at_every_thread_count(bundle_results):
    assert [(r.artifact, r.threads) for r in bundle_results] == [
        ("model_uint8.tflite", 1), ("model_uint8.tflite", 2), ("model_fp32.onnx", 1), ("model_fp32.onnx", 2)]
    for r in bundle_results:
        assert r.ok, r.error
        assert r.runs == 5 and len(r.samples_ms) == 5 and r.warmup == 1
        assert r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
        assert r.min_ms <= r.mean_ms <= r.max_ms and r.std_ms >= 0
        assert r.load_ms > 0 and r.first_ms > 0
        assert r.inferences_per_s == pytest.approx(1000 / r.mean_ms)
        assert r.peak_rss_mb > r.extra["baseline_rss_mb"] > 0
        assert r.extra["heavy_modules_loaded"] == []  # the measuring process never held PyTorch
        assert r.device == "local" and r.machine["cpu_count"] >= 1
    tflite, onnx = bundle_results[0], bundle_results[2]
    assert tflite.runtime == "ai_edge_litert" and tflite.precision == "int8"  # as the manifest says
    assert tflite.extra["inputs"] == [{"name": "input", "shape": [1, 224, 224, 3], "dtype": "uint8"}]
    assert onnx.runtime == "onnxruntime" and onnx.extra["inputs"][0]["dtype"] == "float32"
    assert onnx.model_bytes == (bundle_results[2].model_bytes) > 0


def test_int8_input_and_symbolic_batch(tmp_path):
    model = int8_input_onnx(tmp_path / "int8_in.onnx")
    [result] = run_benchmarks(load_target(model), [LocalProfile(name="local", kind="local")],
                              BenchSettings(runs=3, warmup=0, threads=(1,)))
    assert result.ok, result.error
    assert result.extra["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "int8"}]


def test_latency_stats_are_exact():
    stats = latency_stats([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats == {"mean_ms": 3.0, "std_ms": pytest.approx(np.sqrt(2)), "min_ms": 1.0, "p50_ms": 3.0,
                     "p90_ms": pytest.approx(4.6), "p99_ms": pytest.approx(4.96), "max_ms": 5.0}
    r = LatencyResult("m.tflite", "tflite", "fp32", 10, "local", "local", 1).with_samples([4.0, 1.0, 3.0, 2.0, 5.0])
    assert LatencyResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_precision_read_from_files_without_manifest(v2_quant, small_onnx, tmp_path):
    assert load_target(v2_quant)[0].precision == "uint8"
    assert load_target(small_onnx)[0].precision == "fp32"
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.onnx").write_bytes(small_onnx.read_bytes())
    (folder / "notes.txt").write_text("not a model")
    assert [m.label for m in load_target(folder)] == ["a.onnx"]
    assert [m.format for m in load_target(small_onnx.parent, runtime="onnxruntime")] == ["onnx"]
    with pytest.raises(EdgekitError, match="no tflite file for --runtime litert"):
        load_target(small_onnx, runtime="litert")


def test_folder_of_bundles_benches_each_usable_bundle(bundle, tmp_path, capsys):
    assert [m.label for m in load_target(bundle.parent)] == ["bundle/model_uint8.tflite", "bundle/model_fp32.onnx"]
    exports = tmp_path / "exports"
    shutil.copytree(bundle, exports / "good")
    shutil.copytree(bundle, exports / "altered")
    (exports / "altered" / "model_fp32.onnx").write_bytes(b"not the exported file")
    assert [m.label for m in load_target(exports)] == ["good/model_uint8.tflite", "good/model_fp32.onnx"]
    assert "skipping bundle altered: " in capsys.readouterr().err


def test_manifest_problems_are_one_line_errors(bundle, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    changed = bytearray((bundle / "model_uint8.tflite").read_bytes())
    changed[5000] ^= 0xFF  # one weight byte: same size, different file
    (broken / "model_uint8.tflite").write_bytes(bytes(changed))
    manifest["artifacts"] = manifest["artifacts"][:1]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgekitError, match="sha256 mismatch, the file was altered after export"):
        load_target(broken)
    manifest["artifacts"][0]["path"] = "../bundle/model_uint8.tflite"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgekitError, match="outside the bundle"):
        load_target(broken)
    manifest["artifacts"][0]["path"] = "gone.tflite"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgekitError, match="gone.tflite is missing"):
        load_target(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(EdgekitError, match="not a valid edgekit manifest"):
        load_target(broken)


def test_cli_table_json_and_chart(bundle, tmp_path, capsys):
    out = tmp_path / "out" / "latency.json"
    code = main(["bench", str(bundle), "--runs", "3", "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "p99" in table and "RSS MB" in table and "model_uint8.tflite" in table  # the default, 100-column table
    assert "LiteRT 2." in table and "ORT 1." in table
    data = json.loads(out.read_text())
    assert data["command"].startswith("edgekit bench ") and "--runs 3" in data["command"]
    assert [(r["artifact"], r["threads"]) for r in data["results"]] == [("model_uint8.tflite", 1),
                                                                         ("model_fp32.onnx", 1)]
    assert all(len(r["samples_ms"]) == 3 and r["inferences_per_s"] > 0 for r in data["results"])
    chart = out.with_suffix(".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert not list(out.parent.glob(".*.tmp"))  # no half-written files left behind


def test_bundle_gets_its_chart_by_default_and_json_can_go_to_stdout(bundle, capsys):
    assert main(["bench", str(bundle), "--runs", "2", "--warmup", "0", "--threads", "2",
                 "--runtime", "litert", "--json", "-"]) == 0
    assert (bundle / "latency.png").stat().st_size > 10_000
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the JSON alone; the table went to stderr
    assert [r["artifact"] for r in data["results"]] == ["model_uint8.tflite"]
    assert "model_uint8.tflite" in captured.err and "model_fp32.onnx" not in captured.err


def test_corrupt_and_unknown_files_fail_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage" * 10)
    assert main(["bench", str(bad)]) == 2
    assert "not a TFLite model" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nothing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", str(bad), "--json", "/proc/nope/x.json"]) == 2


def test_python_without_numpy_or_runtime_says_what_to_install(v2_quant, tmp_path):
    no_runtime = python_without_runtimes(tmp_path)
    no_numpy = python_without_runtimes(tmp_path, with_numpy=False)
    profiles = [LocalProfile(name="bare", kind="local", python=str(no_runtime)),
                LocalProfile(name="barer", kind="local", python=str(no_numpy))]
    bare, barer = run_benchmarks(load_target(v2_quant), profiles, BenchSettings(runs=2, warmup=0, threads=(1,)))
    assert bare.error == (f"no TFLite runtime in this Python ({no_runtime}); install it there: "
                          f"{no_runtime} -m pip install ai-edge-litert (or tflite-runtime)")
    assert barer.error == (f"numpy is missing in this Python ({no_numpy}); install it there: "
                           f"{no_numpy} -m pip install numpy")
