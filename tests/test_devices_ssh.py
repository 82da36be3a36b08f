"""SSH devices against a real OpenSSH server started here on 127.0.0.1, with a temporary host key and user key.

The "board" is this machine: the device Python is the venv's (it has ai_edge_litert and onnxruntime), reached
through a wrapper whose path holds a space and a quote, so the remote command's quoting is exercised for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from devices_helpers import (MISSING_OPENSSH, NO_OPENSSH_REASON, free_port, keygen, python_without_runtimes,
                             start_sshd)

from edgekit.cli import main
from edgekit.devices.artifacts import load_target
from edgekit.devices.base import BenchSettings
from edgekit.devices.profiles import LocalProfile, SshProfile
from edgekit.devices.session import run_benchmarks

QUICK = BenchSettings(runs=3, warmup=1, threads=(1,))
MISSING, SKIP_REASON = MISSING_OPENSSH, NO_OPENSSH_REASON

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON),
    pytest.mark.slow,  # a real sshd, and a remote Python that loads LiteRT for every measurement
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if MISSING:  # pytestmark skips every test here first; kept for a test added without it
        pytest.skip(SKIP_REASON)
    home = tmp_path_factory.mktemp("sshd")
    host_key, user_key = home / "host_ed25519", home / "user_ed25519"
    host_pub = keygen(host_key)
    keygen(user_key)
    (home / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    server, port = start_sshd(home, host_key, home / "authorized_keys")
    known_hosts = home / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {host_pub}\n")
    # The "device" Python: the venv's, behind a path that needs quoting on the remote shell.
    python_dir = home / "py bin's"
    python_dir.mkdir()
    python = python_dir / "python 3"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    yield {"port": port, "known_hosts": known_hosts, "key": user_key, "python": python, "home": home}
    server.terminate()
    server.wait(timeout=10)


def _board(sshd, name="board", **overrides) -> SshProfile:
    settings = dict(host="127.0.0.1", port=sshd["port"], identity_file=str(sshd["key"]),
                    known_hosts=str(sshd["known_hosts"]), python=str(sshd["python"]), connect_timeout=5.0)
    settings.update(overrides)
    return SshProfile(name=name, kind="ssh", **settings)


@pytest.fixture(scope="module")
def model_with_awkward_name(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("models") / "my models"
    folder.mkdir()
    target = folder / """v2 "quant" it's.tflite"""
    shutil.copyfile(shared_data / "tflite" / "mobilenet_v2_1.0_224_quant.tflite", target)
    return target


def test_bench_over_ssh_matches_the_local_report(sshd, model_with_awkward_name, tmp_path):
    work = tmp_path / "board tmp"  # parent of the remote work folder, to prove it is cleaned up
    work.mkdir()
    board = _board(sshd, work_dir=str(work), threads=(1, 2))
    results = run_benchmarks(load_target(model_with_awkward_name), [board], BenchSettings(runs=3, warmup=1))
    assert [(r.device, r.threads) for r in results] == [("board", 1), ("board", 2)]
    for r in results:
        assert r.ok, r.error
        assert r.runtime == "ai_edge_litert" and r.device_kind == "ssh"
        assert len(r.samples_ms) == 3 and r.min_ms <= r.p50_ms <= r.p99_ms <= r.max_ms
        assert r.peak_rss_mb > 0 and r.load_ms > 0
        assert r.extra["inputs"][0]["dtype"] == "uint8"
        assert r.artifact == model_with_awkward_name.name
    assert list(work.iterdir()) == []  # work folder removed


