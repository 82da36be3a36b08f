"""Android devices: the benchmark_model / onnxruntime_perf_test log parsers on real logs, and the adb command lines.

No Android device exists on this machine, so the adb tests put a stand-in ``adb`` first on PATH: it records
its arguments and answers as a phone would, replaying a real benchmark_model log from the shared data. The
parsers themselves run on the verbatim logs of real devices.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.devices.android import (parse_benchmark_model_log, parse_onnxruntime_perf_test_log,
                                     result_from_benchmark_model, result_from_onnxruntime_perf_test)
from edgekit.devices.artifacts import load_target
from edgekit.devices.base import BenchSettings
from edgekit.devices.profiles import AndroidProfile
from edgekit.devices.results import LatencyResult
from edgekit.devices.session import run_benchmarks

# Figures read off each log by hand: (avg us, std us, min us, max us, count, init us, first us, median us).
BENCHMARK_MODEL_LOGS = {
    "android_synaptics_mobilenet_v1_0.25_224_quant_nnapi.log": (1885.74, 870, 1171, 9925, 520, 66002, 637079, None),
    "android_synaptics_mobilenet_v1_0.25_224_quant_timvx.log": (1096.48, 476, 810, 6334, 876, 25573, 201009, None),
    "linux_arm64_ti_am62x_ssd_mobilenet_v2_cpu.log": (1.24027e6, 2565, 1238588, 1252566, 50, 5579, 1357602, 1239807),
    "linux_qemuriscv64_mobilenet_v1_1.0_224_float_op_profiling.log":
        (2.95034e6, 109798, 2727568, 3189954, 50, 17187, 3512391, None),
}
ORT_LOG = "onnxruntime_perf_test_arm64_cobalt100_squeezenet_int8.log"
PHONE_DIR = "/data/local/tmp/edgekit.Ab12Cd"

STAND_IN_ADB = r'''#!{python}
"""Stand-in for adb (no Android device here): records argv, answers like a phone."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["ADB_RECORD"], "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:2] == ["-s", "offline-phone"]:
    sys.stderr.write("error: device 'offline-phone' not found\n")
    sys.exit(1)
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["get-state"]:
    print("device")
elif args[0] == "push":
    print(args[1] + ": 1 file pushed, 0 skipped.")
elif args[0] == "shell":
    command = args[1]
    if command.startswith("mktemp"):
        print("{phone_dir}")
    elif command == "nproc":
        print("8")
    elif command == "cat /proc/cpuinfo":  # a Cortex-A76 core as Android's kernel prints it
        print("processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
              "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
              "CPU part\t: 0xd0b")
    elif "benchmark_model" in command:
        sys.stdout.write(open(os.environ["ADB_REPLAY_TFLITE"]).read())
    elif "onnxruntime_perf_test" in command:
        sys.stdout.write(open(os.environ["ADB_REPLAY_ONNX"]).read())
