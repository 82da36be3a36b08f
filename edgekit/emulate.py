"""aarch64 under emulation: run exported files on ARM's own kernels on an x86 host, with no board.

Phones and ARM boards run XNNPACK's NEON, dot-product (``sdot``) and i8mm (``smmla``) kernels and ONNX Runtime's
MLAS with ``udot``; no x86 host ever executes those. qemu-user runs an arm64 Python with the aarch64 wheels of
the host's runtimes, so ``edgekit validate --emulate aarch64`` checks every file on those kernels, one CPU model
at a time. What it proves is the kernels' arithmetic; emulated time says nothing about a device's latency.

The environment is built on first use into the user's cache, with no change to the system (no binfmt, no
dpkg architecture, no root at run time):

- qemu-user (8.0 or newer: older ones do not emulate an aarch64 ``/proc/cpuinfo``, and the runtimes' CPU
  detection then crashes) from Debian's ``<codename>-backports``, unpacked with ``dpkg-deb``;
- an arm64 Python from Debian's arm64 packages, fetched by apt with a private state (its own lists, cache and an
  empty dpkg status) and unpacked into a sysroot;
- the aarch64 wheels of numpy, onnxruntime and ai-edge-litert at the host's versions (``pip install --target``).

It is built in a hidden ``.partial`` folder and renamed into place after a smoke test, with a stamp file: an
interrupted build never looks finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from .console import info, step, warn
from .cpu import describe, host_cpu
from .errors import EdgekitError
from .fileio import atomic_write_text

ARCHES = ("aarch64",)
# NEON only; NEON + dot product (XNNPACK sdot, MLAS udot); + i8mm (smmla). "max" without SME: qemu's SME
# emulation has computed XNNPACK int8 wrongly (qemu 7.2), and no phone CPU edgekit targets has SME.
DEFAULT_CPUS = ("cortex-a72", "cortex-a76", "max,sme=off")
CPU_KERNELS = {"cortex-a53": "NEON", "cortex-a55": "NEON + dotprod", "cortex-a72": "NEON",
               "cortex-a76": "NEON + dotprod", "neoverse-n1": "NEON + dotprod", "cortex-a710": "dotprod + i8mm",
               "neoverse-n2": "dotprod + i8mm", "neoverse-v1": "dotprod + i8mm", "max": "dotprod + i8mm"}
RUNTIMES = ("numpy", "onnxruntime", "ai-edge-litert")  # distributions installed into the emulated Python
MIN_QEMU = (8, 0)
LAYOUT = 3  # bump when the environment's layout changes: a new cache key, so old ones are rebuilt
STAMP = "edgekit-emulate.json"
# numpy's OpenBLAS starts a thread per host core, and under qemu-user their idle spinning is emulated: with one,
# an emulated check uses half the CPU (MobileNet v1 0.25, 4 files on cortex-a72: 15.2 s of CPU -> 7.8 s, same wall
# time, AMD EPYC Zen 3). edgekit's emulated code does no large matrix work in numpy.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1"}
RESULT_MARK = "EDGEKIT_EMULATED "
WHEEL_TAGS = ("2_17", "2_24", "2_26", "2_27", "2_28", "2_31", "2_34", "2_35", "2_36")  # pip does not expand tags
KERNEL_NOTE = ("ARM kernels' arithmetic under qemu-user: emulated time is not latency, and nothing about a real "
               "device's thermal or memory behaviour")

# A comma that starts another CPU model, not a property of the previous one (``max,sme=off``).
_CPU_SPLIT = re.compile(r",(?![A-Za-z0-9_.-]+=)")
_CPU_WORD = re.compile(r"^[a-z0-9][a-z0-9_.-]*(,[a-z0-9_.-]+=[a-z0-9_.-]+)*$")


def parse_cpus(text: str) -> tuple[str, ...]:
    """``cortex-a72,cortex-a76,max,sme=off`` -> the three CPU models: a comma followed by ``key=value`` belongs
    to the model before it (qemu's own ``-cpu`` syntax)."""
    cpus = tuple(dict.fromkeys(c.strip() for c in _CPU_SPLIT.split(text or "") if c.strip()))
    bad = [c for c in cpus if not _CPU_WORD.match(c)]
    if not cpus or bad:
        raise EdgekitError(f"--emulate-cpus {text!r}: {'no CPU model' if not cpus else repr(bad[0])} is not a qemu "
                           "CPU model; give a comma list such as cortex-a72,cortex-a76,max,sme=off (a comma "
                           "followed by key=value sets a property of the model before it)")
    return cpus


def kernels_of(cpu: str) -> str:
    return CPU_KERNELS.get(cpu.split(",")[0], "see qemu -cpu help")


# ---------------------------------------------------------------------------------------------- the cache
def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit" / "emulate"


def host_versions() -> dict[str, str | None]:
    versions = {}
    for name in RUNTIMES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_key(versions: dict[str, str | None] | None = None) -> str:
    """The cache folder's name: the runtime versions it holds, so a host upgrade builds a matching one."""
    v = versions or host_versions()
    return (f"aarch64-numpy{v.get('numpy') or 'latest'}-onnxruntime{v.get('onnxruntime') or 'latest'}"
            f"-litert{v.get('ai-edge-litert') or 'latest'}-v{LAYOUT}")


@dataclass
class Environment:
    """A finished environment: ``qemu/qemu-aarch64``, ``sysroot/`` (arm64 Python), ``site/`` (wheels), the stamp."""

    root: Path
    stamp: dict

    @property
    def qemu(self) -> Path:
        return self.root / "qemu" / "qemu-aarch64"

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def python(self) -> Path:
        return self.sysroot / self.stamp["python_path"]

    @property
    def versions(self) -> dict:
        return self.stamp.get("versions", {})

    def wrapper(self, cpu: str | None = None) -> Path:
        """A ``python3`` that runs the emulated Python (for SSH profiles and the emulated bench device)."""
        return self.root / "bin" / (f"python3-{_cpu_file_name(cpu)}" if cpu else "python3")

    def command(self, cpu: str, args: list[str]) -> list[str]:
        return [str(self.qemu), "-L", str(self.sysroot), "-cpu", cpu, str(self.python), *args]

    def environ(self, extra_path: list[Path] = ()) -> dict[str, str]:
        """The host's environment minus its Python settings (a venv's PYTHONHOME would point the arm64 Python
        at x86 modules), plus the wheels."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(self.root / "site"), *map(str, extra_path)])
        env["PYTHONNOUSERSITE"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the cache stays as built
        env.update(ONE_BLAS_THREAD)
        return env

    def version_differences(self) -> list[str]:
        host = host_versions()
        return [f"{name} {self.versions.get(name)} emulated, {host[name]} on the host" for name in RUNTIMES
                if host.get(name) and self.versions.get(name) != host[name]]

    def known_cpus(self) -> list[str]:
        return list(self.stamp.get("cpus") or [])


def _cpu_file_name(cpu: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", cpu).strip("-")


def find_environment(root: Path | None = None) -> Environment | None:
    """The finished environment for the host's runtime versions, or None (a folder without a valid stamp is not
    finished)."""
    root = root or cache_root() / environment_key()
    try:
        stamp = json.loads((root / STAMP).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if stamp.get("layout") != LAYOUT or not (root / "qemu" / "qemu-aarch64").is_file():
        return None
    return Environment(root, stamp)


def ensure_environment() -> Environment:
    """The environment, built on first use (a few minutes at most, with progress)."""
    env = find_environment()
    if env is not None:
        return env
    info("[edgekit] the emulated aarch64 environment is not built yet; building it now (once, cached in "
         f"{cache_root()}; `edgekit emulate setup` does the same)")
    return build_environment()


def environment_problem() -> str | None:
    """Why the environment cannot be built here, or None: for tests and CI to skip with the reason."""
    if find_environment() is not None:
        return None
    try:
        _check_tools()
    except EdgekitError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------------------------- building
def _check_tools() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if not shutil.which(tool)]
    if missing:
        raise EdgekitError(f"building the emulated aarch64 environment needs {' and '.join(missing)} (Debian's "
                           "package tools) to fetch qemu-user and an arm64 Python; install apt and dpkg, or run "
                           "on Debian/Ubuntu")
    if sys.platform != "linux":
        raise EdgekitError("the emulated aarch64 environment needs Linux (qemu-user); run it on a Linux host")


def _os_release() -> dict[str, str]:
    values = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key] = value.strip().strip('"')
    except OSError:
        pass
    return values


def _debian_mirrors(codename: str) -> tuple[list[str], list[str]]:
    """The host's own apt sources as one-line entries, and the mirror URIs that serve ``codename`` itself (the
    backports suite comes from the same mirror). Read from sources.list and sources.list.d, as apt reads them."""
    etc = Path("/etc/apt")
    entries: list[tuple[str, str, list[str], list[str], str]] = []  # (uri, suite, components, options, source)
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*.list"))
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            match = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if match:
                options = match.group(1).strip()[1:-1].split() if match.group(1) else []
                entries.append((match.group(2), match.group(3), match.group(4).split(), options, str(path)))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.lstrip().startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            options = [f"signed-by={fields['signed-by']}"] if fields.get("signed-by", "").startswith("/") else []
            if fields.get("architectures"):
                options.append(f"arch={','.join(fields['architectures'].split())}")
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite, fields.get("components", "main").split(), options, str(path)))
    lines, mirrors = [], []
    for uri, suite, components, options, _ in entries:
        if suite == codename and uri not in mirrors:
            mirrors.append(uri)
        # arm64 indexes only where the host's source serves this release (a third-party repository may have none)
        if suite.startswith(codename):
            arches = [o for o in options if o.startswith("arch=")]
            options = [o for o in options if not o.startswith("arch=")] + [arches[0] + ",arm64" if arches
                                                                           else "arch=amd64,arm64"]
        lines.append(f"deb [{' '.join(options)}] {uri} {suite} {' '.join(components)}" if options
                     else f"deb {uri} {suite} {' '.join(components)}")
    return lines, mirrors


class _Apt:
    """apt-get with its own lists, cache and an empty dpkg status under ``state``: the host's apt and dpkg state
    is never read or written. The host's apt.conf.d still applies (proxies, mirrors' settings)."""

    def __init__(self, state: Path, source_lines: list[str]):
        self.state = state
        for sub in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").write_text("")
        (state / "etc" / "sources.list").write_text("\n".join(source_lines) + "\n")
        self.options = [
            "-o", f"Dir::State={state}", "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache={state / 'cache'}", "-o", f"Dir::Etc::sourcelist={state / 'etc' / 'sources.list'}",
            "-o", f"Dir::Etc::sourceparts={state / 'etc' / 'sources.list.d'}",
            "-o", f"Dir::Etc::preferences={state / 'etc' / 'preferences'}",
            "-o", f"Dir::Etc::preferencesparts={state / 'etc' / 'preferences.d'}",
            "-o", "APT::Architecture=amd64", "-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64",
            "-o", "Debug::NoLocking=1", "-o", "APT::Get::List-Cleanup=0", "-o", "quiet=1"]
        if os.geteuid() == 0:  # apt's _apt sandbox user cannot write into root's cache folder
            self.options += ["-o", "APT::Sandbox::User=root"]

    def run(self, args: list[str], what: str, cwd: Path | None = None, timeout: float = 900) -> str:
        try:
            done = subprocess.run(["apt-get", *self.options, *args], capture_output=True, text=True, cwd=cwd,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgekitError(f"{what}: apt-get got no answer within {timeout:g} s; check the network route to "
                               "Debian's archive (apt's sources and proxy in /etc/apt)") from None
        text = done.stdout + done.stderr
        network = re.search(r"(Could not resolve[^\n]*|Temporary failure[^\n]*|Failed to fetch[^\n]*|"
                            r"Unable to connect[^\n]*|Connection failed[^\n]*)", text)
        if done.returncode != 0 or (network and "update" in args):
            if network:
                raise EdgekitError(f"{what}: cannot reach Debian's package archive ({network.group(1)[:200]}); "
                                   "point apt at a reachable mirror in /etc/apt/sources.list(.d) or set "
                                   "Acquire::http::Proxy in /etc/apt/apt.conf.d")
            last = [l for l in text.splitlines() if l.startswith(("E:", "W:"))] or text.strip().splitlines()[-1:]
            raise EdgekitError(f"{what}: apt-get failed ({'; '.join(last)[:300]}); check apt's sources in /etc/apt")
        return text


    def newest(self, package: str) -> str:
        """The highest version any source offers (backports' qemu over the release's own)."""
        done = subprocess.run(["apt-cache", *self.options, "madison", package], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        versions = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.count("|") >= 2]

        def upstream(version: str) -> tuple[int, ...]:
            match = re.match(r"^(?:\d+:)?(\d+)\.(\d+)", version)
            return (int(match.group(1)), int(match.group(2))) if match else (0, 0)

        if not versions:
            raise EdgekitError(f"apt's sources offer no {package}; add Debian's backports suite to /etc/apt/sources.list")
        return max(versions, key=upstream)


def _extract(deb: Path, target: Path, members: list[str] | None = None) -> None:
    """Unpack a .deb's files without installing it (dpkg-deb, no maintainer scripts, no dpkg database)."""
    if members is None:
        command = ["dpkg-deb", "-x", str(deb), str(target)]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    else:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
        done = subprocess.run(["tar", "-x", "-C", str(target), *members], stdin=tar.stdout, capture_output=True,
                              text=True)
        tar.stdout.close()
        tar.wait()
    if done.returncode != 0:
        raise EdgekitError(f"cannot unpack {deb.name} ({done.stderr.strip()[-200:]}); run `edgekit emulate clean` "
                           "and try again")


