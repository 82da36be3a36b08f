"""`edgekit export NAME`: ONNX and TFLite files (and ExecuTorch .pte with --formats) with parity proven, as one
bundle folder.

Exit codes: 0 every parity gate passes, 1 a gate failed, 2 bad usage or input, 3 a conversion step failed
(the bundle's manifest records which).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..errors import EdgekitError
from ..export_spec import CALIBRATION_MINIMUM, ExportSpec
from ..formats import (CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD, DEFAULT_FORMATS, DEFAULT_IO_DTYPE,
                       DEFAULT_ONNX_EXPORTER, FORMATS, IO_DTYPES, ONNX_EXPORTERS, parse_formats)
from ..images import find_images
from ..parity import DEFAULT_GATES, TASKS
from ..pipeline import run_export
from ..report import summary_table
from .common import add_model_arguments, add_preprocessing_arguments, positive_int, preprocessing_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX and TFLite with parity proven, as a bundle folder",
                       description="Writes DIR/<variant>/ with the model files, labels.txt, reference.npz, "
                                   "manifest.json and report.md. Exit 0: all parity gates pass; 1: a gate "
                                   "failed; 2: bad usage or input; 3: a conversion step failed.")
    add_model_arguments(p, metavar="MODEL", name_help="a registered model name (see `edgekit models`), or a model "
                        "of your own: FILE.py:NAME or package.module:NAME, an nn.Module or a function returning one "
                        "(with --input-shape and --preprocessing)")
    c = p.add_argument_group("your own model (MODEL is FILE.py:NAME or package.module:NAME)")
    c.add_argument("--input-shape", metavar="N,C,H,W", action="append",
                   help="the image input it takes, e.g. 1,3,224,224 (C: 3 RGB or 1 greyscale; H = W); a model of "
                        "several inputs: once per forward() argument, in order")
    c.add_argument("--task", type=parse_tasks, metavar="|".join(TASKS),
                   help="what its output is, for parity: class scores, per-pixel masks [N,K,H,W] or an embedding "
                        "(default: 4-D output dense, else classifier); several outputs: one per output, "
                        "comma-separated")
    add_preprocessing_arguments(p, "what the weights record (a model of your own must declare it)")
    p.add_argument("--formats", type=parse_formats, default=DEFAULT_FORMATS, metavar="LIST",
                   help=f"comma-separated: {','.join(FORMATS)} (default {','.join(DEFAULT_FORMATS)}; pte needs "
                        f"`{FORMATS['pte'].install}`)")
    p.add_argument("--fp16", action="store_true", help="also write <variant>_fp16.tflite (float16 weights)")
    p.add_argument("--out", type=Path, default=Path("exports"), metavar="DIR",
                   help="bundles go to DIR/<variant>/ (default exports)")
    p.add_argument("--author", help="who made the model, for the files' metadata (TFLite ModelMetadata, ONNX props)")
    p.add_argument("--license", help="the model's licence, for the files' metadata (default: the published "
                                     "weights' licence, e.g. Apache-2.0 for Google's .tflite files)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line (default: ImageNet "
                                                                 "names for 1000 classes)")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true", help="also write <variant>_int8 files of each format")
    q.add_argument("--calib", type=Path, metavar="DIR",
                   help="calibration pictures (recursive; jpg, png, bmp); default: edgekit's built-in photos")
    # None defaults: so that an int8 option given without --int8 is told apart from the default and refused
    q.add_argument("--calib-samples", type=positive_int, default=None, metavar="N",
                   help="calibration pictures to use (default 128)")
    q.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=None,
                   help=f"ONNX calibration (default {DEFAULT_CALIBRATION_METHOD})")
    q.add_argument("--io-dtype", choices=IO_DTYPES, default=None,
                   help=f"input/output type of the int8 .tflite (default {DEFAULT_IO_DTYPE})")
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
    o.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default=DEFAULT_ONNX_EXPORTER,
                   help="torch.onnx exporter (default legacy: same graph and parity, ~3x faster here)")
    o.add_argument("--static-batch", action="store_true", help="fix the ONNX batch size at 1")
    p.set_defaults(run=run)


def spec_from_args(args):
    if not args.int8:
        given = [flag for flag, value in (("--calib", args.calib), ("--calib-samples", args.calib_samples),
                                          ("--calib-method", args.calib_method), ("--io-dtype", args.io_dtype))
                 if value is not None]
        if given:
            raise EdgekitError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to int8 files; add "
                               "--int8, or drop it")
    if is_own_model(args.name):
        zoo_only = [flag for flag, value in (("--width", args.width), ("--resolution", args.resolution),
                                             ("--num-classes", args.num_classes),
                                             ("--weights", None if args.weights == "default" else args.weights),
                                             ("--keep-background", args.keep_background)) if value]
        if zoo_only:
            raise EdgekitError(f"{', '.join(zoo_only)} apply to zoo models; a model of your own is exported as its "
                               "module builds it, at --input-shape")
        if not args.input_shape:
            raise EdgekitError(f"{args.name} is a model of your own: give the input it takes with --input-shape "
                               "N,C,H,W, e.g. 1,3,224,224")
    elif args.input_shape or args.task:
        raise EdgekitError(f"--input-shape and --task apply to a model of your own (FILE.py:NAME); {args.name} is a "
                           "zoo model: use --resolution")
    return ExportSpec(
        name=args.name, weights=args.weights, width=args.width, resolution=args.resolution,
        num_classes=args.num_classes, keep_background=args.keep_background, formats=args.formats,
        fp16=args.fp16, int8=args.int8, calib=args.calib, calib_samples=args.calib_samples or 128,
        calib_method=args.calib_method or DEFAULT_CALIBRATION_METHOD, io_dtype=args.io_dtype or DEFAULT_IO_DTYPE,
        data=args.data,
        parity_samples=args.parity_samples, parity_random=args.parity_random, latency_runs=args.latency_runs,
        layer_samples=args.layer_samples,
        out=args.out, labels=args.labels,
        gates=DEFAULT_GATES.with_overrides(args.gate), opset=args.opset, onnx_exporter=args.onnx_exporter,
        dynamic_batch=not args.static_batch, preprocessing=preprocessing_from_args(args), author=args.author,
        license=args.license)


def parse_tasks(text: str) -> str:
    """``--task classifier`` or, for a model of several outputs, ``--task classifier,embedding`` (one per output)."""
    unknown = [t for t in text.split(",") if t.strip() not in TASKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown task {unknown[0]!r}: choose from {', '.join(TASKS)} (one per "
                                         "output, comma-separated)")
    return ",".join(t.strip() for t in text.split(","))


def is_own_model(name: str) -> bool:
    """FILE.py:NAME or package.module:NAME (a zoo name never holds a colon)."""
    return ":" in name


def run(args) -> int:
    spec = spec_from_args(args)
    model = None
    if is_own_model(args.name):
        # edgekit.models defines torch modules; the export imports torch anyway, but not at `edgekit --help`
        from ..models.custom import load_target, parse_input_shapes, prepare_custom

        shape = parse_input_shapes(args.input_shape)
        model = prepare_custom(load_target(args.name), shape, spec.preprocessing, source=args.name, task=args.task)
    manifest = run_export(spec, model=model)
    bundle = manifest.published or Path(spec.out) / manifest.variant
    print(summary_table(manifest))
    print()
    for warning in manifest.warnings:
        if warning not in manifest.shown:  # the others were printed while the export ran
            print(f"warning: {warning}")
    failed = [p for p in manifest.parity if not p.passed]
    if failed:
        print(f"parity FAILED for {', '.join(p.label for p in failed)}: see {bundle / 'report.md'}")
        if bundle != Path(spec.out) / manifest.variant:
            print(f"the previous bundle {Path(spec.out) / manifest.variant} is unchanged; this attempt is in {bundle}")
        advice = failure_advice(manifest, args, bundle)
        if advice:
            print("likely causes, and the command that would fix each:")
            for cause, command in advice:
                print(f"  - {cause}\n      {command}")
        print(f"next: fix the export, or loosen a gate knowingly with --gate; re-check with `edgekit validate {bundle}`")
        return 1
    print(f"bundle: {bundle}  (manifest.json, report.md)")
    print(f"next: edgekit validate {bundle}   then   edgekit bench {bundle}")
    return 0


def export_command(args, **changes) -> str:
    """The `edgekit export` command line of ``args`` with ``changes`` (option name -> value; None drops it), so
    that advice names a command the user can paste."""
    options = {"weights": None if args.weights == "default" else args.weights, "width": args.width,
               "resolution": args.resolution, "num-classes": args.num_classes,
               "keep-background": args.keep_background,
               "formats": None if set(args.formats) == set(DEFAULT_FORMATS) else ",".join(args.formats),
               "fp16": args.fp16, "int8": args.int8, "calib": args.calib, "calib-samples": args.calib_samples,
               "calib-method": args.calib_method, "io-dtype": args.io_dtype, "data": args.data,
               "task": args.task, "preprocessing": args.preprocessing,
               "mean": [f"{v:g}" for v in args.mean] if args.mean else None,
               "std": [f"{v:g}" for v in args.std] if args.std else None,
               "out": None if Path(args.out) == Path("exports") else args.out} | changes
    words = ["edgekit", "export", args.name]
    for name, value in options.items():
        if value is True:
            words.append(f"--{name}")
        elif value not in (None, False):
            words += [f"--{name}", *(value if isinstance(value, list) else [str(value)])]
    for shape in args.input_shape or ():  # once per input
        words += ["--input-shape", shape]
    for gate in args.gate:
        words += ["--gate", gate]
    return shlex.join(words)


def failure_advice(manifest, args, bundle: Path) -> list[tuple[str, str]]:
    """The likely causes of failed parity gates that the manifest shows, each with the command that would fix it:
    the host's int8 kernels (``kernels.finding``), too few calibration pictures, a format the project may not
    ship."""
    failed = [p for p in manifest.parity if not p.passed]
    advice: list[tuple[str, str]] = []
    for p in failed:
        if p.kernels is not None and p.kernels.finding:
            reference = p.gates.failures(p.kernels.quantization)
            verdict = ("on the reference path it passes every gate, so the error is this CPU's, not the file's"
                       if not reference else f"on the reference path it still fails ({'; '.join(reference)})")
            advice.append((f"{p.artifact}: host-kernel error: {p.kernels.finding}; {verdict}. Check the file on "
                           "ARM's own kernels (or run validate on the target machine)",
                           f"edgekit validate {shlex_quote(bundle)} --emulate aarch64"))
    used = (manifest.options.get("calibration") or {}).get("used") or {}
    failed_int8 = [p.artifact for p in failed if p.precision == "int8"]
    samples = used.get("samples")
    if failed_int8 and isinstance(samples, int) and samples < CALIBRATION_MINIMUM:
        where = "edgekit's built-in photos" if used.get("builtin") else used.get("source", "--calib")
        in_folder = len(find_images(args.calib)) if args.calib is not None and Path(args.calib).is_dir() else 0
        if in_folder >= CALIBRATION_MINIMUM:
            fix = export_command(args, **{"calib-samples": max(CALIBRATION_MINIMUM, 128)})
            more = f"{args.calib} holds {in_folder}: use more of them"
        else:
            fix = export_command(args, calib=f"FOLDER_OF_{CALIBRATION_MINIMUM}_OR_MORE_PICTURES/",
                                 **{"calib-samples": None})
            more = (f"calibrate on at least {CALIBRATION_MINIMUM} pictures like the ones the app will see (a few per "
                    "class the model must tell apart)")
        advice.append((f"{', '.join(failed_int8)}: calibrated on {samples} pictures ({where}), fewer than the sound "
                       f"minimum of {CALIBRATION_MINIMUM}: {more}", fix))
    formats = {a.format for a in manifest.artifacts}
    failing = {a.format for a in manifest.artifacts if a.path in {p.artifact for p in failed}}
    passing = sorted(formats - failing)
    if failing and passing:
        ship = ",".join(passing)
        advice.append((f"only the {'/'.join(sorted(failing))} files fail; if the app ships only {ship} files, "
                       f"export and check just those (then `edgekit validate {shlex_quote(bundle)} --formats {ship}` "
                       "in CI)", export_command(args, formats=ship)))
    return advice


def shlex_quote(path) -> str:
    return shlex.quote(str(path))
