"""Damaged bundles at scale: the seeded mutator of tests/fuzzing.py, every case in a fresh process.

Exports MobileNet v1 0.25/128 (Google's weights, fp32 and int8), then runs N damaged copies through validate,
eval and bench, each as `python -m edgekit.cli ...` with a timeout, and tallies exit codes, tracebacks, crashes
(a negative exit code: a runtime killed by a signal) and hangs. Goal: no traceback, no crash, no hang, and no
exit 0 on a model file that differs from what its manifest recorded.

    .venv/bin/python benchmarks/fuzz_bundles.py [--cases 1000] [--data ../shared/data]

Writes benchmarks/results/fuzz_bundles.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from edgekit.cpu import describe, host_cpu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fuzzing import argv, cases, damage  # noqa: E402  (the one mutator, shared with the tests)

VARIANT = "mobilenet_v1_w0.25_r128"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-fuzz-") as work:
        work = Path(work)
        subprocess.run([sys.executable, "-m", "edgekit.cli", "export", "mobilenet_v1", "--weights",
                        str(args.data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"), "--int8", "--calib",
                        str(args.data / "photos"), "--latency-runs", "0", "--layer-samples", "0", "--out",
                        str(work / "exports")], check=True, capture_output=True)
        bundle = work / "exports" / VARIANT
        targets = sorted(p.name for p in bundle.iterdir() if p.name != "report.md")
        tally: Counter = Counter()
        findings = []
        started = time.perf_counter()
        for i, case in enumerate(cases(args.cases, targets, seed=7)):
            copy = damage(bundle, case, work / "cases" / case.id)
            try:
                done = subprocess.run([sys.executable, "-m", "edgekit.cli", *argv(case, copy,
                                       args.data / "imagenet-samples" / "labels.csv")],
                                      capture_output=True, text=True, timeout=args.timeout)
                outcome = ("traceback" if "Traceback" in done.stderr else
                           "crash" if done.returncode < 0 else f"exit {done.returncode}")
                if outcome == "exit 0" and case.target != "manifest.json" and not case.consistent:
                    outcome = "FALSE PASS"
            except subprocess.TimeoutExpired:
                outcome = "hang"
            tally[(case.command, outcome)] += 1
            if outcome in ("traceback", "crash", "hang", "FALSE PASS"):
                findings.append({"case": case.id, "outcome": outcome})
            print(f"\r{i + 1}/{args.cases} cases, {len(findings)} findings", end="", file=sys.stderr)
            subprocess.run(["rm", "-rf", str(copy)], check=False)
        print(file=sys.stderr)
    from edgekit.table import markdown_table

    rows = [[command, outcome, count] for (command, outcome), count in sorted(tally.items())]
    lines = [f"# Damaged bundles into validate, eval and bench ({args.cases} cases)", "",
             f"`.venv/bin/python benchmarks/fuzz_bundles.py --cases {args.cases}` on {describe(host_cpu())}; "
             f"{time.perf_counter() - started:.0f} s.", "", markdown_table(["command", "outcome", "cases"], rows), "",
             f"Findings (traceback, crash, hang, false pass): {len(findings)}", ""]
    lines += [f"- {f['case']}: {f['outcome']}" for f in findings]
    out = ROOT / "benchmarks" / "results"
    (out / "fuzz_bundles.md").write_text("\n".join(lines) + "\n")
    (out / "fuzz_bundles.json").write_text(json.dumps({"cpu": host_cpu(), "cases": args.cases, "tally": [
        {"command": c, "outcome": o, "cases": n} for (c, o), n in sorted(tally.items())], "findings": findings},
        indent=2) + "\n")
    print("\n".join(lines))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
