"""How `edgekit export` fails: one-line errors and exit codes for bad input, a manifest that records a
failed conversion, and no file that looks finished after a failure or an interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import edgekit
from edgekit.cli import main
from edgekit.manifest import Manifest
from edgekit.pipeline import ExportFailed, ExportSpec, run_export

SMALL = ["mobilenet_v1", "--width", "0.25", "--resolution", "128", "--weights", "random"]
SMALL_VARIANT = "mobilenet_v1_w0.25_r128"


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgekit: error:")]
    assert len(err) == 1
    return err[0]


def test_unknown_format_is_a_one_line_usage_error(tmp_path, capsys):
    out = tmp_path / "exports"
    assert main(["export", *SMALL, "--formats", "onnx,coreml", "--out", str(out)]) == 2
    assert "unknown format 'coreml'" in _one_line_error(capsys)
    assert not out.exists()


def test_unwritable_output_folder_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["export", *SMALL, "--out", str(blocker / "exports")]) == 2
    assert "cannot create output folder" in _one_line_error(capsys)


def test_a_folder_that_is_not_a_bundle_is_never_replaced(tmp_path, capsys):
    mine = tmp_path / SMALL_VARIANT
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    assert main(["export", *SMALL, "--out", str(tmp_path)]) == 2
    assert "is not an edgekit bundle" in _one_line_error(capsys)
    assert (mine / "notes.txt").read_text() == "the user's own file"


def test_bad_options_are_usage_errors(tmp_path, capsys):
    assert main(["export", *SMALL, "--fp16", "--formats", "onnx", "--out", str(tmp_path)]) == 2
    assert "--fp16" in _one_line_error(capsys)
    assert main(["export", *SMALL, "--opset", "13", "--out", str(tmp_path)]) == 2
    assert "opset 17 or newer" in _one_line_error(capsys)
    assert main(["export", *SMALL, "--gate", "fp32.cosine=1", "--out", str(tmp_path)]) == 2
    assert "unknown metric 'cosine'" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


class DataDependent(nn.Module):
    """Branches on a value: PyTorch's tracer (ONNX) follows one branch, torch.export (litert-torch) refuses."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        y = self.net(x)
        if y.sum() > 0:
            return y
        return -y


@pytest.mark.slow  # a real ONNX export before the TFLite conversion fails (~7 s)
def test_a_model_that_cannot_be_converted_fails_with_the_step_recorded(tmp_path, capsys):
    net = edgekit.create_model("mobilenet_v1", width=0.25, resolution=128)
    model = DataDependent(net)
    model.edgekit_config = net.edgekit_config
    spec = ExportSpec("mobilenet_v1", out=tmp_path, parity_samples=2, parity_random=1)
    with pytest.raises(ExportFailed, match="tflite fp32 failed: TFLite conversion failed") as failure:
        run_export(spec, model=model)
    assert failure.value.exit_code == 3
    assert "\n" not in str(failure.value)

    bundle = tmp_path / SMALL_VARIANT
    manifest = Manifest.read(bundle)
    assert manifest.status == "failed" and not manifest.passed
    assert manifest.failed_step == "tflite fp32" and "GuardOnDataDependent" in manifest.error
    assert [s.status for s in manifest.steps] == ["done", "done", "done", "failed"]
    names = {p.name for p in bundle.iterdir()}
    assert f"{SMALL_VARIANT}.tflite" not in names
    assert not any(n.startswith(".") or n.endswith(".tmp") for n in names)  # no half-written file
    assert [p.name for p in tmp_path.iterdir()] == [SMALL_VARIANT]  # no staging folder
    assert "**EXPORT FAILED** at step `tflite fp32`" in (bundle / "report.md").read_text()

    capsys.readouterr()
    assert main(["validate", str(bundle)]) == 1
    assert "export failed at step tflite fp32" in capsys.readouterr().out


class _InterruptedInsideALibrary(nn.Module):
    """Ctrl-C lands while a library defines a class, as it did under load during an import inside litert-torch's
    conversion: Python 3.11 wraps the KeyboardInterrupt raised in ``__set_name__`` in a RuntimeError."""

    def __init__(self, net):
        super().__init__()
        self.net, self.edgekit_config = net, net.edgekit_config

    def forward(self, x):
        if isinstance(x, torch.Tensor):  # not while prepare's fx trace (which falls back on any error) runs it
            class Field:
                def __set_name__(self, owner, name):
                    os.kill(os.getpid(), signal.SIGINT)

            type("Options", (), {"inner_contexts": Field()})
        return self.net(x)


