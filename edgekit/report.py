"""``report.md`` for people and the final terminal table, rendered from the manifest, so what a person reads is
what a program reads; the app snippets are generated from the files themselves (``snippets``)."""

from __future__ import annotations

import math
from pathlib import Path

from .cpu import describe
from .formats import FORMATS
from .layerwise import LAYER_HEADERS, LayerReport, layer_rows, summary
from .manifest import Artifact, Manifest
from .parity import KERNEL_TOLERANCE, GateTable, OutputTask, ParityResult, task_section
from .snippets import app_section
from .table import format_ms, format_table, human_bytes, markdown_table

# Where the int8 gates come from, for the report (the measurements are in the README's "Real int8" section).
INT8_GATES_SOURCE = ("the int8 gates are set from measurements: Google's four ImageNet MobileNets, imported and "
                     "quantized by edgekit, score cosine mean 0.983-0.995, PSNR 34.3-39.5 dB, top-1 agreement "
                     "75-83% and top-5 77-88% on the default parity inputs (12 built-in photos + 4 random), and "
                     "cosine mean 0.991-0.997, PSNR 36.5-40.7 dB on 200 ImageNet images; a visibly worse file "
                     "(entropy-calibrated MobileNet v2, 3 points of top-1 lost) scored 0.94 and 30.6 dB.")
LAYERS_IN_REPORT = 5


def _parity_cell(result: ParityResult | None) -> str:
    if result is None:
        return "-"
    if result.kernels and not result.kernels.agrees:
        return f"{result.verdict}; host kernels DISAGREE"
    return result.verdict


def _parity_by_artifact(manifest: Manifest) -> dict[str, ParityResult]:
    # a model of several outputs has a row per output: the file's cell shows a failing one if any fails
    return {p.artifact: p for p in sorted(manifest.parity, key=lambda p: p.passed, reverse=True)}


def _several_io_rows(model: dict) -> list[list[str]]:
    """The Model table's rows for a model of several inputs or outputs: each input and each output's task."""
    inputs, outputs = model.get("inputs") or [], model.get("outputs") or []
    if len(inputs) <= 1 and len(outputs) <= 1:
        return []
    shape = "x".join(str(d) for d in inputs[0]["shape"]) if inputs else "?"
    return [["inputs", f"{', '.join(i['name'] for i in inputs)}: {shape} NCHW pictures each, in forward()'s order "
                       "(for parity, input K of a sample is a different picture than input 0)"],
            ["outputs", "; ".join(f"{o['name']} {o['shape']} {OutputTask.from_dict(o.get('task')).kind}"
                                  for o in outputs)]] + (
        [["labels.txt names", f"output {model['labelled_output']}"]] if model.get("labelled_output") else [])


def _gates_lines(gates: GateTable, kind: str, results: list[ParityResult]) -> list[str]:
    """The gates of each precision among ``results``, in the words of the output's ``kind``."""
    return ["Gates: " + "; ".join(f"{precision}: {gates.for_precision(precision).describe(kind)}"
                                  for precision in sorted({r.precision for r in results})), ""]


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def _tensor(specs) -> str:
    parts = []
    for t in specs:
        quant = f", scale {t.scale:.6g}, zero point {t.zero_point}" if t.scale is not None else ""
        parts.append(f"`{t.name}` {t.dtype} [{', '.join(str(s) for s in t.shape)}] {t.layout}{quant}")
    return "; ".join(parts)


def _ratio(comparison: dict | None) -> str:
    if comparison is None:
        return ""
    ratio = comparison["ratio_p50"]
    return f"{ratio:.2f}x SLOWER" if _slower(comparison) else f"{ratio:.2f}x"


def _slower(comparison: dict) -> bool:
    """Slower where int8 should be faster: a CPU with 8-bit dot products, or one that was not recorded."""
    return comparison["ratio_p50"] > 1.0 and comparison.get("int8_dot_product") is not False