def _compile_stdlib(stdlib: Path, python_version: str) -> str:
    """Byte-compile the arm64 Python's standard library, which Debian ships as sources (its postinst compiles
    them): without .pyc files every emulated run compiles what it imports under qemu, 2-3 s per process. The
    host compiles them when it is the same Python minor version (bytecode is the same on every architecture)."""
    if python_version != f"{sys.version_info.major}.{sys.version_info.minor}" or not stdlib.is_dir():
        return ", standard library not byte-compiled (the host's Python is another version)"
    import compileall

    compileall.compile_dir(stdlib, quiet=2, workers=os.cpu_count() or 1)
    return ", standard library byte-compiled"


def _qemu_version(qemu: Path) -> tuple[int, ...]:
    done = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    match = re.search(r"version (\d+)\.(\d+)", done.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _pip_install(target: Path, versions: dict[str, str | None], python_version: str, pinned: bool) -> subprocess.CompletedProcess:
    platforms = [w for tag in WHEEL_TAGS for w in ("--platform", f"manylinux_{tag}_aarch64")]
    requirements = [f"{name}=={versions[name]}" if pinned and versions.get(name) else name for name in RUNTIMES]
    # pip's own configuration (index, proxy, certificates) applies as it is
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-conflicts", "--disable-pip-version-check",
               "--target", str(target), "--only-binary=:all:", "--python-version", python_version,
               "--implementation", "cp", "--abi", f"cp{python_version.replace('.', '')}", *platforms,
               "--platform", "manylinux2014_aarch64", *requirements]
    return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)