def test_devices_run_concurrently_and_a_dead_one_gives_error_rows(sshd, model_with_awkward_name, tmp_path, capsys):
    closed_port = free_port()
    profiles = tmp_path / "devices.toml"
    profiles.write_text(f"""
[devices.board]
kind = "ssh"
host = "127.0.0.1"
port = {sshd['port']}
identity_file = {json.dumps(str(sshd['key']))}
known_hosts = {json.dumps(str(sshd['known_hosts']))}
python = {json.dumps(str(sshd['python']))}
threads = [2]

[devices.dead]
kind = "ssh"
host = "127.0.0.1"
port = {closed_port}
known_hosts = {json.dumps(str(sshd['known_hosts']))}
connect_timeout = 3
""")
    out = tmp_path / "bench.json"
    code = main(["bench", str(model_with_awkward_name), "--devices", str(profiles), "--device", "local,board,dead",
                 "--runs", "3", "--warmup", "0", "--json", str(out), "--no-chart"])
    assert code == 1  # the table and JSON are written, and the exit status says something failed
    captured = capsys.readouterr()
    rows = json.loads(out.read_text())["results"]
    by_device = {r["device"]: r for r in rows}
    assert [r["device"] for r in rows] == ["local", "local", "board", "dead"]
    assert by_device["board"]["threads"] == 2 and by_device["board"]["error"] is None
    assert by_device["local"]["error"] is None
    assert "unreachable (Connection refused)" in by_device["dead"]["error"]
    assert "dead: ssh 127.0.0.1:" in captured.out and "FAILED" in captured.out
    assert "1 of 4 measurements failed" in captured.err


def test_unknown_and_changed_host_keys_are_refused(sshd, model_with_awkward_name, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    impostor = tmp_path / "impostor_known_hosts"
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    impostor.write_text(f"[127.0.0.1]:{sshd['port']} {Path(f'{other_key}.pub').read_text()}")
    results = run_benchmarks(load_target(model_with_awkward_name),
                             [_board(sshd, "unknown", known_hosts=str(empty)),
                              _board(sshd, "changed", known_hosts=str(impostor))], QUICK)
    unknown, changed = results
    assert "host key verification failed: its key is not in" in unknown.error
    assert "ssh-keyscan -p" in unknown.error and 'host_key_checking = "accept-new"' in unknown.error
    assert "host key CHANGED" in changed.error and "ssh-keygen -R" in changed.error
    assert empty.read_text() == ""  # strict checking never records a key by itself


def test_accept_new_records_the_key_on_first_use(sshd, model_with_awkward_name, tmp_path):
    known = tmp_path / "known_hosts"
    [result] = run_benchmarks(load_target(model_with_awkward_name),
                              [_board(sshd, known_hosts=str(known), host_key_checking="accept-new")], QUICK)
    assert result.ok, result.error
    assert "ssh-ed25519" in known.read_text()


def test_board_without_runtime_is_told_what_to_install(sshd, model_with_awkward_name, tmp_path):
    bare_python = python_without_runtimes(tmp_path)
    [result] = run_benchmarks(load_target(model_with_awkward_name), [_board(sshd, python=str(bare_python))], QUICK)
    assert result.error == (f"no TFLite runtime in {bare_python} there; install one: {bare_python} -m pip install "
                            "ai-edge-litert (or tflite-runtime)")


def test_missing_python_and_commands_with_options_in_names(sshd, model_with_awkward_name):
    [result] = run_benchmarks(load_target(model_with_awkward_name),
                              [_board(sshd, python="/nonexistent/python3")], QUICK)
    assert "/nonexistent/python3 not found there" in result.error
    # A profile host can never smuggle in an ssh option.
    from edgekit.devices.profiles import _profile
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match="not a host name"):
        _profile("evil", {"kind": "ssh", "host": "-oProxyCommand=touch /tmp/pwned"}, Path("devices.toml"))


def test_ssh_and_local_side_by_side_without_device_file(sshd, model_with_awkward_name):
    results = run_benchmarks(load_target(model_with_awkward_name),
                             [LocalProfile(name="local", kind="local"), _board(sshd)], QUICK)
    assert [r.device for r in results] == ["local", "board"] and all(r.ok for r in results)
    assert results[0].machine["hostname"] == results[1].machine["hostname"]  # the same machine, two routes
