"""Device profiles: where ``edgekit bench`` runs models, read from a TOML file.

    # ~/.config/edgekit/devices.toml   (or --devices FILE)
    [devices.pi5]
    kind = "ssh"
    host = "pi5.local"
    user = "pi"
    known_hosts = "~/.ssh/known_hosts"
    python = "/home/pi/venv/bin/python"
    threads = [1, 4]

    [devices.pixel8]
    kind = "android"
    serial = "38071FDJH00A1B"
    benchmark_model = "~/android/benchmark_model"
    delegate = "xnnpack"
    taskset = "f0"        # big cores only

A built-in ``local`` device (this machine) always exists; a ``[devices.local]`` table may change its settings.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from edgekit.console import warn
from edgekit.errors import EdgekitError
from edgekit.formats import FORMATS

KINDS = ("local", "ssh", "android", "emulated")
DELEGATES = ("xnnpack", "cpu", "gpu", "nnapi")
HOST_KEY_CHECKING = ("strict", "accept-new", "off")
# Names that end up as ssh/adb arguments: a leading "-" would be read as an option (e.g. -oProxyCommand=...).
_SAFE_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_SAFE_SERIAL = re.compile(r"^[A-Za-z0-9_.:][A-Za-z0-9_.:-]*$")
_HEX_MASK = re.compile(r"^(0x)?[0-9A-Fa-f]+$")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    kind: str
    threads: tuple[int, ...] | None = None  # None: 1 and all of the device's cores
    runtime: str | None = None  # only this runtime's files run here: "litert" | "onnxruntime" | "executorch"
    timeout: float = 900.0  # seconds for one measurement (copying, loading and timing one file)

    def describe(self) -> str:
        return "this machine"


@dataclass(frozen=True)
class InvalidProfile(DeviceProfile):
    """A device whose settings are wrong: kept with the reason, so that one typo does not make every other device
    of the file unusable. Using it is an error that names the problem."""

    error: str = ""

    def describe(self) -> str:
        return f"UNUSABLE: {self.error}"


@dataclass(frozen=True)
class LocalProfile(DeviceProfile):
    python: str = ""  # empty: the Python running edgekit
    tflite_runtime: str = "auto"  # auto | ai_edge_litert | tflite_runtime

    def describe(self) -> str:
        return f"this machine ({self.python or sys.executable})"


@dataclass(frozen=True)
class SshProfile(DeviceProfile):
    host: str = ""
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # None: ssh's own (~/.ssh/known_hosts)
    host_key_checking: str = "strict"  # strict | accept-new (trust on first use) | off (never verify: unsafe)
    connect_timeout: float = 10.0
    python: str = "python3"
    work_dir: str | None = None  # parent of the temporary work folder; None: $TMPDIR or /tmp
    taskset: str | None = None  # CPU mask in hex, e.g. "f0" for the big cores of a big.LITTLE board
    tflite_runtime: str = "auto"

    def describe(self) -> str:
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh {who}{self.host}{port}"


@dataclass(frozen=True)
class AndroidProfile(DeviceProfile):
    benchmark_model: str = ""  # local path of LiteRT's benchmark_model binary built for the phone
    serial: str | None = None  # None: the only device adb sees
    adb: str = "adb"
    delegate: str = "xnnpack"  # xnnpack | cpu (plain kernels) | gpu | nnapi
    taskset: str | None = None
    onnxruntime_perf_test: str | None = None  # optional: local path of onnxruntime_perf_test for .onnx files
    work_dir: str = "/data/local/tmp"

    def describe(self) -> str:
        return f"adb {self.serial or '(only device)'} {self.delegate}"


@dataclass(frozen=True)
class EmulatedProfile(DeviceProfile):
    """An aarch64 board emulated by qemu-user (edgekit emulate): ARM kernels' arithmetic, never latency."""

    cpu: str = "cortex-a76"  # qemu CPU model: cortex-a72 (NEON), cortex-a76 (dotprod), "max,sme=off" (i8mm)
    work_dir: str | None = None  # parent of the temporary work folder; None: /tmp
    tflite_runtime: str = "auto"

    def describe(self) -> str:
        return f"emulated aarch64 {self.cpu} (qemu-user)"


PROFILE_CLASSES = {"local": LocalProfile, "ssh": SshProfile, "android": AndroidProfile, "emulated": EmulatedProfile}
LOCAL = LocalProfile(name="local", kind="local")


def default_profiles_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgekit" / "devices.toml"


def _check(where: str, key: str, value, expected) -> None:
    kinds = {str: "a string", int: "a whole number", float: "a number", list: "a list"}
    ok = isinstance(value, expected) and not isinstance(value, bool)
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise EdgekitError(f"{where}: {key} must be {kinds[expected]}, not {value!r}")


def _threads(where: str, value) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise EdgekitError(f"{where}: threads must be a whole number >= 1 or a list of them, not {value!r}")
    return tuple(dict.fromkeys(values))


def _choice(where: str, key: str, value: str, allowed) -> str:
    if value not in allowed:
        raise EdgekitError(f"{where}: {key} = {value!r}; choose one of {', '.join(allowed)}")
    return value