_SMOKE = """
import json, sys
versions = {}
import numpy; versions["numpy"] = numpy.__version__
import onnxruntime; versions["onnxruntime"] = onnxruntime.__version__
from importlib import metadata; import ai_edge_litert.interpreter; versions["ai-edge-litert"] = metadata.version("ai-edge-litert")
print("EDGEKIT_SMOKE " + json.dumps({"versions": versions, "python": sys.version.split()[0]}))
"""


def _write_wrappers(root: Path, cpus: list[str]) -> None:
    """``bin/python3`` (CPU from $QEMU_CPU, default cortex-a76) and ``bin/python3-<cpu>``: an emulated Python any
    tool can call, e.g. an SSH device profile's ``python``. Paths resolve from the script's own place, so the
    folder can be renamed into the cache after the build."""
    (root / "bin").mkdir(exist_ok=True)
    python = "$here/sysroot/" + json.loads((root / STAMP).read_text())["python_path"]
    for name, cpu in [("python3", '"${QEMU_CPU:-cortex-a76}"')] + [
            (f"python3-{_cpu_file_name(c)}", "'" + c + "'") for c in cpus]:
        path = root / "bin" / name
        path.write_text("#!/bin/sh\n# edgekit's emulated aarch64 Python (qemu-user); arithmetic of ARM kernels, "
                        "not latency\n"
                        'here=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd) || exit 1\n'
                        "unset PYTHONHOME\n"
                        'export PYTHONPATH="$here/site" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 '
                        + " ".join(f"{k}={v}" for k, v in ONE_BLAS_THREAD.items()) + "\n"
                        f'exec "$here/qemu/qemu-aarch64" -L "$here/sysroot" -cpu {cpu} "{python}" "$@"\n')
        path.chmod(0o755)