'''


@pytest.fixture()
def logs(shared_data) -> Path:
    return shared_data / "benchmark-logs"


@pytest.mark.parametrize("name", sorted(BENCHMARK_MODEL_LOGS))
def test_benchmark_model_logs_parse_to_the_printed_figures(logs, name):
    avg, std, lo, hi, count, init, first, median = BENCHMARK_MODEL_LOGS[name]
    log = parse_benchmark_model_log((logs / name).read_text())
    assert (log["avg"], log["std"], log["min"], log["max"], log["count"]) == (avg, std, lo, hi, count)
    assert (log["init_us"], log["first_us"]) == (init, first)
    assert log.get("median") == median
    result = result_from_benchmark_model(LatencyResult(name, "tflite", "uint8", 1, "phone", "android", 4), log)
    assert result.ok and result.runtime == "benchmark_model"
    assert result.mean_ms == pytest.approx(avg / 1000) and result.max_ms == pytest.approx(hi / 1000)
    assert result.load_ms == pytest.approx(init / 1000) and result.first_ms == pytest.approx(first / 1000)
    assert result.p90_ms is None and result.p99_ms is None  # benchmark_model does not print them
    assert result.inferences_per_s == pytest.approx(1e6 / avg)


def test_benchmark_model_details(logs):
    nnapi = parse_benchmark_model_log((logs / "android_synaptics_mobilenet_v1_0.25_224_quant_nnapi.log").read_text())
    assert nnapi["delegate"] == "TfLiteNnapiDelegate: 31 of 31 nodes" and nnapi["tf_version"] == "2.15.0"
    assert (nnapi["memory_init_mb"], nnapi["memory_overall_mb"]) == (7.40234, 7.83203)
    arm64 = parse_benchmark_model_log((logs / "linux_arm64_ti_am62x_ssd_mobilenet_v2_cpu.log").read_text())
    assert (arm64["p5"], arm64["median"], arm64["p95"]) == (1238753, 1239807, 1247415)
    result = result_from_benchmark_model(LatencyResult("m", "tflite", "fp32", 1, "b", "android", 4), arm64)
    assert result.p50_ms == pytest.approx(1239.807) and result.extra["p5"] == pytest.approx(1238.753)
    # The op profiler's own "count=" lines after the summary must not replace the benchmark's figures.
    riscv = parse_benchmark_model_log(
        (logs / "linux_qemuriscv64_mobilenet_v1_1.0_224_float_op_profiling.log").read_text())
    assert riscv["avg"] == 2.95034e6 and riscv["threads"] == 4
    # What --report_peak_memory_footprint adds, and a failed run.
    extra = parse_benchmark_model_log("INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383\n")
    assert extra["peak_memory_mb"] == 93.2383
    failed = parse_benchmark_model_log("ERROR: Could not open '/data/local/tmp/x.tflite'.\nERROR: Failed to load\n")
    row = result_from_benchmark_model(LatencyResult("m", "tflite", "fp32", 1, "b", "android", 4), failed)
    assert row.error == "benchmark_model failed: Failed to load"


def test_onnxruntime_perf_test_log(logs):
    text = (logs / ORT_LOG).read_text()
    log = parse_onnxruntime_perf_test_log(text)
    assert log["load_ms"] == pytest.approx(10.2016) and log["first_ms"] == 2
    assert log["mean_ms"] == 1.85739 and log["runs"] == 100
    assert log["min_ms"] == pytest.approx(1.83404) and log["p99_ms"] == pytest.approx(1.90312)
    assert log["peak_rss_mb"] == pytest.approx(36696064 / 2**20)
    result = result_from_onnxruntime_perf_test(LatencyResult("s", "onnx", "int8", 1, "b", "android", 1), log, text)
    assert result.ok and result.p90_ms == pytest.approx(1.87215) and result.extra["p95"] == pytest.approx(1.87393)


@pytest.fixture()
def phone(tmp_path, monkeypatch, logs):
    """PATH with the stand-in adb first; returns where it records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(STAND_IN_ADB.replace("{python}", sys.executable).replace("{phone_dir}", PHONE_DIR))
    adb.chmod(0o755)
    record = tmp_path / "adb_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_RECORD", str(record))
    monkeypatch.setenv("ADB_REPLAY_TFLITE", str(logs / "linux_arm64_ti_am62x_ssd_mobilenet_v2_cpu.log"))
    monkeypatch.setenv("ADB_REPLAY_ONNX", str(logs / ORT_LOG))
    tool = tmp_path / "tools" / "benchmark_model"  # stands in for the arm64 binary; only pushed, never run here
    tool.parent.mkdir()
    tool.write_bytes(b"\x7fELF stand-in")
    return {"record": record, "benchmark_model": tool, "tmp": tmp_path}


def _calls(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_adb_command_lines(phone, shared_data):
    folder = phone["tmp"] / "my models"
    folder.mkdir()
    model = folder / """mobilenet "v2" it's quant.tflite"""
    shutil.copyfile(shared_data / "tflite" / "mobilenet_v2_1.0_224_quant.tflite", model)
    profile = AndroidProfile(name="pixel", kind="android", serial="R58M123",
                             benchmark_model=str(phone["benchmark_model"]), delegate="gpu", taskset="f0")
    results = run_benchmarks(load_target(model), [profile], BenchSettings(runs=50, warmup=5, threads=(1, 4)))
    assert [(r.threads, r.ok) for r in results] == [(1, True), (4, True)]
    assert results[0].mean_ms == pytest.approx(1240.27) and results[0].extra["delegate_setting"] == "gpu"

    calls = _calls(phone["record"])
    assert all(c[:2] == ["-s", "R58M123"] for c in calls)
    calls = [c[2:] for c in calls]
    assert calls[0] == ["get-state"]
    pushes = [c for c in calls if c[0] == "push"]
    # Local paths travel as single arguments, never through a shell; phone-side names are edgekit's own.
    assert pushes == [["push", str(phone["benchmark_model"]), f"{PHONE_DIR}/benchmark_model"],
                      ["push", str(model), f"{PHONE_DIR}/model_0.tflite"]]
    runs = [shlex.split(c[1]) for c in calls if c[0] == "shell" and "benchmark_model" in c[1] and "chmod" not in c[1]]
    assert runs == [["taskset", "f0", f"{PHONE_DIR}/benchmark_model", f"--graph={PHONE_DIR}/model_0.tflite",
                     f"--num_threads={t}", "--num_runs=50", "--min_secs=0", "--warmup_runs=5", "--warmup_min_secs=0",
                     "--use_gpu=true", "--report_peak_memory_footprint=true"] for t in (1, 4)]
    assert calls[-1] == ["shell", shlex.join(["rm", "-rf", PHONE_DIR])]  # cleaned up last
    # the phone's CPU travels with every row: ARMv8.2 dot product, so int8 is expected to be faster there
    cpu = results[0].machine["cpu"]
    assert cpu["arch"] == "aarch64" and cpu["features"] == ["asimd", "asimddp"] and cpu["int8_dot_product"] is True


def test_adb_work_folder_with_a_space_is_quoted(phone, shared_data):
    profile = AndroidProfile(name="p", kind="android", benchmark_model=str(phone["benchmark_model"]),
                             work_dir="/sdcard/my dir", delegate="nnapi")
    [result] = run_benchmarks(load_target(shared_data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"), [profile],
                              BenchSettings(runs=10, warmup=1, threads=(2,)))
    assert result.ok
    calls = _calls(phone["record"])
    mktemp = next(c for c in calls if c[0] == "shell" and c[1].startswith("mktemp"))
    assert shlex.split(mktemp[1]) == ["mktemp", "-d", "/sdcard/my dir/edgekit.XXXXXX"]
    run = next(shlex.split(c[1]) for c in calls if c[0] == "shell" and "--graph=" in c[1])
    assert "--use_nnapi=true" in run and run[0] == f"{PHONE_DIR}/benchmark_model"  # no taskset unless asked


def test_default_threads_come_from_the_phone(phone, shared_data):
    profile = AndroidProfile(name="p", kind="android", benchmark_model=str(phone["benchmark_model"]))
    results = run_benchmarks(load_target(shared_data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"), [profile],
                             BenchSettings(runs=10, warmup=1))
    assert [r.threads for r in results] == [1, 8]  # 1 and all cores (nproc)


def test_onnx_files_need_onnxruntime_perf_test(phone, tmp_path):
    from devices_helpers import int8_input_onnx

    model = int8_input_onnx(tmp_path / "tiny.onnx")
    plain = AndroidProfile(name="plain", kind="android", benchmark_model=str(phone["benchmark_model"]))
    perf_tool = tmp_path / "tools" / "onnxruntime_perf_test"
    perf_tool.write_bytes(b"\x7fELF stand-in")
    with_ort = AndroidProfile(name="ort", kind="android", benchmark_model=str(phone["benchmark_model"]),
                              onnxruntime_perf_test=str(perf_tool), delegate="cpu")
    settings = BenchSettings(runs=100, warmup=1, threads=(2,))
    [plain_row] = run_benchmarks(load_target(model), [plain], settings)
    [ort_row] = run_benchmarks(load_target(model), [with_ort], settings)
    assert "onnxruntime_perf_test" in plain_row.error and "--runtime litert" in plain_row.error
    assert ort_row.ok and ort_row.runtime == "onnxruntime_perf_test" and ort_row.p99_ms == pytest.approx(1.90312)
    run = next(shlex.split(c[1]) for c in _calls(phone["record"]) if c[0] == "shell" and "perf_test -I" in c[1])
    assert run == [f"{PHONE_DIR}/onnxruntime_perf_test", "-I", "-m", "times", "-r", "100", "-x", "2", "-e", "cpu",
                   f"{PHONE_DIR}/model_0.onnx"]


def test_unplugged_phone_and_missing_binary_give_error_rows(phone, shared_data, tmp_path, capsys):
    devices = tmp_path / "devices.toml"
    devices.write_text(f"""
[devices.offline]
kind = "android"
serial = "offline-phone"
benchmark_model = {json.dumps(str(phone['benchmark_model']))}

[devices.nobinary]
kind = "android"
benchmark_model = "/nowhere/benchmark_model"
""")
    model = shared_data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"
    code = main(["bench", str(model), "--devices", str(devices), "--all", "--threads", "1", "--runs", "3",
                 "--warmup", "0", "--no-chart"])
    out = capsys.readouterr().out
    assert code == 1
    assert "offline: adb offline-phone xnnpack: adb cannot reach device offline-phone (error: device " \
           "'offline-phone' not found)" in out
    assert "benchmark_model binary /nowhere/benchmark_model does not exist" in out
    assert "local" in out and out.count("FAILED") == 2  # --all includes this machine, which still runs
