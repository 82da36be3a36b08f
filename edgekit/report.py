"""``report.md`` for people, the final terminal table, and the Android snippet: all rendered from the manifest,
so what a person reads is what a program reads."""

from __future__ import annotations

from .manifest import Artifact, Manifest
from .parity import ParityResult
from .table import format_table, human_bytes, markdown_table


def _parity_cell(result: ParityResult | None) -> str:
    if result is None:
        return "-"
    return result.verdict


def _parity_by_artifact(manifest: Manifest) -> dict[str, ParityResult]:
    return {p.artifact: p for p in manifest.parity}


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def _tensor(specs) -> str:
    parts = []
    for t in specs:
        quant = f", scale {t.scale:.6g}, zero point {t.zero_point}" if t.scale is not None else ""
        parts.append(f"`{t.name}` {t.dtype} [{', '.join(str(s) for s in t.shape)}] {t.layout}{quant}")
    return "; ".join(parts)


def summary_table(manifest: Manifest) -> str:
    """The table `edgekit export` ends with: artifact, size, parity, time."""
    parity = _parity_by_artifact(manifest)
    rows = [[a.path, a.precision, human_bytes(a.bytes), _parity_cell(parity.get(a.path)), _seconds(a.seconds)]
            for a in manifest.artifacts]
    return format_table(["artifact", "precision", "size", "parity", "time"], rows)