def build_environment(root: Path | None = None) -> Environment:
    """Build the environment for the host's runtime versions into the cache: temp folder, smoke test, stamp,
    rename. Each step is timed and shown."""
    _check_tools()
    versions = host_versions()
    root = root or cache_root() / environment_key(versions)
    os_release = _os_release()
    codename = os_release.get("VERSION_CODENAME")
    if os_release.get("ID") != "debian" and "debian" not in os_release.get("ID_LIKE", ""):
        raise EdgekitError(f"the emulated environment is built from Debian packages; this is "
                           f"{os_release.get('PRETTY_NAME', 'not Debian')}: run it on Debian 12 or newer")
    if not codename:
        raise EdgekitError("/etc/os-release names no VERSION_CODENAME; cannot tell which Debian release to fetch")
    source_lines, mirrors = _debian_mirrors(codename)
    if not mirrors:
        raise EdgekitError(f"apt's sources (/etc/apt/sources.list, sources.list.d) list no mirror for Debian "
                           f"{codename}; add one (e.g. http://deb.debian.org/debian {codename} main)")
    backports = f"{codename}-backports"
    if not any(line.split("]")[-1].split()[1:2] == [backports] for line in source_lines if line.startswith("deb")):
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        signed = f" signed-by={keyring}" if Path(keyring).is_file() else ""
        source_lines.append(f"deb [arch=amd64,arm64{signed}] {mirrors[0]} {backports} main")
    root.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    steps: dict[str, float] = {}
    try:
        apt = _Apt(work / "apt", source_lines)
        with step(f"emulate: apt package lists for {codename} amd64+arm64 (private apt state)") as s:
            apt.run(["update"], "fetching Debian's package lists")
        steps["apt lists"] = s["seconds"]
        with step("emulate: qemu-user (static qemu-aarch64)") as s:
            downloads = work / "downloads"
            downloads.mkdir()
            apt.run(["download", f"qemu-user={apt.newest('qemu-user')}"], "downloading qemu-user", cwd=downloads)
            deb = next(downloads.glob("qemu-user_*.deb"))
            (work / "qemu").mkdir()
            (work / "extract").mkdir()
            _extract(deb, work / "extract", ["./usr/bin/qemu-aarch64"])
            (work / "extract" / "usr" / "bin" / "qemu-aarch64").rename(work / "qemu" / "qemu-aarch64")
            shutil.rmtree(work / "extract")
            deb.unlink()
            qemu_version = _qemu_version(work / "qemu" / "qemu-aarch64")
            if qemu_version < MIN_QEMU:
                raise EdgekitError(f"qemu-user {'.'.join(map(str, qemu_version))} from {codename} is too old: "
                                   f"ONNX Runtime and LiteRT crash under qemu before {MIN_QEMU[0]}.0 (no emulated "
                                   f"/proc/cpuinfo); add {backports} to apt's sources")
            s["detail"] = f"qemu {'.'.join(map(str, qemu_version))}"
        steps["qemu-user"] = s["seconds"]
        with step("emulate: arm64 Python from Debian packages (unpacked, not installed)") as s:
            apt.run(["install", "--download-only", "--no-install-recommends", "-y", "python3:arm64",
                     "libstdc++6:arm64"], "downloading the arm64 Python")
            debs = sorted((work / "apt" / "cache" / "archives").glob("*.deb"))
            sysroot = work / "sysroot"
            sysroot.mkdir()
            arm = [d for d in debs if d.name.endswith(("_arm64.deb", "_all.deb"))]
            for deb in arm:
                _extract(deb, sysroot)
            pythons = sorted(p for p in (sysroot / "usr" / "bin").glob("python3.*")
                             if re.fullmatch(r"python3\.\d+", p.name))
            if not pythons:
                raise EdgekitError(f"the arm64 packages of {codename} hold no python3.X; report this with "
                                   "`edgekit emulate info`")
            python_path = pythons[-1].relative_to(sysroot).as_posix()
            python_version = pythons[-1].name.removeprefix("python")
            compiled = _compile_stdlib(sysroot / "usr" / "lib" / f"python{python_version}", python_version)
            s["detail"] = f"Python {python_version}, {len(arm)} packages{compiled}"
        steps["arm64 Python"] = s["seconds"]
        shutil.rmtree(work / "apt")
        with step("emulate: aarch64 wheels of " + ", ".join(f"{n} {versions[n] or '(latest)'}" for n in RUNTIMES)) as s:
            done = _pip_install(work / "site", versions, python_version, pinned=True)
            if done.returncode != 0:
                network = re.search(r"(Max retries exceeded[^\n]*|Could not resolve[^\n]*|NewConnectionError[^\n]*)",
                                    done.stderr)
                if network:
                    raise EdgekitError(f"cannot reach the Python package index ({network.group(1)[:160]}); set "
                                       "index-url or a proxy in pip's configuration (pip config list)")
                warn(f"no aarch64 wheels at the host's versions ({done.stderr.strip().splitlines()[-1][:200]}); "
                     "taking the newest instead: the versions will differ from the host's")
                shutil.rmtree(work / "site", ignore_errors=True)
                done = _pip_install(work / "site", versions, python_version, pinned=False)
                if done.returncode != 0:
                    raise EdgekitError(f"pip cannot install the aarch64 wheels "
                                       f"({done.stderr.strip().splitlines()[-1][:240]}); check pip's configuration")
        steps["aarch64 wheels"] = s["seconds"]
        stamp = {"layout": LAYOUT, "arch": "aarch64", "python_path": python_path, "python_version": python_version,
                 "debian": codename, "qemu": ".".join(map(str, qemu_version)), "requested": versions}
        (work / STAMP).write_text(json.dumps(stamp))  # provisional, for the smoke test; rewritten below
        env = Environment(work, stamp)
        with step("emulate: smoke test (import numpy, onnxruntime, ai_edge_litert on cortex-a76)") as s:
            done = subprocess.run(env.command("cortex-a76", ["-c", _SMOKE]), capture_output=True, text=True,
                                  env=env.environ(), timeout=600, stdin=subprocess.DEVNULL)
            line = next((l for l in done.stdout.splitlines() if l.startswith("EDGEKIT_SMOKE ")), None)
            if line is None:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:240]
                raise EdgekitError(f"the emulated Python cannot import the runtimes (exit {done.returncode}: "
                                   f"{tail}); run `edgekit emulate clean` and report it")
            smoke = json.loads(line.split(" ", 1)[1])
            cpus = subprocess.run([str(env.qemu), "-cpu", "help"], capture_output=True, text=True).stdout
        steps["smoke test"] = s["seconds"]
        stamp.update(versions=smoke["versions"], python=smoke["python"],
                     cpus=[l.strip() for l in cpus.splitlines()[1:] if l.strip()],
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"), steps=steps,
                     build_seconds=round(time.perf_counter() - started, 1), bytes=_size(work))
        (work / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        _write_wrappers(work, list(DEFAULT_CPUS))
        try:
            work.rename(root)
        except OSError:
            if find_environment(root) is None:  # not another build finishing first: a real problem
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env = find_environment(root)
    assert env is not None
    info(f"[edgekit] emulate: environment ready in {time.perf_counter() - started:.0f} s, "
         f"{env.stamp['bytes'] / 1e6:.0f} MB at {root}")
    _remove_superseded_layouts(root)
    for difference in env.version_differences():
        warn(f"emulated runtimes differ from the host's: {difference}")
    return env


def _remove_superseded_layouts(built: Path) -> None:
    """The same runtimes in an older layout are never used again: each is about 270 MB that a CI machine keeping
    the cache would otherwise carry forever."""
    same_runtimes = built.name.rsplit("-v", 1)[0] + "-v"
    for folder in built.parent.glob(same_runtimes + "*"):
        layout = folder.name[len(same_runtimes):]
        if folder.is_dir() and layout.isdigit() and int(layout) < LAYOUT:
            size = _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
            info(f"[edgekit] emulate: removed the superseded layout {folder.name} ({size / 1e6:.0f} MB)")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def clean_environments() -> tuple[int, int]:
    """Remove every environment and half-built one from the cache: (folders, bytes)."""
    root = cache_root()
    if not root.is_dir():
        return 0, 0
    count = size = 0
    for folder in root.iterdir():
        if folder.is_dir():
            size += _size(folder)
            shutil.rmtree(folder)
            count += 1
    return count, size


# ---------------------------------------------------------------------------------------------- running
def run_in_emulation(env: Environment, cpu: str, files: list[Path], inputs: np.ndarray | list[np.ndarray],
                     threads: int = 1, timeout: float = 1800) -> dict:
    """Each file on ``inputs`` (NCHW float32; a list, one array per input, for a model of several) in the emulated
    Python on ``cpu``, through edgekit.runtimes as on the host: {"cpu": cpuinfo there, "versions", "files": {path:
    {"outputs" (a list, one array per output) | "error", "seconds"}}}."""
    import edgekit

    inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)

    with tempfile.TemporaryDirectory(prefix="edgekit-emulate-") as tmp:
        tmp = Path(tmp)
        from .devices import runner as device_runner

        # the edgekit package alone on the emulated path (not the checkout's tests etc.), with edgekit.devices
        # (the runtimes use its runner), which an editable install keeps in another folder
        stage = tmp / "stage"
        package = stage / "edgekit"
        package.mkdir(parents=True)
        for entry in Path(edgekit.__file__).resolve().parent.iterdir():
            (package / entry.name).symlink_to(entry)
        if not (package / "devices").exists():
            (package / "devices").symlink_to(Path(device_runner.__file__).resolve().parent)
        for k, x in enumerate(inputs):
            np.save(tmp / f"input_{k}.npy", np.ascontiguousarray(x, dtype=np.float32))

        job = {"inputs": [str(tmp / f"input_{k}.npy") for k in range(len(inputs))], "threads": threads,
               "runner": device_runner.__file__,
               "files": [{"path": str(p.resolve()), "output": str(tmp / f"out_{i}.npz")} for i, p in enumerate(files)]}
        (tmp / "job.json").write_text(json.dumps(job))
        started = time.perf_counter()
        try:
            done = subprocess.run(env.command(cpu, ["-m", "edgekit.emulate_worker", str(tmp / "job.json")]),
                                  capture_output=True, text=True, env=env.environ([stage]), cwd=stage,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"error": f"no result within {timeout:g} s under emulation on {cpu}"}
        line = next((l for l in reversed(done.stdout.splitlines()) if l.startswith(RESULT_MARK)), None)
        if line is None:
            lines = [l.strip() for l in done.stderr.splitlines() if l.strip() and not l.startswith("INFO:")]
            how = (f"killed by signal {-done.returncode}" if done.returncode < 0
                   else f"exit status {done.returncode}")
            return {"error": f"the emulated Python on {cpu} stopped ({how}: {(lines or ['no output'])[-1][:240]})"}
        result = json.loads(line[len(RESULT_MARK):])
        for item, path in zip(job["files"], files):
            record = result["files"].get(item["path"], {})
            if "error" not in record:
                with np.load(item["output"]) as saved:
                    record["outputs"] = [saved[f"arr_{k}"] for k in range(len(saved.files))]
            result["files"][str(path)] = record
        result["seconds"] = time.perf_counter() - started
        return result


