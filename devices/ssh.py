"""``ssh`` devices (Raspberry Pi, Jetson, any Linux board): copy the runner and the models, run, clean up.

Uses the system ``ssh`` client with argument lists, so the user's keys, agent and ~/.ssh/config work as
in a terminal: BatchMode (never a password prompt), host keys checked by default, a connect timeout and a
timeout per command. Files travel as ``cat > PATH`` on ssh's stdin rather than through scp, whose
remote-path handling differs between its SFTP and legacy modes across OpenSSH versions. Each string the
remote shell parses is built with shlex quoting from names edgekit chose (the work folder mktemp made,
model_0.tflite, ...) plus the profile's python path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgekit.console import warn
from edgekit.errors import EdgekitError
from edgekit.formats import FORMATS

from .base import (RUNNER, BenchSettings, Device, DeviceError, fill_from_runner, parse_runner_output,
                   runner_arguments, runner_failure, thread_counts, work_dir_from_mktemp)
from .profiles import SshProfile

_SSH_FAILED = 255  # ssh's own status for connection and authentication failures
_SMALL_COMMAND_SECONDS = 60.0
_RUNTIME_PACKAGES = {"tflite": ("ai_edge_litert", "tflite_runtime"), "onnx": ("onnxruntime",), "pte": ("executorch",)}
_INSTALL = {"tflite": "ai-edge-litert (or tflite-runtime)", "onnx": "onnxruntime", "pte": "executorch"}


def _remote_word(word: str) -> str:
    """shlex.quote, except that a leading ``~/`` still means the remote home folder."""
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


class SshDevice(Device):
    """One connection (an OpenSSH control master) carries every command of a session: a handshake costs
    0.5-1 s on a board, and a bundle at three thread counts needs dozens of commands."""

    profile: SshProfile
    _control_path: str | None = None

    # ---- the ssh command line ----------------------------------------------------------------------
    def _options(self) -> list[str]:
        p = self.profile
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(p.connect_timeout))}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if p.host_key_checking == "off":
            opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            opts += ["-o", "StrictHostKeyChecking=" + ("yes" if p.host_key_checking == "strict" else "accept-new")]
            if p.known_hosts:
                opts += ["-o", f"UserKnownHostsFile={Path(p.known_hosts).expanduser()}"]
        if p.identity_file:
            opts += ["-i", str(Path(p.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        if p.user:
            opts += ["-o", f"User={p.user}"]
        if self._control_path:
            opts += ["-o", "ControlMaster=no", "-o", f"ControlPath={self._control_path}"]
        return opts

    def ssh_command(self, remote: str) -> list[str]:
        port = ["-p", str(self.profile.port)] if self.profile.port else []
        return ["ssh", *self._options(), *port, "--", self.profile.host, remote]

    def _call(self, command: list[str], timeout: float, what: str, upload: Path | None = None):
        """Run ssh; ``upload`` is a local file fed to the remote command's stdin."""
        try:
            if upload is None:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
            else:
                with open(upload, "rb") as source:
                    done = subprocess.run(command, capture_output=True, timeout=timeout, stdin=source)
                done.stdout, done.stderr = (done.stdout.decode(errors="replace"),
                                            done.stderr.decode(errors="replace"))
        except FileNotFoundError:
            raise EdgekitError("the ssh client is not installed; install openssh-client") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.profile.describe()}: {what} got no answer within {timeout:g} s; check the "
                              "device, or raise timeout in its profile") from None
        if done.returncode == _SSH_FAILED:
            raise DeviceError(self._connection_failure(done.stderr))
        return done

    def _connection_failure(self, stderr: str) -> str:
        p = self.profile
        where = f"{p.describe()} (device {p.name})"
        known = p.known_hosts or "~/.ssh/known_hosts"
        port = f"-p {p.port} " if p.port else ""
        detail = " ".join(l.strip() for l in stderr.splitlines() if l.strip() and not l.startswith("@"))[-300:]
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return (f"{where}: the host key CHANGED since it was recorded in {known}; if the board was "
                    f"reinstalled, remove the old key with `ssh-keygen -R {p.host}` and verify the new one, "
                    "otherwise suspect an attack")
        if "Host key verification failed" in stderr or "No ED25519 host key is known" in stderr:
            return (f"{where}: host key verification failed: its key is not in {known}; verify the key and add "
                    f"it (`ssh-keyscan {port}{p.host} >> {known}`), or set host_key_checking = \"accept-new\" "
                    "in the profile to trust it on first use")
        if "Permission denied" in stderr:
            return (f"{where}: the key was not accepted (Permission denied); set identity_file in the profile "
                    "or add your public key to the board's ~/.ssh/authorized_keys")
        for reason in ("Connection refused", "timed out", "No route to host", "Could not resolve hostname",
                       "Network is unreachable", "Connection closed", "Connection reset"):
            if reason in stderr:
                return f"{where} is unreachable ({reason}); check that it is on, on the network and runs sshd"
        return f"{where}: ssh failed: {detail or 'no message'}"

    def _remote(self, words: list[str], timeout: float = _SMALL_COMMAND_SECONDS, what: str = "a command"):
        return self._call(self.ssh_command(" ".join(_remote_word(w) for w in words)), timeout, what)

    def _copy(self, local: Path, remote_path: str, timeout: float) -> None:
        command = self.ssh_command(f"cat > {_remote_word(remote_path)}")
        done = self._call(command, timeout, f"copying {local.name}", upload=local)
        if done.returncode != 0:
            raise DeviceError(f"{self.profile.describe()}: copying {local.name} failed: "
                              f"{done.stderr.strip()[-300:] or 'no message'}; check free space in the work folder")

    # ---- one bench session -------------------------------------------------------------------------
    def _connect(self) -> None:
        """Start the control master; connection problems (host key, refused, timeout) surface here."""
        control_dir = tempfile.mkdtemp(prefix="edgekit-ssh-")
        command = self.ssh_command("true")
        # ControlPersist lets the master outlive edgekit by at most two minutes if edgekit is killed.
        command[1:1] = ["-o", "ControlMaster=yes", "-o", "ControlPersist=120",
                        "-o", f"ControlPath={os.path.join(control_dir, 'master')}"]
        # The master forks into the background holding stderr: a file, not a pipe, or reading would never end.
        with tempfile.TemporaryFile("w+") as errors:
            try:
                done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                      timeout=self.profile.connect_timeout + 30)
            except FileNotFoundError:
                shutil.rmtree(control_dir, ignore_errors=True)
                raise EdgekitError("the ssh client is not installed; install openssh-client") from None
            except subprocess.TimeoutExpired:
                shutil.rmtree(control_dir, ignore_errors=True)
                raise DeviceError(f"{self.profile.describe()} (device {self.profile.name}) did not answer within "
                                  f"{self.profile.connect_timeout + 30:g} s; check that it is on the network") from None
            errors.seek(0)
            stderr = errors.read()
        if done.returncode != 0:
            shutil.rmtree(control_dir, ignore_errors=True)
            raise DeviceError(self._connection_failure(stderr))
        self._control_path = os.path.join(control_dir, "master")

    def _disconnect(self) -> None:
        if not self._control_path:
            return
        stop = self.ssh_command("true")
        stop[-1:] = []  # no remote command: -O exit talks to the master only
        stop[1:1] = ["-O", "exit"]
        try:
            subprocess.run(stop, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass  # ControlPersist ends it soon anyway
        shutil.rmtree(os.path.dirname(self._control_path), ignore_errors=True)
        self._control_path = None

    def _make_work_dir(self) -> str:
        parent = self.profile.work_dir
        template = f"{parent.rstrip('/')}/edgekit.XXXXXX" if parent else None
        script = f"mktemp -d {shlex.quote(template)}" if template else 'mktemp -d "${TMPDIR:-/tmp}/edgekit.XXXXXX"'
        done = self._remote(["sh", "-c", script], what="creating a work folder")
        return work_dir_from_mktemp(done, self.profile.describe(), "set work_dir in the profile")

    def _probe(self, work_dir: str) -> dict:
        python = self.profile.python
        done = self._remote([python, f"{work_dir}/runner.py", "--probe"], what="probing Python")
        info = parse_runner_output(done.stdout)
        if info is None:
            if done.returncode == 127 or "not found" in done.stderr:
                raise DeviceError(f"{self.profile.describe()}: {python} not found there; install Python 3.8+ or "
                                  "set python = \"/path/to/python3\" in the profile")
            raise DeviceError(f"{self.profile.describe()}: {runner_failure(done.stdout, done.stderr, done.returncode)}"
                              f" (is {python} Python 3.8 or newer?)")
        return info

    def _cannot_run(self, info: dict, model) -> str | None:
        python = self.profile.python
        if info.get("numpy") is None:
            return f"numpy is missing in {python} there; install it: {python} -m pip install numpy"
        if not any(m in info.get("runtimes", {}) for m in _RUNTIME_PACKAGES[model.format]):
            return (f"no {FORMATS[model.format].title} runtime in {python} there; install "
                    f"one: {python} -m pip install {_INSTALL[model.format]}")
        if model.external_data:
            return "the ONNX file keeps its weights in side files; export it as one file to run it on a device"
        return None

    def measurements(self, files, settings: BenchSettings):
        p = self.profile
        if p.host_key_checking == "off":
            warn(f"device {p.name}: host key checking is OFF in its profile; anyone on the network path can "
                 "impersonate the board", loud=True)
        self._connect()
        try:
            yield from self._session(files, settings)
        finally:
            self._disconnect()

    def _session(self, files, settings: BenchSettings):
        p = self.profile
        work_dir = self._make_work_dir()
        try:
            self._copy(RUNNER, f"{work_dir}/runner.py", _SMALL_COMMAND_SECONDS)
            info = self._probe(work_dir)
            self.threads = thread_counts(settings, p, info.get("cpu_count"))
            yield from self.copy_and_measure(
                files, work_dir, lambda model: self._cannot_run(info, model),
                lambda local, remote: self._copy(local, remote, p.timeout),
                lambda row, remote: self._measure(row, work_dir, remote, settings),
                lambda remote: self._remote(["rm", "-f", remote], what="removing a model"))
        finally:
            self._clean_up(work_dir)

    def _measure(self, row, work_dir: str, remote_model: str, settings: BenchSettings):
        p = self.profile
        words = ["taskset", p.taskset] if p.taskset else []
        words += [p.python, f"{work_dir}/runner.py",
                  *runner_arguments(remote_model, row.threads, settings, p.tflite_runtime)]
        done = self._remote(words, timeout=p.timeout, what=f"timing {row.artifact}")
        payload = parse_runner_output(done.stdout)
        if payload is None:
            row.error = runner_failure(done.stdout, done.stderr, done.returncode)
        else:
            fill_from_runner(row, payload, p.python)
        return row

    def _clean_up(self, work_dir: str) -> None:
        try:
            done = self._remote(["rm", "-rf", "--", work_dir], what="cleaning up")
            if done.returncode != 0:
                raise DeviceError(done.stderr.strip()[-200:])
        except EdgekitError as e:
            warn(f"device {self.profile.name}: could not remove the work folder {work_dir} ({e}); remove it by hand")
