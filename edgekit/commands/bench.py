"""`edgekit bench TARGET`: latency of exported files where they run (this machine, SSH boards, Android phones)."""

from __future__ import annotations

import argparse
import datetime
import shlex
from pathlib import Path

import sys

from ..console import info, warn
from ..cpu import describe
from ..devices.artifacts import load_target
from ..devices.base import BenchSettings
from ..devices.chart import write_latency_chart
from ..devices.profiles import default_profiles_path, load_profiles, select_devices
from ..devices.session import run_benchmarks
from ..errors import EdgekitError, GateFailure
from ..fileio import check_output_file
from ..formats import FORMAT_NAMES, FORMATS, suffix_list
from ..table import format_ms as _ms
from ..table import format_table, human_bytes
from .common import positive_int, write_json
from .validate import formats_filter

HEADERS = ["artifact", "precision", "device", "runtime", "threads", "load ms", "first ms", "mean", "std", "min",
           "p50", "p90", "p99", "max", "inf/s", "peak RSS MB", "size"]
# The default table: what decides a choice, in TABLE_WIDTH columns (--wide shows HEADERS; --json keeps everything)
COMPACT = {"artifact": "artifact", "precision": "precision", "device": "device", "runtime": "runtime",
           "threads": "thr", "p50": "p50 ms", "p90": "p90", "p99": "p99", "peak RSS MB": "RSS MB"}
TABLE_WIDTH = 100


def _thread_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(positive_int(t.strip()) for t in text.split(",") if t.strip()))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"--threads takes counts like 1,2,4 ({e})") from None
    if not values:
        raise argparse.ArgumentTypeError("--threads takes counts like 1,2,4")
    return values


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="latency on this machine, SSH boards and Android phones",
        description=f"Time every artifact of a bundle (or one {suffix_list('/')} file) on one or more devices: load "
                    "time, first inference, mean/std/min/p50/p90/p99/max, inferences per second, peak memory. "
                    "Prints a table; --json and a PNG chart for the record.")
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help=f"bundle folder from `edgekit export` (or a folder of them), or a {suffix_list('/')} file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--device", metavar="NAME[,NAME...]", help="device profile name(s) (default: local)")
    where.add_argument("--all", dest="all_devices", action="store_true", help="every device in the profile file")
    p.add_argument("--devices", metavar="FILE", type=Path,
                   help=f"device profiles (TOML); default {default_profiles_path()}")
    p.add_argument("--list-devices", action="store_true", help="show the known devices and exit")
    p.add_argument("--threads", type=_thread_list, metavar="N[,N...]",
                   help="thread counts (default: the device profile's, else 1 and all cores)")
    p.add_argument("--runs", type=positive_int, default=100, help="timed inferences per measurement (default 100)")
    p.add_argument("--warmup", type=_non_negative_int, default=10, help="untimed inferences first (default 10)")
    p.add_argument("--runtime", choices=tuple(f.runtime for f in FORMATS.values()),
                   help="only the files this runtime reads")
    p.add_argument("--formats", type=formats_filter, metavar="LIST",
                   help=f"only the files of these formats, comma-separated: {','.join(FORMAT_NAMES)} ("
                        + ", ".join(f"{f.name} = --runtime {f.runtime}" for f in FORMATS.values()) + ")")
    p.add_argument("--wide", action="store_true",
                   help=f"every column in the table (load, first, mean, std, min, max, inf/s, size); by default it "
                        f"fits {TABLE_WIDTH} columns")
    p.add_argument("--json", metavar="FILE", help="write all results (with every sample) as JSON; - for stdout")
    p.add_argument("--chart", metavar="FILE", type=Path,
                   help="PNG of the latency distributions (default: beside --json, or latency.png in a bundle)")
    p.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    p.set_defaults(run=run)


def results_table(results, wide: bool = False, width: int = TABLE_WIDTH) -> str:
    """Every figure with ``wide``; otherwise the COMPACT columns, artifact names shortened in the middle where the
    table would be wider than ``width`` characters."""
    rows = _rows(results)
    if wide:
        return format_table(HEADERS, rows)
    keep = [HEADERS.index(h) for h in COMPACT]
    rows = [[row[i] for i in keep] for row in rows]
    for row, r in zip(rows, results):
        if not r.ok and "FAILED" not in row:
            row[list(COMPACT).index("p50")] = "FAILED"  # the reason is listed under the table
    table = format_table(list(COMPACT.values()), rows)
    over = max(len(line) for line in table.splitlines()) - width
    if over > 0:
        longest = max(len(row[0]) for row in rows)
        room = max(12, longest - over)
        rows = [[_shorten(row[0], room)] + row[1:] for row in rows]
        table = format_table(list(COMPACT.values()), rows)
    return table


def _shorten(name: str, room: int) -> str:
    """``mobilenet_v2_w0.5_r160_int8.tflite`` -> ``mobilenet_v2_…r160_int8.tflite``: the start and the end (the
    precision and the format) survive."""
    if len(name) <= room:
        return name
    tail = min(len(name) - 1, (room - 1) * 3 // 5)
    return name[:room - 1 - tail] + "…" + name[len(name) - tail:]


def _rows(results) -> list[list[str]]:
    rows = []
    for r in results:
        ips = r.inferences_per_s
        runtime = r.runtime_label or ("FAILED" if r.error else "-")
        rows.append([r.artifact, r.precision, r.device, runtime, r.threads, _ms(r.load_ms), _ms(r.first_ms),
                     _ms(r.mean_ms), _ms(r.std_ms), _ms(r.min_ms), _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.p99_ms),
                     _ms(r.max_ms), "-" if ips is None else f"{ips:.1f}",
                     "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.1f}", human_bytes(r.model_bytes)])
    return rows


