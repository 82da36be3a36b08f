"""Shared fixtures: the read-only test data beside the checkout, and seeded randomness."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from edgekit.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "imagenet-samples" / "labels.csv").exists():
        pytest.fail(f"shared test data missing at {SHARED_DATA}; set EDGEKIT_DATA to the folder")
    return SHARED_DATA


def pytest_configure(config):
    # as every `edgekit` command does (edgekit/allocator.py): the tests' PyTorch batches reuse freed memory
    # instead of faulting it in again (tests/test_tflite_import.py alone: 22 s in the kernel before, 5 s after)
    keep_freed_memory()
    # Under pytest-xdist (`make test` runs one worker per core) each worker gets an equal share of the cores, so
    # PyTorch's intra-op pool does not fight the other worker for them.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, so no test sees checkpoints a developer happens to have."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch_home" / "hub"


# --- Export bundles shared by several test modules ---------------------------------------------------------------
# Each export below used to be made once per module, and two modules made the same one. Session scope makes each
# of them once per run, in whichever module asks first; the tests only read them (tampering tests copy first).

V1_SMALL = "mobilenet_v1_0.25_128_quant.tflite"
V1_SMALL_VARIANT = "mobilenet_v1_w0.25_r128"
V2_QUANT = "mobilenet_v2_1.0_224_quant.tflite"


def _once_per_run(tmp_path_factory, name: str, make) -> tuple[dict, Path]:
    """``make(folder)`` once per test run, even across pytest-xdist workers: the first worker to ask builds it
    under a file lock, the others wait and read the JSON record it left. Returns (record, folder)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder all workers' base temps share
    folder, record = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not record.exists():
            folder.mkdir(exist_ok=True)
            record.write_text(json.dumps(make(folder)))
    return json.loads(record.read_text()), folder


def _run_cli(argv: list[str]) -> dict:
    """``edgekit ARGV`` in this process with stdout and stderr collected, so that the export's console never
    lands in the capsys buffer of whichever test happens to request the fixture first."""
    import contextlib
    import io

    from edgekit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


@pytest.fixture(scope="session")
def v2_fp16_export(shared_data, tmp_path_factory) -> dict:
    """Google's MobileNet v2 1.0/224 imported, exported to fp32 ONNX, fp32 and fp16 TFLite, parity on 8 ImageNet
    photos, host latency measured (test_export.py checks all of it). test_quantize.py quantizes its fp32 files."""
    weights = shared_data / "tflite" / V2_QUANT
    result, out = _once_per_run(tmp_path_factory, "exports_v2", lambda out: _run_cli(
        ["export", "mobilenet_v2", "--weights", str(weights), "--fp16", "--out", str(out),
         "--data", str(shared_data / "imagenet-samples" / "images"), "--parity-samples", "8"]))
    return result | {"out": out, "bundle": out / "mobilenet_v2", "weights": weights}


@pytest.fixture(scope="session")
def v1_int8_bundle(shared_data, tmp_path_factory) -> dict:
    """Google's MobileNet v1 0.25/128 imported, fp32 and int8 ONNX and TFLite, int8 calibrated on the 9 shared
    everyday photos, which are also the parity photos (default --parity-samples 16, so all 9, plus 4 random
    inputs). No host latency: none of its users (test_eval_bundle.py, test_inspect.py) looks at it; the latency
    section is checked by test_export.py and test_export_int8.py. The per-layer comparison still runs: export
    has no option to skip it."""
    result, out = _once_per_run(tmp_path_factory, "exports_v1_int8", lambda out: _run_cli(
        ["export", "mobilenet_v1", "--weights", str(shared_data / "tflite" / V1_SMALL), "--int8",
         "--calib", str(shared_data / "photos"), "--out", str(out), "--latency-runs", "0"]))
    return result | {"out": out, "bundle": out / V1_SMALL_VARIANT}


@pytest.fixture(scope="session")
def v1_fp32_bundle(shared_data, tmp_path_factory) -> dict:
    """Google's MobileNet v1 0.25/128 imported, fp32 ONNX and TFLite only, parity on 6 ImageNet photos and 2
    random inputs, no host latency (test_validate.py). test_quantize.py quantizes its fp32 files."""
    weights = shared_data / "tflite" / V1_SMALL
    result, out = _once_per_run(tmp_path_factory, "exports_v1_fp32", lambda out: _run_cli(
        ["export", "mobilenet_v1", "--width", "0.25", "--resolution", "128", "--weights", str(weights),
         "--out", str(out), "--data", str(shared_data / "imagenet-samples" / "images"),
         "--parity-samples", "6", "--parity-random", "2", "--latency-runs", "0"]))
    return result | {"out": out, "bundle": out / V1_SMALL_VARIANT}


@pytest.fixture(scope="session")
def v2_imagenet_logits(shared_data, tmp_path_factory):
    """Google's MobileNet v2 1.0/224 imported, in PyTorch, on the 250 shared ImageNet images in labels.csv order
    ([250, 1000] float32): one forward pass per run, read by test_tflite_import.py (the import against its source
    file) and test_quantize.py (the fp32 reference its int8 files are judged against)."""
    import numpy as np

    def make(folder: Path) -> dict:
        import edgekit
        from edgekit.evaluate import image_batches, torch_predictor
        from edgekit.images import read_labelled_set

        model = edgekit.create_model("mobilenet_v2", weights=shared_data / "tflite" / V2_QUANT).eval()
        config = model.edgekit_config
        items = read_labelled_set(shared_data / "imagenet-samples" / "labels.csv")
        predict = torch_predictor(model)  # as `edgekit eval` runs it
        logits = np.concatenate([predict(batch.inputs) for batch in image_batches(
            items, config.resolution, config.preprocessing, batch_size=50)])
        assert len(logits) == len(items) == 250  # every image read: row i is labels.csv's row i
        np.save(folder / "logits.npy", logits)
        return {"path": str(folder / "logits.npy")}

    record, _ = _once_per_run(tmp_path_factory, "v2_imagenet_logits", make)
    return np.load(record["path"])


SHARED_EXPORTS = ("v2_fp16_export", "v1_fp32_bundle", "v1_int8_bundle", "v2_imagenet_logits")  # made once per run


@pytest.fixture(scope="session", autouse=True)
def _shared_exports_made_early(request):
    """Under pytest-xdist, each worker makes its share of the shared exports that the run's tests need before its
    own first test. Otherwise a worker whose first test needs an export the other worker is making waits idle:
    about 19 s of the fast lane's 100 s of work went so."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or workers < 2:
        return
    needed = [name for name in SHARED_EXPORTS if any(name in item.fixturenames for item in request.session.items)]
    for name in needed[int(worker[2:])::workers]:
        request.getfixturevalue(name)