def _f(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def _psnr(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


def parity_rows(results: list[ParityResult]) -> list[list[str]]:
    return [[p.artifact, p.precision, _f(p.metrics.max_abs_error), _f(p.metrics.mean_abs_error),
             f"{p.metrics.cosine_min:.6f}", f"{p.metrics.cosine_mean:.6f}", _psnr(p.metrics.psnr_db),
             f"{p.metrics.top1_agreement:.1%}", f"{p.metrics.top5_agreement:.1%}", p.verdict]
            for p in results]


PARITY_HEADERS = ["artifact", "precision", "max abs err", "mean abs err", "cosine min", "cosine mean", "PSNR dB",
                  "top-1 agree", "top-5 agree", "verdict"]


def _tflite_for_app(manifest: Manifest) -> Artifact | None:
    """The float .tflite (fp32, else fp16): the file the main Android snippet loads."""
    tflite = [a for a in manifest.artifacts if a.format == "tflite"]
    return next((a for precision in ("fp32", "fp16") for a in tflite if a.precision == precision), None)


def _plus(n: int) -> str:
    """`` + 3`` / `` - 3`` / empty: an integer offset as Kotlin reads best."""
    return f" + {n}" if n > 0 else f" - {-n}" if n < 0 else ""


def android_snippet(manifest: Manifest, artifact: Artifact) -> str:
    """Kotlin that loads ``artifact`` with LiteRT's Interpreter and feeds it a camera frame the way the
    weights expect: shape, type, channel order and normalization all come from the manifest."""
    spec = artifact.inputs[0]
    _, height, width, channels = (int(s) for s in spec.shape)
    out_shape = [int(s) for s in artifact.outputs[0].shape]
    classes = out_shape[-1]
    p = manifest.preprocessing
    mean = ", ".join(f"{m:g}f" for m in p["mean"])
    std = ", ".join(f"{s:g}f" for s in p["std"])
    order = p.get("channel_order", "RGB")
    channel_index = {"R": "(p shr 16) and 0xFF", "G": "(p shr 8) and 0xFF", "B": "p and 0xFF"}
    reads = [channel_index[c] for c in order]
    if spec.dtype == "float32":
        element, put = 4, "input.putFloat(x)"
        kind = "float32"
    else:
        element = 1
        low, high = (-128, 127) if spec.dtype == "int8" else (0, 255)
        put = (f"input.put((Math.round(x / {spec.scale:.9g}f){_plus(spec.zero_point)}).coerceIn({low}, {high})"
               ".toByte())")
        kind = f"{spec.dtype}, quantized with scale {spec.scale:.9g} and zero point {spec.zero_point}"
    out = artifact.outputs[0]
    if out.dtype == "float32":
        output_decl = f"val logits = Array(1) {{ FloatArray({classes}) }}"
        output_read = "val scores = logits[0]"
    else:
        output_decl = f"val raw = Array(1) {{ ByteArray({classes}) }}"
        signed = "it.toInt()" if out.dtype == "int8" else "(it.toInt() and 0xFF)"
        output_read = f"val scores = raw[0].map {{ ({signed}{_plus(-out.zero_point)}) * {out.scale:.9g}f }}"
    return f"""```kotlin
// {artifact.path}: input {kind} [1, {height}, {width}, {channels}] NHWC, {order}; output [1, {classes}] logits.
// Picture: resize the shorter side to {p['resize_shorter_side']} px ({p['interpolation']}), centre-crop {p['crop']}x{p['crop']}.
// Gradle: implementation("com.google.ai.edge.litert:litert:1.4.0")
import android.content.Context
import android.graphics.Bitmap
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import org.tensorflow.lite.Interpreter

val MEAN = floatArrayOf({mean})   // per channel, on the 0..255 pixel scale
val STD = floatArrayOf({std})

fun loadModel(context: Context): Interpreter {{
    val fd = context.assets.openFd("{artifact.path}")
    val model = FileInputStream(fd.fileDescriptor).channel
        .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
    return Interpreter(model, Interpreter.Options().setNumThreads(4))
}}

fun toInput(crop: Bitmap): ByteBuffer {{  // crop: {width}x{height}, already resized and centre-cropped
    val input = ByteBuffer.allocateDirect({height} * {width} * {channels} * {element}).order(ByteOrder.nativeOrder())
    val pixels = IntArray({width} * {height})
    crop.getPixels(pixels, 0, {width}, 0, 0, {width}, {height})
    for (p in pixels) {{
        for ((c, value) in intArrayOf({', '.join(reads)}).withIndex()) {{
            val x = (value - MEAN[c]) / STD[c]
            {put}
        }}
    }}
    return input.rewind() as ByteBuffer
}}

fun classify(interpreter: Interpreter, crop: Bitmap): Int {{
    {output_decl}
    interpreter.run(toInput(crop), {'logits' if out.dtype == 'float32' else 'raw'})
    {output_read}
    return scores.indices.maxBy {{ scores[it] }}  // index into labels.txt
}}
```"""


def render_report(manifest: Manifest) -> str:
    m = manifest.model
    w = manifest.weights
    p = manifest.preprocessing
    lines = [f"# {manifest.variant}: edgekit export report", ""]
    if manifest.status != "complete":
        lines += [f"**EXPORT FAILED** at step `{manifest.failed_step or '?'}`: {manifest.error}", ""]
    else:
        failed = [r for r in manifest.parity if not r.passed]
        lines += ["**Parity: all gates pass.**" if not failed else
                  "**Parity: FAILED** for " + ", ".join(f"`{r.artifact}` ({'; '.join(r.failures)})" for r in failed), ""]
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
              ]), "",
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
        if manifest.gates:
            lines += ["Gates: " + "; ".join(f"{precision}: {manifest.gates.for_precision(precision).describe()}"
                                            for precision in sorted({r.precision for r in manifest.parity})), ""]
        notes = sorted({r.note for r in manifest.parity if r.note})
        lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
    app_file = _tflite_for_app(manifest)
    if app_file is not None:
        lines += ["## Android", "", android_snippet(manifest, app_file), ""]
        quantized = [a for a in manifest.artifacts if a.format == "tflite" and a.precision == "int8"]
        for a in quantized:
            lines += [f"For `{a.path}`:", "", android_snippet(manifest, a), ""]
    bundle = f"{manifest.options.get('out', 'exports')}/{manifest.variant}"
    lines += ["## Check and measure", "", "```bash", f"edgekit validate {bundle}   # re-check every file, no PyTorch needed",
              f"edgekit bench {bundle}", "```", "",
              "## Steps", "", markdown_table(["step", "status", "time", "detail"],
                                             [[s.name, s.status, f"{s.seconds:.1f} s", s.detail or ""]
                                              for s in manifest.steps]), "",
              "## Versions", "", markdown_table(["package", "version"],
                                                [[k, v or "not installed"] for k, v in manifest.versions.items()]),
              "", f"Created {manifest.created} by edgekit {manifest.edgekit_version}.", ""]
    return "\n".join(lines)
