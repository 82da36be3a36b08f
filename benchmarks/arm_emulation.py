"""int8 MobileNets with real weights on ARM's own kernels, under emulation, against this x86 host.

Google's ImageNet MobileNet v2 1.0/224 and v1 0.25/128 are imported and exported by edgekit with ``--int8``
(calibrated on the shared ImageNet samples); each bundle's int8 ONNX and TFLite then run on the host and, in the
emulated aarch64 Python (``edgekit emulate``), on qemu's cortex-a72 (NEON), cortex-a76 (dot product: XNNPACK
sdot, MLAS udot) and max,sme=off (i8mm) on the bundle's parity inputs (16 ImageNet photos + 4 random). Google's
own uint8 v2 file runs too, against the host. Each row says where its arithmetic ran and how far it is from
PyTorch (the bundle's gates), from the runtime's reference path and from the x86 host. No row is a latency.

    .venv/bin/python benchmarks/arm_emulation.py [--data ../shared/data]

Writes benchmarks/results/arm_emulation_<host cpu>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit import emulate
from edgekit.cpu import describe, host_cpu
from edgekit.manifest import Manifest, Reference, validate_bundle
from edgekit.parity import compare, is_real
from edgekit.runtimes import open_runtime
from edgekit.table import markdown_table

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mobilenet_v2 1.0/224": ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite", []),
          "mobilenet_v1 0.25/128": ("mobilenet_v1", "mobilenet_v1_0.25_128_quant.tflite",
                                    ["--width", "0.25", "--resolution", "128"])}
HEADERS = ["model", "file", "computed on", "vs PyTorch: cosine mean", "PSNR dB", "top-1 agree", "gates",
           "vs ref path: cosine mean", "PSNR dB ", "vs x86 host"]


def _export(name: str, weights: Path, options: list[str], data: Path, out: Path) -> Path:
    command = [str(Path(sys.executable).with_name("edgekit")), "export", name, "--weights", str(weights), *options,
               "--int8", "--calib", str(data / "imagenet-samples" / "images"), "--out", str(out),
               "--latency-runs", "0", "-q"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return next(p for p in out.iterdir() if (p / "manifest.json").is_file())


def _psnr(value) -> str:
    return "inf" if value == "inf" or value == float("inf") else f"{float(value):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    cpu = host_cpu()
    host = describe(cpu)
    env = emulate.ensure_environment()
    rows, record = [], {"host_cpu": cpu, "host_cpu_described": host, "cpus": list(emulate.DEFAULT_CPUS),
                        "environment": {"qemu": env.stamp.get("qemu"), "python": env.stamp.get("python"),
                                        "runtimes": env.versions, "host_runtimes": emulate.host_versions()},
                        "load_before": os.getloadavg(), "models": {}}
    print(f"host CPU: {host}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgekit-arm-") as work:
        for key, (name, weights, options) in MODELS.items():
            print(f"{key}: export --int8", file=sys.stderr)
            started = time.perf_counter()
            bundle = _export(name, args.data / "tflite" / weights, options, args.data, Path(work) / name)
            export_seconds = time.perf_counter() - started
            manifest = Manifest.read(bundle)
            reference = Reference.read(bundle, None)
            real = is_real(reference.sources)
            int8 = [a.path for a in manifest.artifacts if a.precision == "int8"]
            host_check = validate_bundle(bundle)
            entry = {"export_seconds": round(export_seconds, 1), "inputs": len(reference.sources),
                     "real_images": int(real.sum()), "host": {}, "files": int8}
            for p in host_check.parity:
                if p.artifact not in int8:
                    continue
                entry["host"][p.artifact] = p.to_dict()
                rows.append([key, p.artifact, f"x86 host: {host}", f"{p.metrics.cosine_mean:.4f}",
                             _psnr(p.metrics.psnr_db), f"{p.metrics.top1_agreement:.0%}", p.verdict,
                             f"{p.kernels.host_kernels.cosine_mean:.6f}", _psnr(p.kernels.host_kernels.psnr_db), "-"])
            print(f"{key}: {len(int8)} int8 files on {', '.join(emulate.DEFAULT_CPUS)}", file=sys.stderr)
            check = emulate.check_bundle(env, bundle, emulate.DEFAULT_CPUS, files=int8)
            entry["emulated"] = check.to_dict()
            for r in sorted(check.rows, key=lambda r: (int8.index(r.artifact), emulate.DEFAULT_CPUS.index(r.cpu))):
                if r.error:
                    rows.append([key, r.artifact, f"aarch64 {r.cpu}", "-", "-", "-", f"ERROR: {r.error}", "-", "-", "-"])
                    continue
                m = r.parity.metrics
                host_diff = "bit-exact" if r.bit_exact else (f"cosine {r.vs_host.cosine_mean:.6f}, PSNR "
                                                            f"{_psnr(r.vs_host.psnr_db)}")
                rows.append([key, r.artifact, f"aarch64 {r.cpu} ({r.kernels})", f"{m.cosine_mean:.4f}",
                             _psnr(m.psnr_db), f"{m.top1_agreement:.0%}", r.parity.verdict,
                             f"{r.arm_vs_reference_path.cosine_mean:.6f}", _psnr(r.arm_vs_reference_path.psnr_db),
                             host_diff])
            entry["findings"] = check.findings
            if name == "mobilenet_v2":  # Google's own uint8 file, on the same inputs: ARM against x86 only
                google = args.data / "tflite" / weights
                host_out = open_runtime(google)(reference.inputs)
                entry["google_uint8"] = {}
                for emulated_cpu in emulate.DEFAULT_CPUS:
                    run = emulate.run_in_emulation(env, emulated_cpu, [google], reference.inputs)
                    (out,) = run["files"][str(google)]["outputs"]
                    steps = np.abs(out - host_out).max() / 0.00390625  # the file's output scale (1/256)
                    metrics = compare(host_out, out, real)
                    entry["google_uint8"][emulated_cpu] = {"max_output_steps": float(steps),
                                                           "vs_host": metrics.to_dict()}
                    rows.append([key, f"Google's {weights}", f"aarch64 {emulated_cpu} ({emulate.kernels_of(emulated_cpu)})",
                                 "-", "-", "-", "-", "-", "-",
                                 "bit-exact" if steps == 0 else f"max {steps:.0f} output step(s)"])
            record["models"][key] = entry
    record["load_after"] = os.getloadavg()
    slug = re.sub(r"\W+", "_", (cpu.get("model") or "unknown").lower()).strip("_") + "_" + "_".join(cpu["features"])
    findings = [f for entry in record["models"].values() for f in entry["findings"]]
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items())
    lines = [f"# int8 MobileNets on ARM kernels under emulation, against {host}", "",
             f"`.venv/bin/python benchmarks/arm_emulation.py`; qemu-user {env.stamp.get('qemu')}, arm64 Python "
             f"{env.stamp.get('python')}, {versions} (host: "
             + ", ".join(f"{k} {v}" for k, v in emulate.host_versions().items()) + "); "
             f"parity inputs of each bundle (16 ImageNet photos + 4 random); load average "
             f"{record['load_before'][0]:.1f} before, {record['load_after'][0]:.1f} after.", "",
             "Reference path: ORT with graph optimizations off (QDQ in float) for .onnx, LiteRT's reference kernels "
             "for .tflite, both computed on the host. Gates: the bundle's int8 gates (top-1 >= 60%, top-5 >= 70%, "
             "cosine mean >= 0.975, PSNR >= 32 dB). Emulated time is not latency and is not reported.", "",
             markdown_table(HEADERS, rows), "",
             "Findings: " + ("; ".join(findings) if findings else "none: ARM and x86 kernels agree within "
                             "edgekit's kernel tolerance (cosine mean >= 0.995, PSNR >= 40 dB) on every file."), ""]
    out = ROOT / "benchmarks" / "results"
    (out / f"arm_emulation_{slug}.md").write_text("\n".join(lines) + "\n")
    (out / f"arm_emulation_{slug}.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