def _machines(results) -> list[str]:
    lines = {}
    for r in results:
        m = r.machine
        if r.ok and m and r.device not in lines:
            cpu = describe(m["cpu"]) if m.get("cpu") else m.get("machine")
            lines[r.device] = (f"  {r.device}: {cpu}, {m.get('cpu_count')} cores, "
                               f"{m.get('system')} {m.get('release')}, Python {m.get('python')}")
    return list(lines.values())


def _command_line(args) -> str:
    words = ["edgekit", "bench", str(args.target)]
    if args.all_devices:
        words.append("--all")
    elif args.device:
        words += ["--device", args.device]
    if args.devices:
        words += ["--devices", str(args.devices)]
    if args.threads:
        words += ["--threads", ",".join(map(str, args.threads))]
    words += ["--runs", str(args.runs), "--warmup", str(args.warmup)]
    if args.runtime:
        words += ["--runtime", args.runtime]
    if args.formats:
        words += ["--formats", ",".join(args.formats)]
    if args.json:
        words += ["--json", args.json]
    if args.chart:
        words += ["--chart", str(args.chart)]
    return shlex.join(words)


def _chart_path(args) -> Path | None:
    if args.no_chart:
        return None
    if args.chart:
        return args.chart
    if args.json and args.json != "-":
        return Path(args.json).with_suffix(".png")
    if Path(args.target).is_dir():
        return Path(args.target) / "latency.png"
    return None


def _runtime_filter(args) -> str | None:
    """--runtime, or the one runtime --formats names; both given must agree."""
    chosen = {FORMATS[f].runtime for f in args.formats} if args.formats else set()
    if args.runtime and chosen and chosen != {args.runtime}:
        raise EdgekitError(f"--runtime {args.runtime} and --formats {','.join(args.formats)} disagree; give one")
    return args.runtime or (chosen.pop() if len(chosen) == 1 else None)


def _list_devices(profiles, source) -> int:
    print(f"device profiles: {source or 'none (built-in local only)'}")
    print(format_table(["name", "kind", "where", "threads", "runtime"],
                       [[p.name, p.kind, p.describe(), ",".join(map(str, p.threads)) if p.threads else "1,all cores",
                         p.runtime or "any"] for p in profiles.values()]))
    return 0


def run(args) -> int:
    profiles, source = load_profiles(args.devices)
    if args.list_devices:
        return _list_devices(profiles, source)
    if not args.target:
        raise EdgekitError(f"give a TARGET: a bundle folder from edgekit export or a {suffix_list('/')} file")
    names = [n.strip() for n in args.device.split(",") if n.strip()] if args.device else None
    devices = select_devices(profiles, names, args.all_devices, source)
    files = load_target(args.target, _runtime_filter(args))
    chart = _chart_path(args)
    for out, option in ([(Path(args.json), "--json")] if args.json and args.json != "-" else []) + \
            ([(chart, "--chart")] if chart else []):
        check_output_file(out, option)  # fail before minutes of measuring, not after

    settings = BenchSettings(runs=args.runs, warmup=args.warmup, threads=args.threads)
    info(f"[edgekit] bench: {len(files)} file{'s' * (len(files) != 1)} on {', '.join(d.name for d in devices)}; "
         f"{settings.runs} runs after {settings.warmup} warm-up, threads "
         f"{','.join(map(str, settings.threads)) if settings.threads else 'per device'}")

    def report(r) -> None:
        figures = f"p50 {_ms(r.p50_ms or r.mean_ms)} ms" if r.ok else f"FAILED: {r.error}"
        info(f"  {r.device}  {r.artifact}  {r.threads} thr  {figures}")

    results = run_benchmarks(files, devices, settings, report)
    table_out = sys.stderr if args.json == "-" else sys.stdout
    print(results_table(results, wide=args.wide), file=table_out)
    machines = _machines(results)
    if machines:
        print("\n".join(["", "where:"] + machines), file=table_out)
    failed = [r for r in results if not r.ok]
    if failed:
        print("\nerrors:", file=table_out)
        for message in dict.fromkeys(f"  {r.device}: {r.error}" for r in failed):
            print(message, file=table_out)
    if any(r.runtime == "tflite_runtime" for r in results):
        warn("tflite_runtime (2.14, the last release) can be many times slower than ai-edge-litert on int8 "
             "models; pip install ai-edge-litert on that device for current figures")

    if args.json:
        write_json(args.json, {
            "command": _command_line(args),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "target": str(args.target),
            "settings": {"runs": settings.runs, "warmup": settings.warmup,
                         "threads": list(settings.threads) if settings.threads else None},
            "devices": {d.name: {"kind": d.kind, "where": d.describe()} for d in devices},
            "results": [r.to_dict() for r in results],
        })
    if chart:
        title = f"edgekit bench {Path(args.target).name}  ({settings.runs} runs after {settings.warmup} warm-up)"
        if write_latency_chart(results, chart, title):
            info(f"[edgekit] chart: {chart}")
    elif not args.no_chart:
        info("[edgekit] add --chart FILE.png (or --json FILE) for a chart of the latency distributions")
    if failed:
        raise GateFailure(f"{len(failed)} of {len(results)} measurements failed (see the errors above)")
    return 0