def _profile(name: str, table: dict, source: Path) -> DeviceProfile:
    where = f"{source} [devices.{name}]"
    if not isinstance(table, dict):
        raise EdgekitError(f"{where} must be a table of settings")
    kind = table.get("kind", "local" if name == "local" else None)
    if kind not in KINDS:
        raise EdgekitError(f"{where}: kind = {kind!r}; choose one of {', '.join(KINDS)}")
    if name == "local" and kind != "local":
        raise EdgekitError(f"{where}: the name 'local' is this machine; give the {kind} device another name")
    cls = PROFILE_CLASSES[kind]
    allowed = {f.name: f for f in fields(cls) if f.name not in ("name", "kind")}
    unknown = sorted(set(table) - set(allowed) - {"kind"})
    if unknown:
        raise EdgekitError(f"{where}: unknown setting {', '.join(unknown)}; a {kind} device takes "
                           f"{', '.join(sorted(allowed))}")
    values: dict = {}
    for key, value in table.items():
        if key == "kind":
            continue
        if key == "threads":
            values[key] = _threads(where, value)
        elif key in ("port",):
            _check(where, key, value, int)
            values[key] = value
        elif key in ("timeout", "connect_timeout"):
            _check(where, key, value, float)
            if not 0 < value < math.inf:  # nan and inf pass a plain "> 0"
                raise EdgekitError(f"{where}: {key} must be a positive number of seconds, not {value!r}")
            values[key] = float(value)
        else:
            _check(where, key, value, str)
            values[key] = value
    profile = cls(name=name, kind=kind, **values)
    _validate(profile, where)
    return profile


def _validate(p: DeviceProfile, where: str) -> None:
    if p.runtime is not None:
        _choice(where, "runtime", p.runtime, tuple(f.runtime for f in FORMATS.values()))
    if isinstance(p, EmulatedProfile):
        from edgekit.emulate import parse_cpus

        if len(parse_cpus(p.cpu)) != 1:
            raise EdgekitError(f"{where}: cpu = {p.cpu!r}; give one qemu CPU model, e.g. \"cortex-a76\" or "
                               "\"max,sme=off\"")
    if isinstance(p, (LocalProfile, SshProfile, EmulatedProfile)):
        _choice(where, "tflite_runtime", p.tflite_runtime, ("auto", "ai_edge_litert", "tflite_runtime"))
    if isinstance(p, SshProfile):
        if not p.host:
            raise EdgekitError(f"{where}: an ssh device needs host = \"name or address\"")
        if not _SAFE_HOST.match(p.host):
            raise EdgekitError(f"{where}: host {p.host!r} is not a host name or address")
        if p.user is not None and not _SAFE_USER.match(p.user):
            raise EdgekitError(f"{where}: user {p.user!r} is not a user name")
        if p.port is not None and not 0 < p.port < 65536:
            raise EdgekitError(f"{where}: port {p.port} is out of range")
        _choice(where, "host_key_checking", p.host_key_checking, HOST_KEY_CHECKING)
    if isinstance(p, AndroidProfile):
        if not p.benchmark_model:
            raise EdgekitError(f"{where}: an android device needs benchmark_model = \"path of LiteRT's "
                               "benchmark_model binary for the phone\" (build it or take it from a LiteRT release)")
        if p.serial is not None and not _SAFE_SERIAL.match(p.serial):
            raise EdgekitError(f"{where}: serial {p.serial!r} is not an adb serial")
        _choice(where, "delegate", p.delegate, DELEGATES)
        if not p.work_dir.startswith("/"):
            raise EdgekitError(f"{where}: work_dir must be an absolute path on the phone")
    taskset = getattr(p, "taskset", None)
    if taskset is not None and not _HEX_MASK.match(taskset):
        raise EdgekitError(f"{where}: taskset {taskset!r} must be a hexadecimal CPU mask such as \"f0\"")


def load_profiles(path: Path | None = None) -> tuple[dict[str, DeviceProfile], Path | None]:
    """All devices: the built-in ``local`` plus those in ``path`` (default: the user's config file, if any)."""
    explicit = path is not None
    path = Path(path).expanduser() if explicit else default_profiles_path()
    profiles: dict[str, DeviceProfile] = {"local": LOCAL}
    if not path.is_file():
        if explicit:
            raise EdgekitError(f"device file {path} does not exist; check the --devices path")
        return profiles, None
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekitError(f"cannot read device file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise EdgekitError(f"device file {path} is not valid TOML ({e}); fix it") from None
    stray = sorted(set(data) - {"devices"})
    if stray:
        raise EdgekitError(f"{path}: unexpected top-level {', '.join(stray)}; put each device under "
                           "[devices.NAME]")
    devices = data.get("devices", {})
    if not isinstance(devices, dict):
        raise EdgekitError(f"{path}: 'devices' must be tables like [devices.NAME]")
    for name, table in devices.items():
        try:
            profiles[name] = _profile(name, table, path)
        except EdgekitError as e:
            profiles[name] = InvalidProfile(name=name, kind="invalid", error=str(e))
    return profiles, path


def select_devices(profiles: dict[str, DeviceProfile], names: list[str] | None, everything: bool,
                   source: Path | None) -> list[DeviceProfile]:
    if everything:
        broken = [p for p in profiles.values() if isinstance(p, InvalidProfile)]
        for p in broken:
            warn(f"device {p.name} skipped: {p.error}")
        return [p for p in profiles.values() if not isinstance(p, InvalidProfile)]
    names = names or ["local"]
    unknown = [n for n in names if n not in profiles]
    if unknown:
        where = f" (from {source})" if source else f" (no device file at {default_profiles_path()}; see --devices)"
        raise EdgekitError(f"unknown device {', '.join(map(repr, unknown))}; known devices: "
                           f"{', '.join(profiles)}{where}")
    broken = next((profiles[n] for n in names if isinstance(profiles[n], InvalidProfile)), None)
    if broken:
        raise EdgekitError(broken.error)
    return [profiles[n] for n in dict.fromkeys(names)]
