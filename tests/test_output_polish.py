"""Output polish: `edgekit models` from a cache keyed by the model code (no torch import), counted on the meta
device exactly as on real modules; the bench table fits 100 columns unless --wide; inspect and parity name the same
measure the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import edgekit
from edgekit.commands.bench import HEADERS, TABLE_WIDTH, results_table
from edgekit.commands.models import cache_path, code_key, count_zoo
from edgekit.devices.results import LatencyResult
from edgekit.models.profile import profile_model


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "resnet18"])
def test_meta_device_counts_are_the_real_modules_counts(name):
    (row,) = count_zoo([name])
    spec = edgekit.models.get_spec(name)
    real = profile_model(edgekit.create_model(name, weights="random"), spec.default_resolution, name)
    assert (row["params"], row["macs"]) == (real.params, real.macs)


def test_models_answers_from_its_cache_without_torch(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    rows = [{"name": "mobilenet_v2", "family": "mobilenet", "params": 3504872, "macs": 300774272,
             "resolution": 224, "paper_resolution": 224, "imagenet_weights": True, "description": ""}]
    path = tmp_path / "edgekit" / cache_path(code_key()).name
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rows))
    code = ("import sys, time\nfrom edgekit.cli import main\nrc = main(['models'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')\nsys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    # the answer comes from the cache, with no model built: torch is never imported (its import alone takes
    # 2.7 s on an AMD EPYC (Zen 3), 2 shared cores; the cached answer 0.4 s). Tests assert no wall-clock time.
    assert "mobilenet_v2" in done.stdout and "300.77 M" in done.stdout and done.stdout.strip().endswith("NO_TORCH")


def test_a_change_to_the_model_code_changes_the_cache_key(tmp_path, monkeypatch):
    key = code_key()
    assert cache_path(key).name == f"models-{key}.json" and len(key) == 16
    monkeypatch.setattr("edgekit.commands.models.__version__", "0.0.0-other")
    assert code_key() != key


def _result(name, device="pixel8-pro", error=None):
    r = LatencyResult(name, name.rsplit(".", 1)[1], "int8", 12_345_678, device, "android", 4, "ai_edge_litert",
                      "2.3.0", error=error)
    if error is None:
        r.with_samples([1.2, 1.5, 12.3, 8.8, 3.1])
        r.peak_rss_mb = 123.4
    return r


def test_bench_table_fits_100_columns_and_wide_has_every_column():
    results = [_result("mobilenet_v2_w0.5_r160.tflite"), _result("efficientnet_lite4_w1_r300_int8.tflite"),
               _result("a_folder_of_bundles/efficientnet_b7_r600_int8.onnx"),
               _result("x_int8.onnx", "pi5", "unreachable")]
    table = results_table(results)
    assert max(len(line) for line in table.splitlines()) <= TABLE_WIDTH
    assert table.splitlines()[0].split() == ["artifact", "precision", "device", "runtime", "thr", "p50", "ms", "p90",
                                             "p99", "RSS", "MB"]
    assert "mobilenet_v2_w0.5_r160.tflite" in table  # short names are never cut
    assert "…" in table and "_int8.tflite" in table  # long ones keep their start and their end
    assert "FAILED" in table.splitlines()[-1]
    wide = results_table(results, wide=True)
    header = wide.splitlines()[0]
    assert all(h in header for h in HEADERS) and "a_folder_of_bundles/efficientnet_b7_r600_int8.onnx" in wide


def test_inspect_reports_the_output_psnr_exactly_as_parity_computes_it():
    """One measure, one name: inspect's output PSNR over several pictures is parity's PSNR of the same logits,
    and its summary line puts it first, with the per-layer SQNR beside it (lower on logits with a high peak)."""
    from edgekit.layerwise import LayerError, LayerReport, _Accumulator, summary
    from edgekit.parity import compare

    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, (4, 1000)).astype(np.float32)
    reference[:, 7] += 12.0  # a confident class: the peak far above the RMS, as a trained classifier's logits
    candidate = reference + rng.normal(0.0, 0.05, reference.shape).astype(np.float32)
    accumulator = _Accumulator()
    for ref, out in zip(reference, candidate):
        accumulator.add(ref, out)
    assert accumulator.psnr_db == pytest.approx(compare(reference, candidate).psnr_db, abs=1e-3)
    assert accumulator.psnr_db > accumulator.sqnr_db + 10

    output = LayerError(30, "classifier.1", "FULLY_CONNECTED", "logits", (1, 1000), accumulator.sqnr_db,
                        accumulator.cosine, 0.1, accumulator.psnr_db)
    line = summary(LayerReport("m_int8.tflite", "m.tflite", "tflite", 4, [output]))
    assert f"output PSNR {accumulator.psnr_db:.1f} dB (parity's measure; SQNR {accumulator.sqnr_db:.1f} dB)" in line
    assert LayerError.from_dict(output.to_dict()).psnr_db == pytest.approx(accumulator.psnr_db)


def _run_two_steps(capsys, monkeypatch, *, terminal: bool, verbose: bool = False) -> str:
    """Two steps, the first with a progress counter inside, as an export runs them; returns what stderr got."""
    from edgekit import console

    monkeypatch.setattr(console, "_terminal", lambda: terminal)
    monkeypatch.setattr(console, "_VERBOSE", verbose)
    monkeypatch.setattr(console, "_QUIET", False)
    clock = iter(range(0, 10_000, 1))  # one second per reading: past the half-second throttle, not the log's 30 s
    monkeypatch.setattr(console.time, "monotonic", lambda: float(next(clock)))
    with console.step("calibration") as outcome:
        progress = console.Progress("images", 3)
        for _ in range(3):
            progress.advance()
        outcome["detail"] = "3 images"
    with console.step("parity"):
        console.info("a message while a step runs")
    return capsys.readouterr().err


def _screen(stderr: str) -> list[str]:
    """The lines a terminal shows at the end: each carriage return (with erase-line) rewrites the line."""
    return [line.split("\r")[-1].replace("\x1b[K", "") for line in stderr.split("\n") if
            line.split("\r")[-1].replace("\x1b[K", "")]


def test_one_line_per_finished_step_on_a_terminal_with_the_running_step_in_place(capsys, monkeypatch):
    err = _run_two_steps(capsys, monkeypatch, terminal=True)
    assert "calibration ... images 2/3" in err  # the in-place line showed the step and its count
    screen = _screen(err)
    assert len(screen) == 3, screen
    assert screen[0].startswith("[edgekit] calibration done in ") and screen[0].endswith("(3 images)")
    assert screen[1] == "a message while a step runs"
    assert screen[2].startswith("[edgekit] parity done in ")


def test_a_log_gets_one_line_per_finished_step_and_verbose_the_full_log(capsys, monkeypatch):
    log = _run_two_steps(capsys, monkeypatch, terminal=False)
    assert "\r" not in log and "\x1b" not in log
    assert [line.split(" done in ")[0] for line in log.splitlines() if line.startswith("[edgekit]")] == \
        ["[edgekit] calibration", "[edgekit] parity"]
    assert "images" not in log.replace("(3 images)", "")  # a short count is not worth a log line

    full = _run_two_steps(capsys, monkeypatch, terminal=False, verbose=True)
    lines = full.splitlines()
    assert lines[0] == "[edgekit] calibration ..." and "  images 3/3" in lines
    assert "[edgekit] parity ..." in lines


def test_verbose_is_a_flag_of_every_command():
    from edgekit.cli import COMMANDS, build_parser

    parser = build_parser()
    assert parser.parse_args(["-v", "models"]).verbose
    for name in COMMANDS:
        assert "--verbose" in parser._subparsers._group_actions[0].choices[name]._option_string_actions
