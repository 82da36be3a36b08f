"""`edgekit export NAME`: ONNX and TFLite files with parity proven, as one bundle folder.

Exit codes: 0 every parity gate passes, 1 a gate failed, 2 bad usage or input, 3 a conversion step failed
(the bundle's manifest records which).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EdgekitError
from .common import add_model_arguments, positive_int


def _formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip().lower() for f in text.split(",") if f.strip())


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX and TFLite with parity proven, as a bundle folder",
                       description="Writes DIR/<variant>/ with the model files, labels.txt, reference.npz, "
                                   "manifest.json and report.md. Exit 0: all parity gates pass; 1: a gate "
                                   "failed; 2: bad usage or input; 3: a conversion step failed.")
    add_model_arguments(p)
    p.add_argument("--formats", type=_formats, default=("onnx", "tflite"), metavar="LIST",
                   help="comma-separated: onnx,tflite (default both)")
    p.add_argument("--fp16", action="store_true", help="also write <variant>_fp16.tflite (float16 weights)")
    p.add_argument("--out", type=Path, default=Path("exports"), metavar="DIR",
                   help="bundles go to DIR/<variant>/ (default exports)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line (default: ImageNet "
                                                                 "names for 1000 classes)")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true", help="also write <variant>_int8.onnx and _int8.tflite")
    q.add_argument("--calib", type=Path, metavar="DIR",
                   help="calibration pictures (recursive; jpg, png, bmp); default: edgekit's built-in photos")
    # None defaults: so that an int8 option given without --int8 is told apart from the default and refused
    q.add_argument("--calib-samples", type=positive_int, default=None, metavar="N",
                   help="calibration pictures to use (default 128)")
    q.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default=None,
                   help="ONNX calibration (default minmax)")
    q.add_argument("--io-dtype", choices=("int8", "uint8", "float32"), default=None,
                   help="input/output type of the int8 .tflite (default int8)")
    g = p.add_argument_group("parity")
    g.add_argument("--data", type=Path, metavar="DIR|CSV",
                   help="parity pictures: a folder or a labelled CSV (default: --calib, else built-in photos)")
    g.add_argument("--parity-samples", type=int, default=16, metavar="N",
                   help="real pictures in the parity set (default 16)")
    g.add_argument("--parity-random", type=int, default=4, metavar="N",
                   help="seeded random pictures added to the parity set (default 4)")
    g.add_argument("--gate", action="append", default=[], metavar="PRECISION.METRIC=VALUE",
                   help="override a parity gate, e.g. fp32.cosine_min=0.99999 or int8.top1_agreement=off "
                        "(repeatable)")
    p.add_argument("--latency-runs", type=int, default=25, metavar="N",
                   help="timed runs of each file on this machine (1 thread, a fresh process each, after 3 "
                        "warm-up runs) for the report's latency table and int8/fp32 ratio; 0 skips (default 25)")
    q.add_argument("--layer-samples", type=int, default=8, metavar="N",
                   help="real pictures for the per-layer int8 error in the report (default 8); 0 skips it")
    o = p.add_argument_group("ONNX")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    o.add_argument("--onnx-exporter", choices=("legacy", "dynamo"), default="legacy",
                   help="torch.onnx exporter (default legacy: same graph and parity, ~3x faster here)")
    o.add_argument("--static-batch", action="store_true", help="fix the ONNX batch size at 1")
    p.set_defaults(run=run)


def spec_from_args(args):
    from ..parity import DEFAULT_GATES
    from ..pipeline import ExportSpec

    if not args.int8:
        given = [flag for flag, value in (("--calib", args.calib), ("--calib-samples", args.calib_samples),
                                          ("--calib-method", args.calib_method), ("--io-dtype", args.io_dtype))
                 if value is not None]
        if given:
            raise EdgekitError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to int8 files; add "
                               "--int8, or drop it")
    return ExportSpec(
        name=args.name, weights=args.weights, width=args.width, resolution=args.resolution,
        num_classes=args.num_classes, keep_background=args.keep_background, formats=args.formats,
        fp16=args.fp16, int8=args.int8, calib=args.calib, calib_samples=args.calib_samples or 128,
        calib_method=args.calib_method or "minmax", io_dtype=args.io_dtype or "int8", data=args.data,
        parity_samples=args.parity_samples, parity_random=args.parity_random, latency_runs=args.latency_runs,
        layer_samples=args.layer_samples,
        out=args.out, labels=args.labels,
        gates=DEFAULT_GATES.with_overrides(args.gate), opset=args.opset, onnx_exporter=args.onnx_exporter,
        dynamic_batch=not args.static_batch)


def run(args) -> int:
    from ..pipeline import run_export
    from ..report import summary_table

    spec = spec_from_args(args)
    manifest = run_export(spec)
    bundle = manifest.published or Path(spec.out) / manifest.variant
    print(summary_table(manifest))
    print()
    for warning in manifest.warnings:
        if warning not in manifest.shown:  # the others were printed while the export ran
            print(f"warning: {warning}")
    failed = [p for p in manifest.parity if not p.passed]
    if failed:
        print(f"parity FAILED for {', '.join(p.artifact for p in failed)}: see {bundle / 'report.md'}")
        if bundle != Path(spec.out) / manifest.variant:
            print(f"the previous bundle {Path(spec.out) / manifest.variant} is unchanged; this attempt is in {bundle}")
        print(f"next: fix the export, or loosen a gate knowingly with --gate; re-check with `edgekit validate {bundle}`")
        return 1
    print(f"bundle: {bundle}  (manifest.json, report.md)")
    print(f"next: edgekit validate {bundle}   then   edgekit bench {bundle}")
    return 0
