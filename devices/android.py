"""``android`` devices over adb: LiteRT's ``benchmark_model`` (and optionally ``onnxruntime_perf_test``) on the phone.

Both tools are native binaries the user supplies (a path in the profile; nothing is downloaded). They are
pushed with the model to a fresh folder under /data/local/tmp, run through ``adb shell`` and their text
output is parsed into the same LatencyResult the Python runner gives. The phone-side command line is the one
string the phone's shell parses: it holds only names edgekit chose, each shlex-quoted.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from edgekit.console import warn
from edgekit.errors import EdgekitError

from .base import BenchSettings, Device, DeviceError, thread_counts, work_dir_from_mktemp
from .profiles import AndroidProfile
from .results import LatencyResult
from .runner import cpu_info

_LOG_PREFIX = re.compile(r"^(INFO|WARNING|ERROR|VERBOSE|DEBUG): ?")
_KEY_VALUE = re.compile(r"(\w+)=([-+0-9.eE]+|inf|nan)")
_NUMBER = r"([-+]?[0-9.]+(?:[eE][-+]?\d+)?)"
_DELEGATE_FLAGS = {"xnnpack": ["--use_xnnpack=true"], "cpu": ["--use_xnnpack=false"],
                   "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"]}
_ORT_PROVIDERS = {"xnnpack": "xnnpack", "cpu": "cpu", "nnapi": "nnapi"}
_SMALL_COMMAND_SECONDS = 60.0


# ---- benchmark_model's output --------------------------------------------------------------------------
def parse_benchmark_model_log(text: str) -> dict:
    """The figures of one ``benchmark_model`` run, in its own units (microseconds, MB).

    Handles the ``INFO: ``-prefixed lines of newer builds and the plain lines of older ones, ``%g`` numbers
    (``avg=2.95034e+06``) and the p5/median/p95 fields some builds add. Keys: init_us, first_us, warmup_avg_us,
    avg_us, count, first, min, max, std, p5, median, p95 (regular runs), warmup_count, model_mb,
    memory_init_mb, memory_overall_mb, peak_memory_mb, tf_version, threads, delegate, errors.
    """
    out: dict = {"errors": []}
    count_lines: list[dict] = []
    seen_summary = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if raw.startswith("ERROR:"):
            out["errors"].append(_LOG_PREFIX.sub("", line))
        line = _LOG_PREFIX.sub("", line.strip())
        if line.startswith("count=") and not seen_summary:
            count_lines.append({k: float(v) for k, v in _KEY_VALUE.findall(line)})
        elif line.startswith("Inference timings in us:"):
            seen_summary = True  # later count= lines belong to the op profiler
            for name, value in re.findall(r"([A-Za-z ()]+): " + _NUMBER, line.split(":", 1)[1]):
                key = {"Init": "init_us", "First inference": "first_us", "Warmup (avg)": "warmup_avg_us",
                       "Inference (avg)": "avg_us"}.get(name.strip())
                if key:
                    out[key] = float(value)
        elif m := re.match(r"The input model file size \(MB\): " + _NUMBER, line):
            out["model_mb"] = float(m.group(1))
        elif m := re.match(r"Memory footprint delta from the start of the tool \(MB\): init=" + _NUMBER
                           + r" overall=" + _NUMBER, line):
            out["memory_init_mb"], out["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
        elif m := re.match(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUMBER, line):
            out["peak_memory_mb"] = float(m.group(1))
        elif m := re.match(r"Tensorflow Version : (\S+)", line):
            out["tf_version"] = m.group(1)
        elif m := re.match(r"(?:Num threads|#threads used for CPU inference): \[(\d+)\]", line):
            out["threads"] = int(m.group(1))
        elif m := re.match(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\)", line):
            out["delegate"] = f"{m.group(3)}: {m.group(1)} of {m.group(2)} nodes"
        elif m := re.match(r"Initialized session in " + _NUMBER + "ms", line):
            out.setdefault("init_us", float(m.group(1)) * 1000.0)
    if count_lines:
        regular = count_lines[-1]
        out.update({k: v for k, v in regular.items() if k != "curr"})
        if len(count_lines) > 1:
            out["warmup_count"] = count_lines[0].get("count")
    return out


def result_from_benchmark_model(result: LatencyResult, log: dict) -> LatencyResult:
    if "avg_us" not in log and "avg" not in log:
        reason = log["errors"][-1] if log["errors"] else "benchmark_model printed no timings"
        result.error = f"benchmark_model failed: {reason}"
        return result
    ms = 1e-3
    result.runtime = "benchmark_model"
    result.runtime_version = log.get("tf_version")
    result.runs = int(log["count"]) if "count" in log else None
    result.warmup = int(log["warmup_count"]) if "warmup_count" in log else None
    result.load_ms = log["init_us"] * ms if "init_us" in log else None
    result.first_ms = log["first_us"] * ms if "first_us" in log else None
    result.mean_ms = log.get("avg", log.get("avg_us")) * ms
    for key, field in (("std", "std_ms"), ("min", "min_ms"), ("max", "max_ms"), ("median", "p50_ms")):
        if key in log:
            setattr(result, field, log[key] * ms)
    result.peak_rss_mb = log.get("peak_memory_mb")
    result.extra = {k: log[k] * ms for k in ("p5", "p95") if k in log}
    result.extra.update({k: log[k] for k in ("delegate", "memory_init_mb", "memory_overall_mb", "model_mb")
                         if k in log})
    return result


# ---- onnxruntime_perf_test's output --------------------------------------------------------------------
def parse_onnxruntime_perf_test_log(text: str) -> dict:
    """Figures of one ``onnxruntime_perf_test`` run, converted to ms and MB."""
    out: dict = {}
    seconds = {"Session creation time cost": "load_ms", "Min Latency": "min_ms", "Max Latency": "max_ms",
               "P50 Latency": "p50_ms", "P90 Latency": "p90_ms", "P95 Latency": "p95_ms", "P99 Latency": "p99_ms"}
    millis = {"First inference time cost": "first_ms", "Average inference time cost": "mean_ms"}
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9 ]+?)\s*:\s*" + _NUMBER + r"\s*(s|ms|bytes|%)?\s*$", line)
        if not m:
            continue
        name, value = m.group(1), float(m.group(2))
        if name in seconds:
            out[seconds[name]] = value * 1000.0
        elif name in millis:
            out[millis[name]] = value
        elif name == "Peak working set size":
            out["peak_rss_mb"] = value / 2**20
        elif name in ("Runs", "Total inference requests"):
            out["runs"] = int(value)
        elif name == "Number of inferences per second":
            out["inferences_per_s"] = value
    return out


def result_from_onnxruntime_perf_test(result: LatencyResult, log: dict, text: str) -> LatencyResult:
    if "mean_ms" not in log:
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        result.error = f"onnxruntime_perf_test failed: {lines[-1][:300] if lines else 'no output'}"
        return result
    result.runtime = "onnxruntime_perf_test"
    for key in ("runs", "load_ms", "first_ms", "mean_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms",
                "peak_rss_mb"):
        if key in log:
            setattr(result, key, log[key])
    if "p95_ms" in log:
        result.extra = {"p95": log["p95_ms"]}
    return result


# ---- the device ----------------------------------------------------------------------------------------
class AndroidDevice(Device):
    profile: AndroidProfile
    cpu: dict = {}  # read from the phone when a session starts (never mutated, only replaced)

    def adb_command(self, *args: str) -> list[str]:
        serial = ["-s", self.profile.serial] if self.profile.serial else []
        return [str(Path(self.profile.adb).expanduser()), *serial, *args]

    def _adb(self, *args: str, timeout: float = _SMALL_COMMAND_SECONDS, what: str = "adb"):
        command = self.adb_command(*args)
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                   stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise EdgekitError(f"adb ({self.profile.adb}) not found; install Android platform-tools or set adb = "
                               "\"/path/to/adb\" in the device profile") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.profile.describe()}: {what} got no answer within {timeout:g} s; check the "
                              "phone, or raise timeout in its profile") from None

    def _shell(self, words: list[str], timeout: float = _SMALL_COMMAND_SECONDS, what: str = "a command"):
        # adb joins its arguments into one string for the phone's sh; hand it one, quoted.
        return self._adb("shell", shlex.join(words), timeout=timeout, what=what)

    def _push(self, local: Path, remote: str) -> None:
        done = self._adb("push", str(local), remote, timeout=self.profile.timeout, what=f"pushing {local.name}")
        if done.returncode != 0:
            raise DeviceError(f"{self.profile.describe()}: adb push {local.name} failed: "
                              f"{(done.stderr or done.stdout).strip()[-300:]}")

    def _local_binary(self, path: str, what: str) -> Path:
        binary = Path(path).expanduser()
        if not binary.is_file():
            raise DeviceError(f"{what} {binary} does not exist; build it for the phone's ABI (arm64-v8a) or take "
                              f"it from a release, and set its path in the profile of device {self.profile.name}")
        return binary

    def _connect(self) -> None:
        done = self._adb("get-state", what="checking the device")
        state = done.stdout.strip()
        if done.returncode != 0 or state != "device":
            which = f"device {self.profile.serial}" if self.profile.serial else "a device"
            reason = (done.stderr or done.stdout).strip().splitlines()
            raise DeviceError(f"{self.profile.describe()}: adb cannot reach {which} "
                              f"({reason[-1] if reason else state or 'no answer'}); connect the phone, allow USB "
                              "debugging, and check `adb devices`")

    def _make_work_dir(self) -> str:
        template = f"{self.profile.work_dir.rstrip('/')}/edgekit.XXXXXX"
        done = self._shell(["mktemp", "-d", template], what="creating a work folder")
        return work_dir_from_mktemp(done, self.profile.describe(), "set work_dir in the profile to a writable folder")

    def _cpu(self) -> dict:
        """The phone's CPU and its int8 features (dotprod, i8mm), recorded with every row."""
        done = self._shell(["cat", "/proc/cpuinfo"], what="reading the CPU")
        return cpu_info(done.stdout if done.returncode == 0 else "")

    def _cpu_count(self) -> int | None:
        done = self._shell(["nproc"], what="counting cores")
        text = done.stdout.strip()
        return int(text) if done.returncode == 0 and text.isdigit() else None

    def _install_tool(self, local: Path, work_dir: str) -> str:
        remote = f"{work_dir}/{local.name if re.fullmatch(r'[A-Za-z0-9_.-]+', local.name) else 'tool'}"
        self._push(local, remote)
        self._shell(["chmod", "755", remote], what="chmod")
        return remote

    def measurements(self, files, settings: BenchSettings):
        p = self.profile
        benchmark_model = self._local_binary(p.benchmark_model, "benchmark_model binary")
        perf_test = self._local_binary(p.onnxruntime_perf_test, "onnxruntime_perf_test binary") \
            if p.onnxruntime_perf_test else None
        self._connect()
        self.cpu = self._cpu()
        work_dir = self._make_work_dir()
        try:
            asked = settings.threads or p.threads
            self.threads = thread_counts(settings, p, None if asked else self._cpu_count())
            tools = {"tflite": self._install_tool(benchmark_model, work_dir)}
            if perf_test and any(m.format == "onnx" for m in files):
                tools["onnx"] = self._install_tool(perf_test, work_dir)
            yield from self.copy_and_measure(
                files, work_dir, lambda model: self._cannot_run(model, tools), self._push,
                lambda row, remote: self._measure(row, tools[row.format], remote, settings),
                lambda remote: self._shell(["rm", "-f", remote], what="removing a model"))
        finally:
            self._clean_up(work_dir)

    def _cannot_run(self, model, tools: dict) -> str | None:
        if model.format == "onnx":
            if "onnx" not in tools:
                return ("android devices run .onnx files only with onnxruntime_perf_test: set its path as "
                        "onnxruntime_perf_test in the profile, or bench with --runtime litert")
            if self.profile.delegate not in _ORT_PROVIDERS:
                return f"onnxruntime_perf_test has no {self.profile.delegate} provider; use delegate = \"nnapi\""
            if model.external_data:
                return "the ONNX file keeps its weights in side files; export it as one file to run it on a phone"
        return None

    def benchmark_model_words(self, tool: str, remote_model: str, threads: int, settings: BenchSettings) -> list[str]:
        p = self.profile
        taskset = ["taskset", p.taskset] if p.taskset else []
        # --min_secs=0 and --warmup_min_secs=0 make the run counts exact instead of "at least".
        return [*taskset, tool, f"--graph={remote_model}", f"--num_threads={threads}",
                f"--num_runs={settings.runs}", "--min_secs=0", f"--warmup_runs={settings.warmup}",
                "--warmup_min_secs=0", *_DELEGATE_FLAGS[p.delegate], "--report_peak_memory_footprint=true"]

    def perf_test_words(self, tool: str, remote_model: str, threads: int, settings: BenchSettings) -> list[str]:
        p = self.profile
        taskset = ["taskset", p.taskset] if p.taskset else []
        # -I feeds generated inputs of each input's own type and shape.
        return [*taskset, tool, "-I", "-m", "times", "-r", str(settings.runs), "-x", str(threads),
                "-e", _ORT_PROVIDERS[p.delegate], remote_model]

    def _measure(self, row: LatencyResult, tool: str, remote_model: str, settings: BenchSettings) -> LatencyResult:
        build = self.benchmark_model_words if row.format == "tflite" else self.perf_test_words
        done = self._shell(build(tool, remote_model, row.threads, settings), timeout=self.profile.timeout,
                           what=f"timing {row.artifact}")
        text = done.stdout + "\n" + done.stderr
        if row.format == "tflite":
            result_from_benchmark_model(row, parse_benchmark_model_log(text))
        else:
            result_from_onnxruntime_perf_test(row, parse_onnxruntime_perf_test_log(text), text)
        row.machine = {"system": "Android", "machine": self.cpu.get("arch"), "cpu": self.cpu}
        if row.ok:
            row.extra["delegate_setting"] = self.profile.delegate
            if self.profile.taskset:
                row.extra["taskset"] = self.profile.taskset
        return row

    def _clean_up(self, work_dir: str) -> None:
        try:
            self._shell(["rm", "-rf", work_dir], what="cleaning up")
        except EdgekitError as e:
            warn(f"device {self.profile.name}: could not remove {work_dir} on the phone ({e}); remove it by hand")
