"""Runs inside the emulated aarch64 Python (``python -m edgekit.emulate_worker JOB.json``): each file on the job's
inputs through ``edgekit.runtimes``, the very code the host's parity runs, so layout, quantization of inputs and
batching cannot differ between the two sides. Outputs go to .npy files; one marked JSON line says what ran where.

Imports numpy, the runtimes and edgekit's runtime layer only (the emulated Python has nothing else).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from importlib import metadata

RESULT_MARK = "EDGEKIT_EMULATED "  # edgekit.emulate.RESULT_MARK (not imported: that module needs the host's tools)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(job_path: str) -> int:
    import numpy as np

    from edgekit.runtimes import open_runtime

    with open(job_path) as f:
        job = json.load(f)
    # the device runner's /proc/cpuinfo parser, loaded by path: under qemu that file describes the emulated CPU
    spec = importlib.util.spec_from_file_location("edgekit_device_runner", job["runner"])
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    inputs = [np.load(path) for path in job["inputs"]]  # one array per model input, in forward()'s order
    files = {}
    for item in job["files"]:
        started = time.perf_counter()
        try:
            outputs = open_runtime(item["path"], threads=job["threads"]).run(inputs)
            np.savez(item["output"], *outputs)  # arr_0, arr_1, ...: every output, in the file's order
            files[item["path"]] = {"seconds": time.perf_counter() - started}
        except Exception as e:  # one file's failure is that file's row; the others still run
            files[item["path"]] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
    payload = {"cpu": runner.cpu_info(), "machine": runner.machine_info(),
               "versions": {n: _version(n) for n in ("numpy", "onnxruntime", "ai-edge-litert")}, "files": files}
    sys.stdout.write(RESULT_MARK + json.dumps(payload) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
