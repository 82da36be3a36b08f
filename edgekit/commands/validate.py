"""`edgekit validate DIR`: the CI gate. Re-runs every file of a bundle with its format's runtime alone
(ONNX Runtime and LiteRT need no PyTorch; ExecuTorch's Python runtime brings it) on the stored parity inputs
and judges it against the stored reference outputs.

Exit codes: 0 every file intact and every gate passes, 1 anything fails (altered file, failed export,
failed gate), 2 bad usage (no bundle there, unreadable manifest).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .. import emulate
from ..errors import EdgekitError
from ..fileio import check_output_file
from ..formats import FORMAT_NAMES
from ..manifest import Manifest, find_bundles, validate_bundle
from ..parity import DEFAULT_GATES
from ..report import KERNEL_HEADERS, PARITY_HEADERS, kernel_rows, parity_rows
from ..table import format_table
from .common import positive_int, write_json


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="re-check an export bundle without PyTorch (CI gate)",
                       description="Exit 0: all files intact and all parity gates pass; 1: something failed; "
                                   "2: bad usage.")
    p.add_argument("bundle", type=Path, metavar="DIR",
                   help="a bundle folder (exports/mobilenet_v2) or a folder of bundles (exports)")
    p.add_argument("--gate", action="append", default=[], metavar="PRECISION.METRIC=VALUE",
                   help="override a gate recorded in the manifest, e.g. fp32.cosine_min=0.99999 (repeatable)")
    p.add_argument("--threads", type=positive_int, help="runtime threads (default: the runtime's choice)")
    p.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON (- for stdout)")
    p.add_argument("--formats", type=formats_filter, metavar="LIST",
                   help=f"check only the files of these formats, comma-separated: {','.join(FORMAT_NAMES)} (default: every file "
                        "the manifest lists); the others' parity, absence or alteration is not held against the bundle")
    p.add_argument("--emulate", choices=("aarch64",), metavar="ARCH",
                   help="also run every file on ARM's own kernels under qemu-user (aarch64); built on first use")
    p.add_argument("--emulate-cpus", default="cortex-a72,cortex-a76,max,sme=off", metavar="LIST",
                   help="qemu CPU models, comma-separated; a comma followed by key=value belongs to the model "
                        "before it (default: cortex-a72,cortex-a76,max,sme=off: NEON, dotprod, i8mm)")
    p.set_defaults(run=run)


def formats_filter(text: str) -> tuple[str, ...]:
    """``--formats onnx,tflite``: the model formats a project ships (validate, eval and bench of a bundle)."""
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in chosen if f not in FORMAT_NAMES]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"{','.join(unknown) or repr(text)}: choose from {','.join(FORMAT_NAMES)}")
    return chosen


def only_formats(check, formats: tuple[str, ...] | None) -> None:
    """Leave out of ``check`` every file whose format was not asked for: its parity verdict and its being missing or
    altered (a path that leaves the bundle still fails: that is the manifest, not the file). A bundle holding no
    file of the chosen formats fails."""
    if not formats or check.manifest is None:
        return
    left_out = {a.path for a in check.manifest.artifacts if a.format not in formats}
    kept = [a for a in check.manifest.artifacts if a.format in formats]
    check.parity[:] = [p for p in check.parity if p.artifact not in left_out]
    check.problems[:] = [problem for problem in check.problems
                         if not any(problem.startswith((f"{path}: sha256 mismatch", f"{path} is missing"))
                                    for path in left_out)]
    for path in left_out:
        check.checked[path] = f"not checked (--formats {','.join(formats)})"
    if not kept and check.manifest.status == "complete":
        check.problems.append(f"the bundle holds no {' or '.join(formats)} file; drop --formats or export it")


def run(args) -> int:
    if args.json and args.json != "-":
        check_output_file(Path(args.json), "--json")
    if args.gate:
        DEFAULT_GATES.with_overrides(args.gate)  # a bad --gate is a usage error before any bundle is read
    bundles = find_bundles(args.bundle)
    if bundles == [args.bundle]:
        Manifest.read(args.bundle)  # one bundle asked for: an unreadable manifest is unusable input (exit 2)
    emulated = {}
    if args.emulate:  # a usage or environment problem ends the run before any bundle is checked
        cpus = emulate.parse_cpus(args.emulate_cpus)
        environment = emulate.ensure_environment()
        emulate.check_cpus(environment, cpus)
    checks = []
    for bundle in bundles:
        manifest_gates = None
        if args.gate:
            try:
                manifest_gates = (Manifest.read(bundle).gates or DEFAULT_GATES).sanitized()[0].with_overrides(args.gate)
            except EdgekitError:
                pass  # validate_bundle reports the unreadable manifest for this bundle alone
        checks.append(validate_bundle(bundle, manifest_gates, args.threads))
        only_formats(checks[-1], args.formats)

    # with --json -, stdout carries the JSON alone: the tables and verdict lines go to stderr
    human = contextlib.redirect_stdout(sys.stderr) if args.json == "-" else contextlib.nullcontext()
    with human:
        for check in checks:
            verdict = "PASS" if check.passed else "FAIL"
            print(f"{check.bundle}: {verdict}")
            for warning in check.warnings:
                print(f"  warning: {warning}")
            if check.checked:
                print("  checked: " + "; ".join(f"{name} ({how})" for name, how in check.checked.items()))
            if check.parity:
                headers = [h for h in PARITY_HEADERS if h not in ("mean abs err", "cosine mean")]
                rows = [[c for h, c in zip(PARITY_HEADERS, row) if h in headers]
                        for row in parity_rows(check.parity)]
                print(format_table(headers, rows))
                kernels = kernel_rows(check.parity)
                if kernels:
                    print("int8 on the host's kernels against the runtime's reference path (" +
                          next(p.kernels.cpu for p in check.parity if p.kernels) + "):")
                    print(format_table(KERNEL_HEADERS, kernels))
                for finding in (p.kernels.finding for p in check.parity if p.kernels and p.kernels.finding):
                    print(f"  finding: {finding}")
            for problem in check.problems:
                print(f"  problem: {problem}")
            if args.emulate and check.manifest is not None and check.manifest.status == "complete":
                chosen = ([a.path for a in check.manifest.artifacts if a.format in args.formats] if args.formats
                          else None)  # --formats holds for the emulated runs too
                emulated[check.bundle] = emulate.check_bundle(environment, check.bundle, cpus, manifest_gates,
                                                              args.threads or 1, files=chosen)
                emulate.print_check(emulated[check.bundle])
                emulate.record_in_manifest(check.bundle, emulated[check.bundle])
            print()
        failed = [c for c in checks if not c.passed or (c.bundle in emulated and not emulated[c.bundle].passed)]
        if failed:
            print(f"validate FAILED: {', '.join(str(c.bundle) for c in failed)}")
        else:
            print(f"validate passed: {len(checks)} bundle(s), "
                  f"{sum(len({p.artifact for p in c.parity}) for c in checks)} file(s) match their PyTorch reference")
    if args.json:
        write_json(args.json, [{"bundle": str(c.bundle), "passed": c.passed, "problems": c.problems,
                                "checked": c.checked, "warnings": c.warnings,
                                "parity": [p.to_dict() for p in c.parity]}
                               | ({"emulation": emulated[c.bundle].to_dict()} if c.bundle in emulated else {})
                               for c in checks])
    return 1 if failed else 0
