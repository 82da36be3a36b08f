"""Test material shared by the device tests: small real models and bundles written the way export writes them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

VENV_PYTHON = sys.executable


def export_small_onnx(path: Path) -> Path:
    """A real edgekit model (MobileNetV2 0.35 at 96 px) through torch.onnx's legacy exporter (about 2 s)."""
    import torch

    import edgekit

    model = edgekit.create_model("mobilenet_v2", width=0.35, resolution=96, num_classes=10, weights="random")
    torch.onnx.export(model, (torch.randn(1, 3, 96, 96),), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], opset_version=17)
    return path


def int8_input_onnx(path: Path) -> Path:
    """A tiny graph with an int8 input and a symbolic batch dimension, built node by node."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("Relu", ["xf"], ["y"])],
        "int8_input", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_bundle(folder: Path, files: dict[str, tuple[Path, str]]) -> Path:
    """A bundle folder as export writes it: each name -> (source file, precision), and its manifest.json."""
    from edgekit.manifest import Artifact, Manifest

    folder.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for name, (source, precision) in files.items():
        shutil.copyfile(source, folder / name)
        artifacts.append(Artifact.describe(folder, name, Path(name).suffix[1:], precision))
    Manifest(model={"variant": folder.name}, preprocessing={}, options={}, artifacts=artifacts).write(folder)
    return folder


def python_without_runtimes(folder: Path, with_numpy: bool = True) -> Path:
    """A Python with numpy (or not) but neither LiteRT nor ONNX Runtime: the venv's interpreter, no site-packages."""
    import numpy

    name = "python-no-runtime" if with_numpy else "python-no-numpy"
    site = folder / f"site-{name}"
    site.mkdir(parents=True)
    numpy_dir = Path(numpy.__file__).parent
    for package in ("numpy", "numpy.libs") if with_numpy else ():
        if (numpy_dir.parent / package).exists():
            (site / package).symlink_to(numpy_dir.parent / package)
    wrapper = folder / name
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {VENV_PYTHON} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


# ---------------------------------------------------------------------------------------------- a real sshd
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# sshd from openssh-server; ssh and ssh-keygen from openssh-client. .ci/run installs both; a machine without
# them skips the SSH tests (by name, with the package to install) instead of erroring in a fixture.
MISSING_OPENSSH = [name for name, present in (("sshd", Path(SSHD).exists()), ("ssh", shutil.which("ssh")),
                                              ("ssh-keygen", shutil.which("ssh-keygen"))) if not present]
NO_OPENSSH_REASON = (f"needs OpenSSH's {' and '.join(MISSING_OPENSSH)}: apt-get install openssh-server "
                     "openssh-client (.ci/run installs them)")


def keygen(path: Path) -> str:
    """A fresh ed25519 key pair at ``path``; returns the public key's base64 part."""
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True)
    return Path(f"{path}.pub").read_text().split()[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(home: Path, host_key: Path, authorized_keys: Path):
    """A real OpenSSH server on a free 127.0.0.1 port, public-key login only, its files under ``home``.
    Returns (process, port); fails the test if it does not accept connections within 20 s."""
    import socket
    import subprocess
    import time

    import pytest

    port = free_port()
    config = home / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {home / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"sshd did not start: {server.stderr.read()}")
            time.sleep(0.1)