@dataclass
class EmulatedRow:
    """One file on one emulated CPU model: judged against the stored reference with the bundle's gates, and
    compared with the host's own outputs (and, for int8, with the runtime's reference path)."""

    artifact: str
    precision: str
    cpu: str
    kernels: str
    features: list[str] = field(default_factory=list)
    output: str | None = None  # which output of a model of several the row judges (each has its own task, gates)
    parity: object | None = None  # parity.ParityResult against the PyTorch reference
    vs_host: object | None = None  # parity.ParityMetrics, emulated ARM against the x86 host's outputs
    bit_exact: bool | None = None
    arm_vs_reference_path: object | None = None  # int8: ParityMetrics against the runtime's reference path
    host_vs_reference_path: object | None = None
    finding: str | None = None
    error: str | None = None
    emulation_seconds: float | None = None  # the whole CPU model's run, under qemu: not latency

    @property
    def passed(self) -> bool:
        return self.error is None and self.parity is not None and self.parity.passed

    @property
    def label(self) -> str:
        return self.artifact if self.output is None else f"{self.artifact} [{self.output}]"

    def to_dict(self) -> dict:
        def metrics(m):
            return m.to_dict() if m is not None else None

        return {"artifact": self.artifact, "precision": self.precision} | (
            {"output": self.output} if self.output is not None else {}) | {"cpu": self.cpu, "kernels": self.kernels,
                "features": self.features, "passed": self.passed, "error": self.error, "finding": self.finding,
                "parity": self.parity.to_dict() if self.parity is not None else None,
                "vs_host": metrics(self.vs_host), "bit_exact_with_host": self.bit_exact,
                "arm_vs_reference_path": metrics(self.arm_vs_reference_path),
                "host_vs_reference_path": metrics(self.host_vs_reference_path),
                "emulation_seconds_not_latency": None if self.emulation_seconds is None
                else round(self.emulation_seconds, 1)}


