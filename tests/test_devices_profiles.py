"""Device profiles (TOML), device selection, the devices listing, and the chart of mixed results."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.devices.chart import write_latency_chart
from edgekit.devices.profiles import (AndroidProfile, SshProfile, default_profiles_path, load_profiles,
                                      select_devices)
from edgekit.devices.results import LatencyResult
from edgekit.devices.ssh import SshDevice
from edgekit.errors import EdgekitError

GOOD = """
[devices.pi5]
kind = "ssh"
host = "pi5.local"
user = "pi"
known_hosts = "~/.ssh/known_hosts"
python = "~/venv/bin/python"
threads = [1, 4, 4]
runtime = "litert"
taskset = "f0"

[devices.pixel]
kind = "android"
serial = "38071FDJH00A1B"
benchmark_model = "~/android/benchmark_model"
delegate = "gpu"

[devices.local]
threads = 2
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(text)
    return path


def test_profiles_load_with_types_and_defaults(tmp_path):
    profiles, source = load_profiles(_write(tmp_path, GOOD))
    assert source == tmp_path / "devices.toml"
    pi = profiles["pi5"]
    assert isinstance(pi, SshProfile) and pi.threads == (1, 4) and pi.host_key_checking == "strict"
    assert pi.describe() == "ssh pi@pi5.local" and pi.connect_timeout == 10.0
    assert isinstance(profiles["pixel"], AndroidProfile) and profiles["pixel"].work_dir == "/data/local/tmp"
    assert profiles["local"].threads == (2,)
    assert [p.name for p in select_devices(profiles, ["pixel", "pi5", "pixel"], False, source)] == ["pixel", "pi5"]
    assert [p.name for p in select_devices(profiles, None, True, source)] == ["local", "pi5", "pixel"]


def test_ssh_command_line_checks_host_keys_and_quotes_the_remote_side(tmp_path):
    profiles, _ = load_profiles(_write(tmp_path, GOOD))
    command = SshDevice(profiles["pi5"]).ssh_command("true")
    joined = " ".join(command)
    assert "StrictHostKeyChecking=yes" in joined and "BatchMode=yes" in joined and "ConnectTimeout=10" in joined
    assert f"UserKnownHostsFile={Path('~/.ssh/known_hosts').expanduser()}" in joined
    assert command[-3:] == ["--", "pi5.local", "true"]
    from edgekit.devices.ssh import _remote_word

    assert _remote_word("~/venv/bin/python") == '"$HOME"/venv/bin/python'
    assert _remote_word("/tmp/a b'c") == "'/tmp/a b'\"'\"'c'"
    off = SshDevice(SshProfile(name="x", kind="ssh", host="h", host_key_checking="off")).ssh_command("true")
    assert "StrictHostKeyChecking=no" in off and "UserKnownHostsFile=/dev/null" in off


@pytest.mark.parametrize("text, message", [
    ('[devices.pi]\nkind = "ssh"\n', "needs host"),
    ('[devices.pi]\nkind = "sssh"\nhost = "x"\n', "choose one of local, ssh, android"),
    ('[devices.pi]\nkind = "ssh"\nhost = "x"\nthreds = 4\n', "unknown setting threds; a ssh device takes"),
    ('[devices.pi]\nkind = "ssh"\nhost = "x"\nthreads = [0]\n', "threads must be a whole number >= 1"),
    ('[devices.pi]\nkind = "ssh"\nhost = "x"\nport = "22"\n', "port must be a whole number"),
    ('[devices.pi]\nkind = "ssh"\nhost = "-oProxyCommand=sh"\n', "not a host name"),
    ('[devices.pi]\nkind = "ssh"\nhost = "x"\nuser = "-l root"\n', "not a user name"),
    ('[devices.pi]\nkind = "ssh"\nhost = "x"\nhost_key_checking = "no"\n', "choose one of strict, accept-new"),
    ('[devices.ph]\nkind = "android"\n', "needs benchmark_model"),
    ('[devices.ph]\nkind = "android"\nbenchmark_model = "b"\ntaskset = "f0; reboot"\n', "hexadecimal CPU mask"),
    ('[devices.ph]\nkind = "android"\nbenchmark_model = "b"\ndelegate = "npu"\n', "choose one of xnnpack"),
    ('[devices.local]\nkind = "ssh"\nhost = "x"\n', "the name 'local' is this machine"),
    ('[pi]\nkind = "ssh"\n', "put each device under [devices.NAME]"),
    ('[devices.pi\n', "not valid TOML"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, text, message):
    """A broken file fails when read; a broken device when it is used (the others stay usable)."""
    with pytest.raises(EdgekitError, match=message.replace("[", r"\[").replace(".", r"\.")):
        profiles, source = load_profiles(_write(tmp_path, text))
        select_devices(profiles, [n for n in profiles if n != "local"] or ["local"], False, source)


def test_one_bad_device_leaves_the_others_usable(tmp_path, capsys):
    text = GOOD + '\n[devices.broken]\nkind = "ssh"\nhost = "x"\ntimeout = nan\n'
    profiles, source = load_profiles(_write(tmp_path, text))
    assert [p.name for p in select_devices(profiles, ["pi5"], False, source)] == ["pi5"]
    with pytest.raises(EdgekitError, match="timeout must be a positive number of seconds, not nan"):
        select_devices(profiles, ["broken"], False, source)
    everything = select_devices(profiles, None, True, source)
    assert "broken" not in [p.name for p in everything] and "pi5" in [p.name for p in everything]
    assert "device broken skipped: " in capsys.readouterr().err


def test_default_file_follows_xdg_and_unknown_names_list_the_known(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_profiles_path() == tmp_path / "edgekit" / "devices.toml"
    profiles, source = load_profiles()
    assert list(profiles) == ["local"] and source is None
    (tmp_path / "edgekit").mkdir()
    (tmp_path / "edgekit" / "devices.toml").write_text(GOOD)
    profiles, source = load_profiles()
    with pytest.raises(EdgekitError, match=r"unknown device 'pi4'; known devices: local, pi5, pixel \(from "):
        select_devices(profiles, ["pi4"], False, source)
    assert main(["bench", "--list-devices"]) == 0
    listing = capsys.readouterr().out
    assert "pi5" in listing and "ssh pi@pi5.local" in listing and "adb 38071FDJH00A1B gpu" in listing
    with pytest.raises(EdgekitError, match="does not exist; check the --devices path"):
        load_profiles(tmp_path / "missing.toml")


def test_chart_of_samples_summaries_and_failures(tmp_path):
    def row(device, **kw):
        return LatencyResult("m_int8.tflite", "tflite", "int8", 4_000_000, device, "local", 1, runtime="ai_edge_litert",
                             runtime_version="2.3.0", **kw)

    rows = [row("local").with_samples([3.0, 3.2, 3.1, 3.6, 9.0]),
            # A phone: benchmark_model's summary only, and two orders of magnitude apart (log axis).
            row("pixel", mean_ms=250.0, min_ms=240.0, max_ms=400.0, p50_ms=249.0),
            row("pi5", error="unreachable")]
    out = write_latency_chart(rows, tmp_path / "charts" / "latency.png", "test")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    assert write_latency_chart([rows[2]], tmp_path / "none.png", "test") is None
    assert not (tmp_path / "none.png").exists()
