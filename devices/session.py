"""Run one bench over several devices at once: a thread per device, results gathered into one list.

Devices run concurrently because they are separate machines; on one device the measurements run one after
another, since two models timed side by side would slow each other down. A device that fails as a whole
(unreachable, wrong host key, no adb) turns the rows it owes into error rows; the others finish.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from edgekit.errors import EdgekitError

from .android import AndroidDevice
from .artifacts import ModelFile
from .base import BenchSettings, Device, new_result, runs_here
from .emulated import EmulatedDevice
from .local import LocalDevice
from .profiles import DeviceProfile
from .results import LatencyResult
from .ssh import SshDevice

DEVICE_CLASSES = {"local": LocalDevice, "ssh": SshDevice, "android": AndroidDevice, "emulated": EmulatedDevice}


def open_device(profile: DeviceProfile) -> Device:
    return DEVICE_CLASSES[profile.kind](profile)


def _owed(device: Device, files: list[ModelFile], settings: BenchSettings, done: set) -> list[LatencyResult]:
    threads = device.threads or settings.threads or device.profile.threads or (1,)
    return [new_result(m, device.profile, t) for m in files if runs_here(device.profile, m)
            for t in threads if (m.label, t) not in done]


def _run_device(device: Device, files, settings, report: Callable[[LatencyResult], None]) -> list[LatencyResult]:
    results: list[LatencyResult] = []
    try:
        for result in device.measurements(files, settings):
            results.append(result)
            report(result)
    except EdgekitError as e:
        message = str(e)
    except Exception as e:  # a bug or an OS error on one device must not lose the other devices' rows
        message = f"unexpected {type(e).__name__}: {e}"
    else:
        return results
    for row in _owed(device, files, settings, {(r.artifact, r.threads) for r in results}):
        row.error = message
        results.append(row)
        report(row)
    return results


def run_benchmarks(files: list[ModelFile], profiles: list[DeviceProfile], settings: BenchSettings,
                   report: Callable[[LatencyResult], None] | None = None) -> list[LatencyResult]:
    """Every file on every device at each thread count; sorted by file, then device, then threads."""
    lock = threading.Lock()

    def locked_report(result: LatencyResult) -> None:
        if report:
            with lock:
                report(result)

    devices = [open_device(p) for p in profiles]
    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="edgekit-bench") as pool:
        futures = [pool.submit(_run_device, d, files, settings, locked_report) for d in devices]
        per_device = [f.result() for f in futures]
    file_order = {m.label: i for i, m in enumerate(files)}
    device_order = {p.name: i for i, p in enumerate(profiles)}
    rows = [r for results in per_device for r in results]
    return sorted(rows, key=lambda r: (file_order.get(r.artifact, 0), device_order[r.device], r.threads))