@dataclass
class EmulatedCheck:
    bundle: Path
    arch: str
    cpus: tuple[str, ...]
    rows: list[EmulatedRow]
    environment: dict
    host: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.rows)

    @property
    def findings(self) -> list[str]:
        return list(dict.fromkeys(r.finding for r in self.rows if r.finding))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "passed": self.passed, "cpus": list(self.cpus), "host_cpu": self.host,
                "what": KERNEL_NOTE, "environment": self.environment, "problems": self.problems,
                "findings": self.findings, "rows": [r.to_dict() for r in self.rows],
                "checked": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _finding(row: EmulatedRow, suffix: str, host: str) -> str | None:
    """Name which kernels differ: ARM and x86 disagreeing is a finding, and the reference path says which side
    is off."""
    from .parity import KERNEL_TOLERANCE, REFERENCE_PATHS, ParityGates

    tolerance = KERNEL_TOLERANCE if row.precision == "int8" else ParityGates(cosine_min=0.9999)
    if not tolerance.failures(row.vs_host):
        return None
    differs = "; ".join(tolerance.failures(row.vs_host))
    arm = f"ARM {row.cpu} kernels ({row.kernels})"
    x86 = f"x86 kernels on {host}"
    if row.arm_vs_reference_path is None:
        return f"{row.label}: {arm} and {x86} disagree ({differs})"
    arm_off = KERNEL_TOLERANCE.failures(row.arm_vs_reference_path)
    host_off = KERNEL_TOLERANCE.failures(row.host_vs_reference_path)
    reference = REFERENCE_PATHS[suffix]
    if host_off and not arm_off:
        return (f"{row.label}: {x86} disagree with {reference} ({'; '.join(host_off)}), {arm} agree with it: "
                "the x86 kernels are the ones that are off")
    if arm_off and not host_off:
        return f"{row.label}: {arm} disagree with {reference} ({'; '.join(arm_off)}), the x86 host agrees with it"
    if arm_off and host_off:
        return f"{row.label}: both {arm} and {x86} disagree with {reference} and with each other ({differs})"
    return f"{row.label}: {arm} and {x86} each agree with {reference} but differ from each other ({differs})"


