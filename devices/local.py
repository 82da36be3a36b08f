"""The ``local`` device: this machine, each measurement in a fresh Python process running only the runner.

A fresh process per (file, threads) keeps PyTorch's thread pool, caches and memory out of the timing and out
of the peak resident memory, and makes that peak the model's own (plus Python and numpy, reported apart).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .base import (RUNNER, BenchSettings, Device, fill_from_runner, new_result, parse_runner_output,
                   runner_arguments, runner_failure, runs_here, thread_counts)
from .profiles import LocalProfile


class LocalDevice(Device):
    profile: LocalProfile

    def measurements(self, files, settings: BenchSettings):
        python = str(Path(self.profile.python).expanduser()) if self.profile.python else sys.executable
        self.threads = thread_counts(settings, self.profile, os.cpu_count())
        for model in files:
            if not runs_here(self.profile, model):
                continue
            for threads in self.threads:
                result = new_result(model, self.profile, threads)
                command = [python, str(RUNNER),
                           *runner_arguments(str(model.path), threads, settings, self.profile.tflite_runtime)]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=self.profile.timeout,
                                          stdin=subprocess.DEVNULL)
                except subprocess.TimeoutExpired:
                    result.error = (f"no result within {self.profile.timeout:g} s; use fewer --runs or raise "
                                    "timeout in the device profile")
                except OSError as e:
                    result.error = f"cannot start {python}: {e.strerror}; set python in the local device profile"
                else:
                    payload = parse_runner_output(done.stdout)
                    if payload is None:
                        result.error = runner_failure(done.stdout, done.stderr, done.returncode)
                    else:
                        fill_from_runner(result, payload, python)
                yield result
