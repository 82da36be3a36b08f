"""ARM's own kernels with no board: `edgekit validate --emulate aarch64`, `edgekit emulate`, the `emulated` bench
device, and an SSH board whose Python is the emulated one.

Everything runs for real: qemu-user from Debian, an arm64 Python unpacked from Debian's packages, the aarch64
wheels of the host's runtimes. The environment is built on first use (about 40 s, 260 MB, in the user's cache;
.ci/run builds it before `make test`); where it cannot be built (no apt, no route to the archives) the tests that
need it skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import V1_SMALL
from conftest import V1_SMALL_VARIANT as VARIANT
from devices_helpers import MISSING_OPENSSH, NO_OPENSSH_REASON, keygen, start_sshd
from pair_models import load_models, write_models

import edgekit
from edgekit import emulate
from edgekit.cli import main
from edgekit.devices.artifacts import load_target
from edgekit.devices.base import BenchSettings
from edgekit.devices.profiles import EmulatedProfile, SshProfile, load_profiles, select_devices
from edgekit.devices.session import run_benchmarks
from edgekit.errors import EdgekitError

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


@pytest.fixture(scope="module")
def environment() -> emulate.Environment:
    try:
        return emulate.ensure_environment()
    except EdgekitError as e:
        pytest.skip(f"the emulated aarch64 environment cannot be built here: {e}")


@pytest.fixture()
def bundle(v1_int8_bundle, tmp_path) -> Path:
    """A copy of MobileNet v1 0.25/128 with Google's weights, fp32 and int8, ONNX and TFLite: validate --emulate
    writes its proof into the manifest, and the session's bundle is shared read-only."""
    assert v1_int8_bundle["code"] == 0, v1_int8_bundle["stderr"][-2000:]
    return Path(shutil.copytree(v1_int8_bundle["bundle"], tmp_path / "bundle"))


# ---------------------------------------------------------------------------------------------- no emulation
def test_cpu_list_keeps_a_models_properties_with_it():
    assert emulate.parse_cpus("cortex-a72,cortex-a76,max,sme=off") == ("cortex-a72", "cortex-a76", "max,sme=off")
    assert emulate.parse_cpus("max,sme=off,sve=off,neoverse-n1") == ("max,sme=off,sve=off", "neoverse-n1")
    assert emulate.parse_cpus(" cortex-a76 ,cortex-a76") == ("cortex-a76",)
    for bad in ("", ",", "Cortex A76", "cortex-a76;rm -rf /", "-cpu"):
        with pytest.raises(EdgekitError, match="is not a qemu CPU model|no CPU model"):
            emulate.parse_cpus(bad)


def _cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT, *args], capture_output=True, text=True, env=env, timeout=600)


def test_missing_package_tools_are_one_line_and_exit_2(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PATH=str(tmp_path / "empty"))
    done = _cli(["emulate", "setup"], env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get" in lines[0] and "dpkg-deb" in lines[0] and "install" in lines[0], lines
    info = _cli(["emulate", "info"], env)
    assert info.returncode == 0 and "cannot build here" in info.stdout and "apt-get" in info.stdout


@pytest.mark.skipif(not shutil.which("apt-get"), reason="needs apt-get (Debian)")
@pytest.mark.slow  # apt-get gives up on an unreachable archive only after its retries
def test_no_route_to_the_archive_names_where_to_point_apt_and_leaves_nothing(tmp_path):
    # apt honours http_proxy; a closed local port stands for a machine with no route to the archive. Without
    # retries (APT_CONFIG, apt's own settings file), apt says so at once instead of after its 7 s of back-off.
    (tmp_path / "apt.conf").write_text('Acquire::Retries "0";\n')
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), http_proxy="http://127.0.0.1:9",
               APT_CONFIG=str(tmp_path / "apt.conf"))
    done = _cli(["emulate", "setup"], env)
    assert done.returncode == 2
    error = [line for line in done.stderr.splitlines() if line.startswith("edgekit: error")]
    assert len(error) == 1 and "cannot reach Debian's package archive" in error[0]
    assert "sources.list" in error[0] and "Proxy" in error[0]
    # nothing that looks finished, nothing half-built left behind
    assert list((tmp_path / "cache" / "edgekit" / "emulate").iterdir()) == []