def check_bundle(env: Environment, bundle: Path, cpus: tuple[str, ...], gates=None, threads: int = 1,
                 files: list[str] | None = None) -> EmulatedCheck:
    """Every intact .tflite/.onnx/.pte of ``bundle`` on each emulated CPU model, against the stored reference
    (with ``gates``, default the manifest's) and against the host's outputs. A model of several inputs gets every
    input, and each of several outputs is judged on its own, with its task and gates, as validate judges it."""
    from .manifest import Manifest, Reference, judged_outputs
    from .parity import DEFAULT_GATES, compare, is_gated, is_real
    from .runtimes import open_runtime

    host = describe(host_cpu())
    check = EmulatedCheck(bundle, "aarch64", cpus, [], _environment_record(env), host)
    try:
        manifest = Manifest.read(bundle)
        reference = Reference.read(bundle, manifest.reference.get("sha256"))
    except EdgekitError as e:  # one bad bundle in a folder of bundles fails alone, as in validate
        check.problems.append(str(e))
        return check
    table = gates or (manifest.gates or DEFAULT_GATES).sanitized()[0]
    real = is_real(reference.sources)
    trained = bool(manifest.weights.get("trained", False))
    tasks, tables, names = judged_outputs(manifest, table, recorded=gates is None)  # masks, embeddings: own figures
    names = names or [None]
    artifacts = [a for a in manifest.artifacts if Path(a.path).suffix.lower() in (".tflite", ".onnx", ".pte")
                 and (files is None or a.path in files) and a.check_file(bundle) is None]
    skipped = [a.path for a in manifest.artifacts if Path(a.path).suffix.lower() == ".pte"]
    if skipped:  # no ExecuTorch runtime in the emulated Python yet
        check.problems.append(f"{', '.join(skipped)}: .pte files cannot run under emulation yet (no ExecuTorch "
                              "runtime in the environment)")
        artifacts = [a for a in artifacts if a.path not in skipped]
    inputs, references = reference.all_inputs, reference.all_outputs
    host_out, reference_path = {}, {}
    for a in artifacts:
        host_out[a.path] = open_runtime(bundle / a.path, threads=threads).run(inputs)
        if a.precision == "int8":
            reference_path[a.path] = open_runtime(bundle / a.path, threads=threads, reference=True).run(inputs)
    paths = [bundle / a.path for a in artifacts]

    def one(cpu: str) -> tuple[str, dict]:
        with step(f"emulate: {len(paths)} file(s) on aarch64 {cpu} ({kernels_of(cpu)})"):
            return cpu, run_in_emulation(env, cpu, paths, inputs, threads)

    # qemu runs a CPU model on one host core: as many CPU models at once as the host has cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(cpus), os.cpu_count() or 1))) as pool:
        runs = dict(pool.map(one, cpus))
    for a in artifacts:
        gated, note = is_gated(a.precision, trained)
        for k, (task, output_table, name) in enumerate(zip(tasks, tables, names)):
            for cpu in cpus:
                run = runs[cpu]
                features = (run.get("cpu") or {}).get("features") or []
                row = EmulatedRow(a.path, a.precision, cpu, kernels_of(cpu), features, output=name,
                                  emulation_seconds=run.get("seconds"))
                record = run.get("files", {}).get(str(bundle / a.path), {})
                row.error = run.get("error") or record.get("error")
                if row.error is None and len(record["outputs"]) != len(references):
                    row.error = (f"{len(record['outputs'])} outputs under emulation, the reference has "
                                 f"{len(references)}")
                if row.error is None:
                    outputs, on_host = record["outputs"][k], host_out[a.path][k]
                    row.parity = _judge(a, outputs, references[k], output_table, gated, note, real, task, name)
                    row.vs_host = compare(on_host, outputs, real, task)
                    row.bit_exact = bool(np.array_equal(on_host, outputs))
                    if a.path in reference_path:
                        portable = reference_path[a.path][k]
                        row.arm_vs_reference_path = compare(portable, outputs, real, task)
                        row.host_vs_reference_path = compare(portable, on_host, real, task)
                    row.finding = _finding(row, Path(a.path).suffix.lower(), host)
                check.rows.append(row)
    return check