def summary_table(manifest: Manifest) -> str:
    """The table `edgekit export` ends with: artifact, size, parity, host latency (p50, int8/fp32), time."""
    parity = _parity_by_artifact(manifest)
    measured = {r["artifact"]: r for r in manifest.latency.get("results", [])}
    ratios = {c["int8"]: c for c in manifest.latency.get("int8_vs_fp32", [])}
    headers = ["artifact", "precision", "size", "parity"] + (["p50 ms", "int8/fp32"] if measured else []) + ["time"]
    rows = []
    for a in manifest.artifacts:
        row = [a.path, a.precision, human_bytes(a.bytes), _parity_cell(parity.get(a.path))]
        if measured:
            row += [format_ms(measured.get(a.path, {}).get("p50_ms")), _ratio(ratios.get(a.path))]
        rows.append(row + [_seconds(a.seconds)])
    return format_table(headers, rows)


def _f(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def _psnr(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"  # NaN: no real picture to count on


def parity_rows(results: list[ParityResult]) -> list[list[str]]:
    return [[p.label, p.precision, _f(p.metrics.max_abs_error), _f(p.metrics.mean_abs_error),
             f"{p.metrics.cosine_min:.6f}", f"{p.metrics.cosine_mean:.6f}", _psnr(p.metrics.psnr_db),
             _share(p.metrics.top1_agreement), _share(p.metrics.top5_agreement), p.verdict]
            for p in results]


PARITY_HEADERS = ["artifact", "precision", "max abs err", "mean abs err", "cosine min", "cosine mean", "PSNR dB",
                  "top-1 agreement", "top-5 agreement", "verdict"]


def latency_section(manifest: Manifest) -> list[str]:
    """Host latency per file and the int8/fp32 ratio per format, from the manifest's ``latency`` entry."""
    latency = manifest.latency
    if not latency:
        return []
    lines = ["## Latency on the exporting host", ""]
    if not latency.get("results"):
        return lines + [f"Not measured: {latency.get('error', 'no result')}.", ""]
    machine = latency.get("machine") or {}
    cpu = describe(machine["cpu"]) if machine.get("cpu") else machine.get("machine")
    where = f"{cpu}, {machine.get('cpu_count')} cores, {machine.get('system')}" if machine else "the exporting host"
    threads = latency["threads"]
    lines += [f"Each file timed where it was exported ({where}): {threads} thread{'s' * (threads != 1)}, "
              f"{latency['runs']} runs after {latency['warmup']} warm-up, random inputs, in a fresh process that "
              "imports only its runtime (`edgekit bench`'s local device). Other work on the machine moves the "
              "milliseconds; the int8/fp32 ratio is the figure to read. `edgekit bench` measures more threads, "
              "runs and devices.", ""]
    ratios = {c["int8"]: c for c in latency.get("int8_vs_fp32", [])}
    rows = [[f"`{r['artifact']}`", r["precision"], r.get("runtime") or "-", format_ms(r.get("p50_ms")),
             format_ms(r.get("p90_ms")), _ratio(ratios.get(r["artifact"])) or "-"]
            for r in latency["results"]]
    lines += [markdown_table(["file", "precision", "runtime", "p50 ms", "p90 ms", "int8/fp32 (p50)"], rows), ""]
    for r in latency["results"]:
        if r.get("error"):
            lines += [f"`{r['artifact']}` not measured: {r['error']}", ""]
    comparisons = latency.get("int8_vs_fp32", [])
    slower = [c for c in comparisons if _slower(c)]
    if slower:
        lines += ["**int8 SLOWER than fp32**: " + "; ".join(
            f"`{c['int8']}` {c['int8_p50_ms']:.2f} ms vs `{c['fp32']}` {c['fp32_p50_ms']:.2f} ms "
            f"({c['ratio_p50']:.2f}x)" for c in slower)
            + ". An int8 file slower than its fp32 file is a defect: confirm with `edgekit bench`, keep the fp32 "
              "file meanwhile, and report it.", ""]
        for c in slower:
            if c.get("cause"):
                lines += [f"Known cause for `{c['int8']}`: {c['cause']}.", ""]
    elif comparisons and all(c["ratio_p50"] <= 1.0 for c in comparisons):
        lines += ["int8 against fp32 (p50): " + ", ".join(f"{c['format']} {c['ratio_p50']:.2f}x" for c in comparisons)
                  + ": the int8 file is the faster one in every format.", ""]
    if latency.get("int8_speed_note"):
        lines += [latency["int8_speed_note"] + ".", ""]
    return lines


KERNEL_HEADERS = ["artifact", "reference path", "ref vs PyTorch: cosine mean", "PSNR dB", "host vs ref: cosine mean",
                  "PSNR dB", "kernels"]


def kernel_rows(results: list[ParityResult]) -> list[list[str]]:
    """int8 files: the error quantization makes (reference path vs PyTorch) beside the error the host's kernels
    add (host kernels vs reference path)."""
    return [[p.label, p.kernels.reference_path, f"{p.kernels.quantization.cosine_mean:.6f}",
             _psnr(p.kernels.quantization.psnr_db), f"{p.kernels.host_kernels.cosine_mean:.6f}",
             _psnr(p.kernels.host_kernels.psnr_db), "agree" if p.kernels.agrees else "DISAGREE"]
            for p in results if p.kernels]


def kernel_section(results: list[ParityResult]) -> list[str]:
    rows = kernel_rows(results)
    if not rows:
        return []
    cpu = next(p.kernels.cpu for p in results if p.kernels)
    lines = ["### int8: quantization error and host-kernel error", "",
             f"Each int8 file also runs on its runtime's portable reference path, on the same inputs. The reference "
             f"path against PyTorch is the error int8 itself makes; the host's kernels ({cpu}) against the "
             f"reference path is what this CPU adds. Kernels agree when cosine mean >= "
             f"{KERNEL_TOLERANCE.cosine_mean} and PSNR >= {KERNEL_TOLERANCE.psnr_db:g} dB.", "",
             markdown_table(KERNEL_HEADERS, rows), ""]
    return lines + [f"**{p.kernels.finding}**" for p in results if p.kernels and p.kernels.finding] + [""]


def _integer_proof(artifact: Artifact) -> list[str]:
    report = artifact.details.get("integer")
    if not report:
        return []
    lines = [f"### Integer proof: `{artifact.path}`", ""]
    if report["fully_integer"]:
        required = ", ".join(f"{name} {count}" for name, count in report["required_int8_ops"].items() if count)
        edges = report.get("edge_conversions") or []
        edge_text = (", ".join(f"{e['opcode']} {e['from'].lower()}->{e['to'].lower()}" for e in edges)
                     if edges else "none (int8 in, int8 out)")
        lines += [f"Fully integer: **yes**, read from the flatbuffer. {required} compute on int8 activations with "
                  "int8 weights (int32 bias); no op computes in float and no QUANTIZE/DEQUANTIZE pair sits inside "
                  f"the graph. Conversions at the edges: {edge_text}.", ""]
    else:
        lines += ["Fully integer: **NO**: " + "; ".join(report["problems"][:5]), ""]
    io_rows = [[kind, f"`{t['name']}`", t["dtype"], "x".join(str(d) for d in t["shape"]),
                "-" if t["scale"] is None else f"{t['scale']:.9g}", "-" if t["zero_point"] is None else t["zero_point"]]
               for kind, tensors in (("input", report["inputs"]), ("output", report["outputs"])) for t in tensors]
    lines += [markdown_table(["", "tensor", "dtype", "shape", "scale", "zero point"], io_rows), ""]
    dtypes = report.get("compute_dtypes", {})
    op_rows = [[op, count, ", ".join(d.lower() for d in dtypes.get(op, [])) or "-"]
               for op, count in sorted(report["op_counts"].items(), key=lambda item: -item[1])]
    lines += [markdown_table(["op", "count", "tensor types"], op_rows), ""]
    return lines


def _layer_section(entry: dict) -> list[str]:
    if entry.get("error"):
        return [f"`{entry['artifact']}`: the per-layer comparison could not run ({entry['error']}).", ""]
    report = LayerReport.from_dict(entry)
    worst = report.worst(LAYERS_IN_REPORT)
    return [summary(report) + f". The {len(worst)} layers that lose most:", "",
            markdown_table(list(LAYER_HEADERS), layer_rows(worst)), ""]


def int8_section(manifest: Manifest) -> list[str]:
    """How the int8 files were made, the proof that the TFLite one is integer, and where each loses accuracy."""
    int8 = [a for a in manifest.artifacts if a.precision == "int8"]
    if not int8:
        return []
    lines = ["## int8", ""]
    used = (manifest.options.get("calibration") or {}).get("used") or {}
    if used.get("builtin"):
        lines += [f"Calibrated on edgekit's {used.get('samples')} built-in photos: `--calib DIR` with pictures from "
                  "your own data calibrates better.", ""]
    elif used:
        skipped = f" ({used['skipped']} unreadable files skipped)" if used.get("skipped") else ""
        lines += [f"Calibrated on {used.get('samples')} pictures from {used.get('source')}{skipped}.", ""]
    lines += [f"- `{a.path}`: {a.details.get('weights', 'int8')} weights, {a.details.get('activations', 'int8')} "
              f"activations, {a.details.get('calibration_method', '?')} calibration"
              + (f", {a.details['io_dtype']} input and output" if a.details.get("io_dtype") else "")
              + (f" ({a.details['calibration_note']})" if a.details.get("calibration_note") else "")
              for a in int8] + [""]
    for a in int8:
        saturation = a.details.get("saturation")
        if saturation:
            lines += [f"`{a.path}`: {saturation['channels_limited']} of {saturation['channels']} weight channels in "
                      f"{saturation['layers_limited']} of {saturation['layers']} layers keep fewer than 127 levels "
                      f"(fewest: {saturation['min_levels']}), so that no pair of uint8 x int8 products exceeds int16 "
                      "on the calibration images: ONNX Runtime's kernels on x86 CPUs without VNNI add such pairs in "
                      "saturating 16-bit arithmetic. Kernels and speed are unchanged on every CPU; the manifest "
                      "lists every layer.", ""]
        lines += _integer_proof(a)
    if manifest.layers:
        bundle = f"{manifest.options.get('out', 'exports')}/{manifest.variant}"
        lines += ["### Where int8 loses accuracy", "",
                  "Each activation of the int8 file against the same tensor of its fp32 file, on the real parity "
                  "photos: SQNR (signal-to-quantization-noise ratio), cosine, and the loss each layer adds (the "
                  "SQNR of its inputs minus its own). The layers at the top are the ones to keep in float, "
                  f"calibrate differently or change. Every layer: `edgekit inspect {bundle}` (`--all`)."
                  + ("" if manifest.weights.get("trained") else " With untrained weights these figures show the "
                     "mechanics only: judge int8 on trained weights."), ""]
        for entry in manifest.layers:
            lines += _layer_section(entry)
    return lines


def render_report(manifest: Manifest, bundle: Path | None = None) -> str:
    """report.md; with ``bundle`` (the folder holding the files) it ends with app code read from each .tflite."""
    m = manifest.model
    w = manifest.weights
    p = manifest.preprocessing
    lines = [f"# {manifest.variant}: edgekit export report", ""]
    if manifest.status != "complete":
        lines += [f"**EXPORT FAILED** at step `{manifest.failed_step or '?'}`: {manifest.error}", ""]
    else:
        failed = [r for r in manifest.parity if not r.passed]
        lines += ["**Parity: all gates pass.**" if not failed else
                  "**Parity: FAILED** for " + ", ".join(f"`{r.label}` ({'; '.join(r.failures)})" for r in failed), ""]
    for warning in manifest.warnings:
        lines += [f"> WARNING: {warning}", ""]
    lines += ["## Model", "",
              markdown_table(["field", "value"], [
                  ["name", m["name"]], ["family", m["family"]], ["width", m["width"]],
                  ["resolution", m["resolution"]], ["classes", m["num_classes"]], ["padding", m["padding"]],
                  ["weights", f"{w.get('source')} ({w.get('requested')})" + (f": {w['note']}" if w.get("note") else "")],
                  ["weights sha256", w.get("sha256") or "-"],
                  ["labels", f"{manifest.labels.get('file')}: {manifest.labels.get('count')} names, "
                             f"{manifest.labels.get('source')}"],
              ] + [["prepared for the converters", note] for note in m.get("prepare") or []]
                + _several_io_rows(m)), "",
              "## Preprocessing", "",
              f"x = (pixel - mean) / std on RGB pixels in 0..255; resize the shorter side to "
              f"{p['resize_shorter_side']} px ({p['interpolation']}), centre-crop {p['crop']}x{p['crop']}.", "",
              markdown_table(["mean", "std", "channel order", "value range"],
                             [[", ".join(f"{v:g}" for v in p["mean"]), ", ".join(f"{v:g}" for v in p["std"]),
                               p["channel_order"], f"{p['value_range'][0]:g} .. {p['value_range'][1]:g}"]]), "",
              "## Files", "",
              markdown_table(["file", "format", "precision", "size", "input", "output", "sha256", "time"],
                             [[a.path, a.format, a.precision, human_bytes(a.bytes), _tensor(a.inputs),
                               _tensor(a.outputs), f"`{a.sha256[:16]}`", _seconds(a.seconds)]
                              for a in manifest.artifacts]), ""]
    if manifest.parity:
        ref = manifest.reference
        lines += ["## Parity against PyTorch", "",
                  f"Reference: the PyTorch model in eval mode on {ref.get('real_images')} real photos and "
                  f"{ref.get('random_inputs')} seeded random pictures ({ref.get('file')}), preprocessed as above. "
                  "PSNR = 20 log10(max|reference| / RMS error); top-5 agreement = mean overlap of the top-5 sets; "
                  "top-1/top-5 agreement count the real photos only, errors, cosine and PSNR every input.", "",
                  markdown_table(PARITY_HEADERS, parity_rows(manifest.parity)), ""]
        kind = OutputTask.from_dict(m.get("task")).kind  # only the gates and notes that apply to this output
        if len(m.get("outputs") or ()) > 1:  # each output its own task, figures and gates
            for output in m["outputs"]:
                rows = [r for r in manifest.parity if r.output == output["name"]]
                output_kind = OutputTask.from_dict(output.get("task")).kind
                lines += [f"### Output `{output['name']}` ({output_kind})", ""]
                lines += task_section(output.get("task"), rows)
                gates = GateTable.from_dict(output["gates"]) if output.get("gates") else manifest.gates
                if gates:
                    lines += _gates_lines(gates, output_kind, rows)
        else:
            lines += task_section(manifest.model.get("task"), manifest.parity)  # a mask's or an embedding's figures
            if manifest.gates:
                lines += _gates_lines(manifest.gates, kind, manifest.parity)
        notes = sorted({r.note for r in manifest.parity if r.note})
        if any(r.precision == "int8" and r.gated for r in manifest.parity):
            notes.append(INT8_GATES_SOURCE if kind == "classifier" else
                         "the int8 gates on this output's own figures are set from measurements given above")
        lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
        lines += kernel_section(manifest.parity)
    lines += latency_section(manifest)
    lines += int8_section(manifest)
    if bundle is not None:  # app code generated from each .tflite file as written, int8 first
        order = {"int8": 0, "fp32": 1, "fp16": 2}
        loadable = sorted((a for a in manifest.artifacts if a.format in FORMATS and FORMATS[a.format].android_app),
                          key=lambda a: order.get(a.precision, 3))
        lines += app_section(bundle, [a.path for a in loadable])
    bundle = f"{manifest.options.get('out', 'exports')}/{manifest.variant}"
    torch_free = not any(FORMATS[a.format].runtime_needs_torch for a in manifest.artifacts if a.format in FORMATS)
    check = "re-check every file, no PyTorch needed" if torch_free else "re-check every file"
    lines += ["## Check and measure", "", "```bash", f"edgekit validate {bundle}   # {check}",
              f"edgekit bench {bundle}", "```", "",
              "## Steps", "", markdown_table(["step", "status", "time", "detail"],
                                             [[s.name, s.status, f"{s.seconds:.1f} s", s.detail or ""]
                                              for s in manifest.steps]), "",
              "## Versions", "", markdown_table(["package", "version"],
                                                [[k, v or "not installed"] for k, v in manifest.versions.items()]
                                                + [["host CPU", describe(manifest.host) if manifest.host else "-"]]),
              "", f"Created {manifest.created} by edgekit {manifest.edgekit_version}.", ""]
    return "\n".join(lines)