def test_an_interrupt_that_a_library_turned_into_its_own_error_still_stops_the_export(tmp_path):
    previous = tmp_path / SMALL_VARIANT
    previous.mkdir()
    (previous / "manifest.json").write_text(PREVIOUS_MANIFEST)
    model = _InterruptedInsideALibrary(edgekit.create_model("mobilenet_v1", width=0.25, resolution=128))
    spec = ExportSpec("mobilenet_v1", out=tmp_path, parity_samples=2, parity_random=1)
    with pytest.raises(KeyboardInterrupt):
        run_export(spec, model=model)
    assert [p.name for p in tmp_path.iterdir()] == [SMALL_VARIANT]  # no staging folder, no failed bundle
    assert (previous / "manifest.json").read_text() == PREVIOUS_MANIFEST


# A command stopped by Ctrl-C, and a second SIGINT sent while edgekit writes "edgekit: interrupted"
_SECOND_SIGNAL = """
import os, signal, sys
import edgekit.cli as cli
import edgekit.commands.models as models

class Stderr:
    def __init__(self, real):
        self.real, self.sent = real, False

    def write(self, text):
        if "interrupted" in text and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return self.real.write(text)

    def flush(self):
        self.real.flush()

def run(args):
    os.kill(os.getpid(), signal.SIGINT)

models.run = run
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (a pytest-xdist worker ignores it)
sys.stderr = Stderr(sys.__stderr__)
sys.argv = ["edgekit", "models"]
sys.exit(cli.main())
"""


def test_a_second_signal_while_stopping_keeps_the_exit_status():
    """Seen once under load: "edgekit: interrupted" printed, then the process died by SIGINT (-2) instead of exiting
    130, a second SIGINT (a native library re-raising the first) having landed after edgekit caught the first."""
    done = subprocess.run([sys.executable, "-c", _SECOND_SIGNAL], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip().splitlines()[-1] == "edgekit: interrupted"



# `python -m` a module that, like a library evaluating Python from C (PyRun_String), is interrupted inside it
_INTERRUPT_IN_C_EVAL = """
import ctypes, signal, sys
import edgekit.cli as cli
import edgekit.commands.models as models

ctypes.pythonapi.PyRun_String.restype = ctypes.py_object
ctypes.pythonapi.PyRun_String.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
FILE_INPUT = 257

def run(args):
    code = b"import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(60)"
    ctypes.pythonapi.PyRun_String(code, FILE_INPUT, {}, {})

models.run = run
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (a pytest-xdist worker ignores it)
sys.argv = ["edgekit", "models"]
sys.exit(cli.main())
"""


def test_an_interrupt_inside_python_run_from_c_exits_130_under_python_m(tmp_path):
    """Seen under load: "edgekit: interrupted" printed, then death by SIGINT (-2). The KeyboardInterrupt had left
    Python code run by PyRun_String, which sets CPython's "unhandled KeyboardInterrupt" flag; `python -m` checks
    it at exit and kills itself with SIGINT even though edgekit caught the interrupt and returned 130."""
    (tmp_path / "interrupt_in_c_eval.py").write_text(_INTERRUPT_IN_C_EVAL)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "interrupt_in_c_eval"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip().splitlines()[-1] == "edgekit: interrupted"

# what an earlier edgekit export left (any edgekit manifest is one; a user's own manifest.json is not)
PREVIOUS_MANIFEST = '{"format_version": 1, "edgekit_version": "0.1.0", "artifacts": [], "previous": true}'


@pytest.mark.slow  # a fresh edgekit process exporting up to the TFLite conversion (~7 s)
@pytest.mark.parametrize("step, sig, code, said", [
    # inside litert-torch's native conversion, which holds the signal until it returns
    ("tflite export (fp32) ...", signal.SIGINT, 130, "interrupted"),
    ("onnx export (fp32) ...", signal.SIGINT, 130, "interrupted"),  # Ctrl-C early in the first conversion
    ("onnx export (fp32) ...", signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_export_leaves_the_previous_bundle_and_no_partial_file(tmp_path, step, sig, code, said):
    previous = tmp_path / SMALL_VARIANT
    previous.mkdir()
    (previous / "manifest.json").write_text(PREVIOUS_MANIFEST)
    # --verbose: the log names each step as it starts (by default only finished steps are printed)
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "export", *SMALL, "--out", str(tmp_path), "--verbose"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if step in line:
                break
        time.sleep(1.0 if step.startswith("tflite") else 0.2)  # inside the conversion
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert said in err
    assert "FAILED" not in err, err  # the step it landed in "stopped", no failure
    assert [p.name for p in tmp_path.iterdir()] == [SMALL_VARIANT]  # no hidden .partial folder either
    assert [p.name for p in previous.iterdir()] == ["manifest.json"]
    assert (previous / "manifest.json").read_text() == PREVIOUS_MANIFEST