def _judge(artifact, outputs, expected, table, gated, note, real, task, output=None):
    """The emulated outputs judged like the host's: same metrics, same gates (parity.ParityResult)."""
    from .parity import ParityResult, compare

    gates = table.for_precision(artifact.precision)
    metrics = compare(expected, outputs, real, task)
    return ParityResult(artifact.path, artifact.precision, metrics, gates, tuple(gates.failures(metrics)), gated,
                        note, output=output)


def _environment_record(env: Environment) -> dict:
    return {"qemu": env.stamp.get("qemu"), "python": env.stamp.get("python"), "debian": env.stamp.get("debian"),
            "runtimes": env.versions, "host_runtimes": host_versions(),
            "version_differences": env.version_differences()}


def record_in_manifest(bundle: Path, check: EmulatedCheck) -> None:
    """Keep the proof in the bundle: ``manifest.json``'s ``emulation`` entry (one per arch), written atomically.
    validate hashes the artifacts, not the manifest, so recording does not invalidate the bundle."""
    from .manifest import MANIFEST_NAME

    path = bundle / MANIFEST_NAME
    try:
        data = json.loads(path.read_text("utf-8"))
        data.setdefault("emulation", {})[check.arch] = check.to_dict()
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except (OSError, ValueError, AttributeError, EdgekitError) as e:  # a read-only bundle still gets its verdict
        warn(f"the emulated result was not recorded in {path} ({e}); the verdict above stands, and --json keeps it")


ROW_HEADERS = ["artifact", "precision", "aarch64 CPU", "kernels", "vs PyTorch: cosine mean", "PSNR dB", "top-1",
               "verdict", "vs x86 host", "ARM vs ref path PSNR"]


def table_rows(check: EmulatedCheck) -> list[list[str]]:
    from .report import _psnr, _share

    rows = []
    for r in check.rows:
        if r.error:
            rows.append([r.label, r.precision, r.cpu, r.kernels, "-", "-", "-", f"ERROR: {r.error}", "-", "-"])
            continue
        m = r.parity.metrics
        if r.bit_exact:
            host = "bit-exact"
        else:
            host = f"PSNR {_psnr(r.vs_host.psnr_db)}, max {r.vs_host.max_abs_error:.3g}"
        rows.append([r.label, r.precision, r.cpu, r.kernels, f"{m.cosine_mean:.6f}", _psnr(m.psnr_db),
                     _share(m.top1_agreement), r.parity.verdict, host,
                     _psnr(r.arm_vs_reference_path.psnr_db) if r.arm_vs_reference_path is not None else "-"])
    return rows


def print_check(check: EmulatedCheck) -> None:
    from .table import format_table

    env = check.environment
    print(f"  on aarch64 under emulation (qemu {env.get('qemu')}, Python {env.get('python')}, "
          + ", ".join(f"{k} {v}" for k, v in (env.get("runtimes") or {}).items()) + f"); host: {check.host}")
    for difference in env.get("version_differences") or []:
        print(f"  note: {difference}")
    if check.rows:
        print(format_table(ROW_HEADERS, table_rows(check)))
    for finding in check.findings:
        print(f"  finding: {finding}")
    for problem in check.problems:
        print(f"  problem: {problem}")
    print(f"  ({KERNEL_NOTE})")


def check_cpus(env: Environment, cpus: tuple[str, ...]) -> None:
    known = env.known_cpus()
    unknown = [c for c in cpus if known and c.split(",")[0] not in known]
    if unknown:
        raise EdgekitError(f"--emulate-cpus: qemu {env.stamp.get('qemu')} has no CPU model {unknown[0]!r}; use "
                           f"one of {', '.join(known)}")
