"""int8 ONNX with entropy calibration: edgekit's threshold search against ONNX Runtime's own, in one process.

Google's ImageNet MobileNet v1 0.25/128 and v2 1.0/224, imported into edgekit models and exported to fp32 ONNX with
edgekit's exporter; calibrated on the 9 everyday photos plus every 5th of the 250 shared ImageNet samples (59
images) with ``--calib-method entropy``. Each model is quantized twice, one after the other: with ONNX Runtime's
``HistogramCollector.get_entropy_threshold`` and with ``quantize/entropy_threshold.py``. Both files must hold the
same activation ranges (every QuantizeLinear scale and zero point, compared exactly); the table gives the time of
the whole ``quantize_onnx`` call for each, and minmax calibration for scale. The CPU is named beside the figures.

    .venv/bin/python benchmarks/entropy_calibration.py [--data ../shared/data] [--work DIR]

Writes benchmarks/results/entropy_calibration_<cpu>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from google_onnx import fp32_onnx_and_calibration  # beside this script
from scratch import work_folder

from edgekit.cpu import describe, file_slug, host_cpu

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mobilenet_v1 0.25/128": ("mobilenet_v1", "mobilenet_v1_0.25_128_quant.tflite", 0.25, 128),
          "mobilenet_v2 1.0/224": ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite", None, None)}


def _activation_ranges(path: Path) -> dict[str, tuple]:
    """Every activation QuantizeLinear's (scale, zero point), by the tensor it quantizes."""
    import onnx

    graph = onnx.load(str(path)).graph
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    return {n.input[0]: (values[n.input[1]].tobytes(), values[n.input[2]].tobytes()) for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in values and values[n.input[1]].size == 1}


def _measure(key: str, data: Path, work: Path) -> dict:
    from edgekit.quantize import onnx_int8

    folder = work / MODELS[key][0]
    folder.mkdir(parents=True, exist_ok=True)
    _, fp32, calibration, _ = fp32_onnx_and_calibration(*MODELS[key], data, folder)

    def timed(out: Path, method: str) -> float:
        started = time.perf_counter()
        onnx_int8.quantize_onnx(fp32, out, calibration, method=method)
        return round(time.perf_counter() - started, 2)

    row = {"model": key, "calibration_images": len(calibration)}
    row["minmax_seconds"] = timed(folder / "minmax.onnx", "minmax")
    edgekit_search = onnx_int8.faster_entropy
    onnx_int8.faster_entropy = lambda collector: None  # ONNX Runtime's own search, as before edgekit's
    try:
        row["entropy_onnxruntime_seconds"] = timed(folder / "entropy_ort.onnx", "entropy")
    finally:
        onnx_int8.faster_entropy = edgekit_search
    row["entropy_edgekit_seconds"] = timed(folder / "entropy_edgekit.onnx", "entropy")
    theirs, ours = _activation_ranges(folder / "entropy_ort.onnx"), _activation_ranges(folder / "entropy_edgekit.onnx")
    row["activation_ranges"] = len(ours)
    row["identical_ranges"] = sum(theirs.get(k) == v for k, v in ours.items()) if theirs.keys() == ours.keys() else 0
    row["speedup"] = round(row["entropy_onnxruntime_seconds"] / row["entropy_edgekit_seconds"], 2)
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("EDGEKIT_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--work", type=Path, default=None, help="keep the exports here (default: a temporary folder)")
    args = parser.parse_args()
    cpu = host_cpu()
    work = work_folder(args.work, "edgekit-entropy-")
    rows = [_measure(key, args.data, work) for key in MODELS]
    lines = ["# Entropy calibration of int8 ONNX: edgekit's threshold search against ONNX Runtime's own",
             "", f"CPU: {describe(cpu)}, {os.cpu_count()} cores. edgekit's `quantize_onnx` (ONNX Runtime's calibrator "
             "and quantizer) with `--calib-method entropy` (2048 histogram bins, 256 levels) on 59 pictures, the "
             "whole call timed, once with ONNX Runtime's `get_entropy_threshold` and once with edgekit's "
             "(`quantize/entropy_threshold.py`); minmax for scale. Ranges: every activation QuantizeLinear's scale "
             "and zero point, compared byte for byte between the two files.", "",
             "| model | minmax s | entropy, ONNX Runtime's search s | entropy, edgekit's search s | speed-up | "
             "identical ranges |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['minmax_seconds']} | {r['entropy_onnxruntime_seconds']} | "
                     f"{r['entropy_edgekit_seconds']} | {r['speedup']}x | "
                     f"{r['identical_ranges']} of {r['activation_ranges']} |")
    results = ROOT / "benchmarks" / "results"
    stem = f"entropy_calibration_{file_slug(cpu)}"
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (results / f"{stem}.json").write_text(json.dumps({"cpu": describe(cpu), "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0 if all(r["identical_ranges"] == r["activation_ranges"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
