"""What every device shares: the settings of a bench run, and turning the runner's JSON into a result."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

from .artifacts import RUNTIME_FORMATS, ModelFile
from .profiles import DeviceProfile
from .results import LatencyResult
from .runner import RESULT_MARK

RUNNER = Path(__file__).with_name("runner.py")  # copied to devices and run there as a script


class DeviceError(EdgekitError):
    """The device as a whole failed (unreachable, refused, no binary): every row it owes becomes an error."""


@dataclass(frozen=True)
class BenchSettings:
    runs: int = 100
    warmup: int = 10
    threads: tuple[int, ...] | None = None  # None: each device's own (profile, else 1 and all cores)
    seed: int = 0


def work_dir_from_mktemp(done, where: str, fix: str) -> str:
    """The folder ``mktemp -d .../edgekit.XXXXXX`` printed, checked to be that folder: safe to ``rm -rf`` later."""
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if (done.returncode != 0 or not path.startswith("/") or "/../" in path + "/"
            or not re.fullmatch(r"edgekit\.[A-Za-z0-9]+", path.rsplit("/", 1)[-1])):
        raise DeviceError(f"{where}: cannot create a work folder with mktemp "
                          f"({(done.stderr.strip() or path)[-200:]}); {fix}")
    return path


def default_threads(cpu_count: int | None) -> tuple[int, ...]:
    return tuple(dict.fromkeys([1, cpu_count or 1]))


def thread_counts(settings: BenchSettings, profile: DeviceProfile, cpu_count: int | None) -> tuple[int, ...]:
    return settings.threads or profile.threads or default_threads(cpu_count)


def runs_here(profile: DeviceProfile, model: ModelFile) -> bool:
    """A profile with ``runtime = "litert"`` (say) only gets the files that runtime reads."""
    return profile.runtime is None or RUNTIME_FORMATS[profile.runtime] == model.format


def new_result(model: ModelFile, profile: DeviceProfile, threads: int) -> LatencyResult:
    return LatencyResult(artifact=model.label, format=model.format, precision=model.precision,
                         model_bytes=model.bytes, device=profile.name, device_kind=profile.kind, threads=threads)


def runner_arguments(model_path: str, threads: int, settings: BenchSettings, tflite_runtime: str) -> list[str]:
    return ["--model", model_path, "--threads", str(threads), "--runs", str(settings.runs),
            "--warmup", str(settings.warmup), "--seed", str(settings.seed), "--tflite-runtime", tflite_runtime]


def parse_runner_output(stdout: str) -> dict | None:
    """The runner's JSON (its last marked line), or None when it never got that far."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                return json.loads(line[len(RESULT_MARK):])
            except ValueError:
                return None
    return None


def install_hint(python: str, payload_error: dict) -> str:
    """One line saying what to pip install, for a device whose Python lacks numpy or a runtime."""
    packages = payload_error.get("install", "")
    alternatives = packages.split(" or ")
    command = f"{python} -m pip install {alternatives[0]}"
    other = f" (or {' or '.join(alternatives[1:])})" if len(alternatives) > 1 else ""
    return f"{payload_error['message']} ({python}); install it there: {command}{other}"


def fill_from_runner(result: LatencyResult, payload: dict, python: str) -> LatencyResult:
    if "error" in payload:
        error = payload["error"]
        if error.get("kind") in ("no_runtime", "no_numpy"):
            result.error = install_hint(python, error)
        else:
            result.error = error.get("message", "the runner failed")
        return result
    result.runtime = payload["runtime"]["name"]
    result.runtime_version = payload["runtime"].get("version")
    result.warmup = payload["warmup"]
    result.load_ms = payload["load_ms"]
    result.first_ms = payload["first_ms"]
    result.peak_rss_mb = payload.get("peak_rss_mb")
    result.machine = payload.get("machine", {})
    result.extra = {"baseline_rss_mb": payload.get("baseline_rss_mb"), "inputs": payload.get("inputs"),
                    "numpy": payload.get("numpy"), "heavy_modules_loaded": payload.get("heavy_modules_loaded")}
    return result.with_samples(payload["samples_ms"])


def runner_failure(stdout: str, stderr: str, returncode: int) -> str:
    """A readable reason when the runner printed no JSON (crash, killed, Python too old...)."""
    lines = [l.strip() for l in (stderr + "\n" + stdout).splitlines() if l.strip()]
    lines = [l for l in lines if not l.startswith("INFO:")]
    tail = lines[-1][:300] if lines else "no output"
    if returncode < 0:
        return f"the runner was killed by signal {-returncode} ({tail})"
    return f"the runner failed with exit status {returncode}: {tail}"


class Device:
    """One place models run. ``measurements`` yields a result per (file, threads) as each one finishes."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.threads: tuple[int, ...] | None = None  # set once known, so a failure can name the rows it owes

    def measurements(self, files: list[ModelFile], settings: BenchSettings):
        raise NotImplementedError

    def copy_and_measure(self, files: list[ModelFile], work_dir: str, cannot_run, copy, measure, remove):
        """The loop of remote devices (ssh, adb): each runnable file copied once into ``work_dir`` under a name
        edgekit chose, timed at each thread count, then removed (a board's SD card may be small)."""
        for index, model in enumerate(files):
            if not runs_here(self.profile, model):
                continue
            rows = [new_result(model, self.profile, t) for t in self.threads]
            reason = cannot_run(model)
            if reason:
                for row in rows:
                    row.error = reason
                    yield row
                continue
            remote_model = f"{work_dir}/model_{index}{model.path.suffix.lower()}"
            copy(model.path, remote_model)
            for row in rows:
                yield measure(row, remote_model)
            remove(remote_model)