def test_clean_removes_every_environment_and_leftover(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    leftover = tmp_path / "cache" / "edgekit" / "emulate" / ".aarch64-x.abc.partial"
    (leftover / "sysroot").mkdir(parents=True)
    (leftover / "sysroot" / "file").write_bytes(b"x" * 1000)
    done = _cli(["emulate", "clean"], env)
    assert done.returncode == 0 and "removed 1 folder" in done.stdout
    assert not leftover.exists()
    assert "nothing to remove" in _cli(["emulate", "clean"], env).stdout



def test_a_build_removes_the_same_runtimes_in_older_layouts_only(tmp_path):
    built = tmp_path / emulate.environment_key()
    same, other = built.name.rsplit("-v", 1)[0], "aarch64-numpy1.0-onnxruntime1.0-litert1.0"
    folders = [f"{same}-v{emulate.LAYOUT - 1}", f"{same}-v{emulate.LAYOUT - 2}",  # superseded
               f"{other}-v{emulate.LAYOUT - 1}", f"{same}-v{emulate.LAYOUT + 1}", built.name]  # another's: kept
    for name in folders:
        (tmp_path / name / "site").mkdir(parents=True)
    emulate._remove_superseded_layouts(built)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(folders[2:])

def test_emulated_profiles_are_checked(tmp_path):
    path = tmp_path / "devices.toml"
    path.write_text('[devices.arm]\nkind = "emulated"\ncpu = "max,sme=off"\n')
    profiles, _ = load_profiles(path)
    assert profiles["arm"] == EmulatedProfile(name="arm", kind="emulated", cpu="max,sme=off")
    path.write_text('[devices.arm]\nkind = "emulated"\ncpu = "cortex-a72,cortex-a76"\n')
    profiles, source = load_profiles(path)
    with pytest.raises(EdgekitError, match="one qemu CPU model"):
        select_devices(profiles, ["arm"], False, source)


# ---------------------------------------------------------------------------------------------- emulated
@pytest.mark.slow  # the emulated environment (built on first use) and an int8 bundle
def test_emulate_info_describes_the_environment(environment, tmp_path):
    out = tmp_path / "info.json"
    assert main(["emulate", "info", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["built"] and int(record["stamp"]["qemu"].split(".")[0]) >= 8
    assert set(record["stamp"]["versions"]) == set(emulate.RUNTIMES)
    assert {"cortex-a72", "cortex-a76", "max"} <= set(record["stamp"]["cpus"])
    if record["stamp"]["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}":
        # byte-compiled at build, so no emulated run compiles the standard library under qemu again
        stdlib = environment.sysroot / "usr" / "lib" / f"python{record['stamp']['python_version']}"
        assert (stdlib / "__pycache__").is_dir() and any((stdlib / "json" / "__pycache__").glob("*.pyc"))
    # versions match the host's, or the difference is said
    assert record["differences"] == environment.version_differences()
    for name in emulate.RUNTIMES:
        if record["stamp"]["versions"][name] != record["host_runtimes"][name]:
            assert any(d.startswith(name) for d in record["differences"])


@pytest.mark.slow  # Python and the runtimes under qemu: seconds per file
def test_validate_on_arm_kernels_at_each_cpu_model(environment, bundle, tmp_path, capsys):
    report = tmp_path / "validate.json"
    code = main(["validate", str(bundle), "--emulate", "aarch64", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    [entry] = json.loads(report.read_text())
    emulation = entry["emulation"]
    assert emulation["passed"] and emulation["cpus"] == list(emulate.DEFAULT_CPUS)
    rows = emulation["rows"]
    files = sorted({r["artifact"] for r in rows})
    assert len(files) == 4 and len(rows) == 4 * 3
    features = {r["cpu"]: set(r["features"]) for r in rows}
    # the CPU models give the three kernel families: NEON only, dot product, i8mm
    assert "asimddp" not in features["cortex-a72"] and "asimd" in features["cortex-a72"]
    assert "asimddp" in features["cortex-a76"] and "i8mm" not in features["cortex-a76"]
    assert "i8mm" in features["max,sme=off"]
    for r in rows:
        assert r["passed"] and r["error"] is None, r
        assert r["parity"]["gated"] and not r["parity"]["failures"]  # Google's weights: int8 is gated
        if r["precision"] == "int8":  # ARM's integer kernels against the runtime's reference path
            ref = r["arm_vs_reference_path"]
            assert ref["cosine_mean"] >= 0.995 and (ref["psnr_db"] == "inf" or ref["psnr_db"] >= 40), r
        else:
            assert r["vs_host"]["cosine_min"] > 0.9999
        if r["artifact"].endswith("_int8.tflite"):  # measured: XNNPACK's int8 on ARM equals x86's, bit for bit
            assert r["bit_exact_with_host"], r
    assert "not latency" in out and "aarch64 CPU" in out and "ms" not in out.split("under emulation")[1]
    # the bundle carries the proof, and is still a valid bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["emulation"]["aarch64"]["rows"] == rows
    assert not list(bundle.glob(".manifest.json.*"))  # written through a temp file, nothing left over
    assert main(["validate", str(bundle)]) == 0


@pytest.mark.slow  # an int8 export of a tiny pair model, and its 4 files under qemu on one CPU model
def test_a_model_of_two_inputs_and_two_outputs_is_checked_on_arm_output_by_output(environment, shared_data,
                                                                                  tmp_path, capsys):
    """Random weights (tests/pair_models.py's TinyPair): this is about feeding every input and judging every output
    under emulation; int8 quality is judged on trained weights."""
    pair = load_models(write_models(tmp_path, shared_data / "tflite" / V1_SMALL)).TinyPair()
    manifest = edgekit.export(pair, (torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)),
                              preprocessing="imagenet", task=["classifier", "embedding"], int8=True,
                              calib=shared_data / "photos", data=shared_data / "photos", parity_samples=6,
                              latency_runs=0, out=tmp_path / "out", name="pair")
    bundle = tmp_path / "out" / "pair"
    outputs = [o["name"] for o in manifest.model["outputs"]]
    files = [a.path for a in manifest.artifacts if a.path.endswith((".onnx", ".tflite"))]
    assert len(outputs) == 2 and len(files) == 4
    capsys.readouterr()
    report = tmp_path / "arm.json"
    code = main(["validate", str(bundle), "--emulate", "aarch64", "--emulate-cpus", "cortex-a76", "--json",
                 str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = json.loads(report.read_text())[0]["emulation"]["rows"]
    assert sorted((r["artifact"], r["output"]) for r in rows) == sorted((f, o) for f in files for o in outputs)
    host = {(p.artifact, p.output): p for p in manifest.parity}
    for r in rows:
        assert r["error"] is None and r["cpu"] == "cortex-a76", r
        on_host = host[(r["artifact"], r["output"])]
        # each output judged with its own task and gates, as on the host: the embedding has no top-1
        assert r["parity"]["gates"] == on_host.gates.to_dict() and r["parity"]["gated"] == on_host.gated
        assert (r["parity"]["metrics"]["top1_agreement"] is None) == (r["output"] == outputs[1])
        if r["precision"] == "fp32":
            assert r["passed"] and r["vs_host"]["cosine_min"] > 0.9999, r
        else:  # ARM's integer kernels against the runtime's reference path, output by output
            assert r["arm_vs_reference_path"]["cosine_mean"] >= 0.99, r
    assert f"pair_int8.tflite [{outputs[1]}]" in out
    assert json.loads((bundle / "manifest.json").read_text())["emulation"]["aarch64"]["rows"] == rows


@pytest.mark.slow  # the emulated environment (built on first use) and an int8 bundle
def test_validate_emulate_cpu_usage_errors(environment, bundle, capsys):
    assert main(["validate", str(bundle), "--emulate", "aarch64", "--emulate-cpus", "cortex-z9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cortex-z9" in err[0] and "cortex-a76" in err[0]
    assert main(["validate", str(bundle), "--emulate", "aarch64", "--emulate-cpus", "a76;reboot"]) == 2
    assert "not a qemu CPU model" in capsys.readouterr().err
    assert "emulation" not in json.loads((bundle / "manifest.json").read_text())


@pytest.mark.slow  # Python and the runtimes under qemu: seconds per file
def test_validate_emulate_fails_a_file_that_fails_its_gate_on_arm(environment, bundle, tmp_path, capsys):
    # the same gates as the host's: a gate no int8 file can meet fails the ARM rows too (exit 1, no crash);
    # --formats chooses the files on ARM as on the host
    report = tmp_path / "v.json"
    code = main(["validate", str(bundle), "--formats", "tflite", "--emulate", "aarch64", "--emulate-cpus",
                 "cortex-a76", "--gate", "int8.psnr_db=90", "--json", str(report)])
    assert code == 1
    rows = json.loads(report.read_text())[0]["emulation"]["rows"]
    assert sorted(r["artifact"] for r in rows) == [f"{VARIANT}.tflite", f"{VARIANT}_int8.tflite"]
    assert {r["passed"] for r in rows if r["precision"] == "int8"} == {False}
    assert all(r["passed"] for r in rows if r["precision"] == "fp32")


@pytest.mark.slow  # Python and the runtimes under qemu: seconds per file
def test_emulated_bench_device_runs_the_runner_on_aarch64(environment, bundle):
    profile = EmulatedProfile(name="arm", kind="emulated", cpu="cortex-a76")
    files = [f for f in load_target(bundle) if f.label.endswith("_int8.tflite")]
    [row] = run_benchmarks(files, [profile], BenchSettings(runs=2, warmup=1))
    assert row.ok, row.error
    assert row.device_kind == "emulated" and row.threads == 1
    assert row.machine["machine"] == "aarch64" and "asimddp" in row.machine["cpu"]["features"]
    assert row.runtime == "ai_edge_litert" and "emulated cortex-a76" in row.runtime_label
    assert "not latency" in row.extra["emulated"]["note"]
    assert len(row.samples_ms) == 2


# ---------------------------------------------------------------------------------------------- over SSH
@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if MISSING_OPENSSH:
        pytest.skip(NO_OPENSSH_REASON)
    home = tmp_path_factory.mktemp("sshd")
    keygen(home / "host")
    keygen(home / "user")
    (home / "authorized_keys").write_text((home / "user.pub").read_text())
    server, port = start_sshd(home, home / "host", home / "authorized_keys")
    host_key = (home / "host.pub").read_text().split()[1]
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} ssh-ed25519 {host_key}\n")
    yield {"port": port, "home": home}
    server.terminate()
    server.wait(timeout=10)


@pytest.mark.slow  # Python and the runtimes under qemu: seconds per file
def test_ssh_board_whose_python_is_the_emulated_one(environment, sshd, bundle):
    """The SSH route (control master, mktemp, cat > file, runner, JSON, cleanup) onto an aarch64 Python: the
    emulated environment's python3-cortex-a76 wrapper plays the board's interpreter."""
    board = SshProfile(name="armboard", kind="ssh", host="127.0.0.1", port=sshd["port"],
                       identity_file=str(sshd["home"] / "user"), known_hosts=str(sshd["home"] / "known_hosts"),
                       python=str(environment.wrapper("cortex-a76")), connect_timeout=5.0, threads=(1,))
    files = [f for f in load_target(bundle) if f.label.endswith("_int8.onnx")]
    [row] = run_benchmarks(files, [board], BenchSettings(runs=2, warmup=1))
    assert row.ok, row.error
    assert row.device_kind == "ssh" and row.runtime == "onnxruntime"
    assert row.machine["machine"] == "aarch64" and "asimddp" in row.machine["cpu"]["features"]
    assert row.machine["cpu"]["arch"] == "aarch64"
