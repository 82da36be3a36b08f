"""The ``emulated`` device: an aarch64 board with no board. edgekit's emulated aarch64 Python (qemu-user, the
aarch64 wheels; ``edgekit emulate setup``) plays the board's Python, and the session follows an SSH board's
path: a work folder made with ``mktemp -d``, the runner and each model copied in under names edgekit chose,
the runner run there, its JSON parsed, the folder removed.

Its figures are emulation speed on the host's CPU, not latency: each row's runtime says ``emulated <cpu>`` and
``extra["emulated"]`` says what the row proves (the ARM kernels load and run: dot product, i8mm).
"""

from __future__ import annotations

import shutil
import subprocess

from edgekit.console import warn
from edgekit.emulate import KERNEL_NOTE, ensure_environment, kernels_of

from .base import (RUNNER, BenchSettings, Device, DeviceError, fill_from_runner, parse_runner_output,
                   runner_arguments, runner_failure, thread_counts, work_dir_from_mktemp)
from .profiles import EmulatedProfile

_SMALL_COMMAND_SECONDS = 600.0  # a probe imports Python under emulation: seconds, not milliseconds


class EmulatedDevice(Device):
    profile: EmulatedProfile

    def _python(self):
        """The emulated Python's command line (qemu, sysroot, CPU model) and the environment it runs in."""
        env = ensure_environment()
        return [str(env.qemu), "-L", str(env.sysroot), "-cpu", self.profile.cpu, str(env.python)], env

    def _run(self, words: list[str], timeout: float, what: str):
        command, env = self._command
        try:
            return subprocess.run(command + words, capture_output=True, text=True, timeout=timeout,
                                  env=env.environ(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.profile.describe()}: {what} got no answer within {timeout:g} s under "
                              "emulation; use fewer --runs or raise timeout in the profile") from None

    def measurements(self, files, settings: BenchSettings):
        p = self.profile
        warn(f"device {p.name} is emulated aarch64 ({p.cpu}, {kernels_of(p.cpu)}): {KERNEL_NOTE}")
        self._command = self._python()
        done = subprocess.run(["mktemp", "-d", "/tmp/edgekit.XXXXXX"] if not p.work_dir else
                              ["mktemp", "-d", f"{p.work_dir.rstrip('/')}/edgekit.XXXXXX"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        work_dir = work_dir_from_mktemp(done, p.describe(), "set work_dir in the profile")
        try:
            shutil.copyfile(RUNNER, f"{work_dir}/runner.py")
            probe = self._run([f"{work_dir}/runner.py", "--probe"], _SMALL_COMMAND_SECONDS, "probing Python")
            info = parse_runner_output(probe.stdout)
            if info is None:
                raise DeviceError(f"{p.describe()}: {runner_failure(probe.stdout, probe.stderr, probe.returncode)}; "
                                  "rebuild the environment: edgekit emulate clean && edgekit emulate setup")
            self.threads = thread_counts(settings, p, 1)  # qemu's threads share the host's cores: 1 by default
            yield from self.copy_and_measure(
                files, work_dir, lambda model: None, shutil.copyfile,
                lambda row, remote: self._measure(row, remote, settings),
                lambda remote: subprocess.run(["rm", "-f", "--", remote], check=False))
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _measure(self, row, remote_model: str, settings: BenchSettings):
        p = self.profile
        done = self._run([f"{remote_model.rsplit('/', 1)[0]}/runner.py",
                          *runner_arguments(remote_model, row.threads, settings, p.tflite_runtime)],
                         p.timeout, f"timing {row.artifact}")
        payload = parse_runner_output(done.stdout)
        if payload is None:
            row.error = runner_failure(done.stdout, done.stderr, done.returncode)
            return row
        fill_from_runner(row, payload, f"emulated aarch64 Python ({p.cpu})")
        if row.ok:
            row.runtime_version = f"{row.runtime_version} emulated {p.cpu}"
            row.extra["emulated"] = {"cpu": p.cpu, "kernels": kernels_of(p.cpu), "note": KERNEL_NOTE}
        return row
