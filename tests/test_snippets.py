"""The app snippets of report.md: generated from each file's metadata, parsed as Kotlin and Swift (tree-sitter's
grammars: no Kotlin or Swift compiler installs from the package registries), and every number in them equal to what
the file itself says (its input/output tensors as LiteRT's interpreter reports them, and its metadata)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import V1_SMALL, V1_SMALL_VARIANT
from edgekit.errors import EdgekitError
from edgekit.snippets import kotlin_snippet, read_app_facts, swift_snippet, type_name

FP32 = f"{V1_SMALL_VARIANT}.tflite"
INT8 = f"{V1_SMALL_VARIANT}_int8.tflite"


def parse(language: str, source: str):
    """The tree-sitter syntax tree of ``source``; fails the test on any syntax error or missing token."""
    import tree_sitter

    if language == "kotlin":
        import tree_sitter_kotlin as grammar
    else:
        import tree_sitter_swift as grammar
    tree = tree_sitter.Parser(tree_sitter.Language(grammar.language())).parse(source.encode())
    if tree.root_node.has_error:
        bad = []
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            if node.is_error or node.is_missing:
                bad.append(f"line {node.start_point[0] + 1}: {source.splitlines()[node.start_point[0]].strip()}")
            stack.extend(node.children)
        pytest.fail(f"{language} snippet does not parse: {bad[:3]}")
    return tree


def constant(source: str, pattern: str) -> str:
    found = re.search(pattern, source)
    assert found, f"no match for {pattern}"
    return found.group(1)


def floats(text: str) -> list[float]:
    return [float(v.rstrip("f")) for v in text.split(",")]


@pytest.fixture(scope="module")
def bundle(v1_int8_bundle) -> Path:
    assert v1_int8_bundle["code"] == 0, v1_int8_bundle["stderr"][-2000:]
    return v1_int8_bundle["bundle"]


def interpreter_io(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {"input": (np.dtype(inp["dtype"]).name, tuple(inp["shape"]), *inp["quantization"]),
            "output": (np.dtype(out["dtype"]).name, tuple(out["shape"]), *out["quantization"])}


@pytest.mark.parametrize("name", [FP32, INT8])
def test_snippet_numbers_are_the_files(bundle, name):
    path = bundle / name
    facts = read_app_facts(path)
    kotlin, swift = kotlin_snippet(facts), swift_snippet(facts)
    parse("kotlin", kotlin)
    parse("swift", swift)
    io = interpreter_io(path)
    in_dtype, in_shape, in_scale, in_zero = io["input"]
    out_dtype, out_shape, out_scale, out_zero = io["output"]
    record = json.loads((bundle / "manifest.json").read_text())["preprocessing"]
    assert constant(kotlin, r'const val MODEL_FILE = "([^"]+)"') == name
    assert constant(swift, r'static let modelName = "([^"]+)"') + ".tflite" == name
    for source, prefix, sep in ((kotlin, "const val ", " = "), (swift, "static let ", " = ")):
        key = (lambda k: k.upper()) if source is kotlin else (lambda k: re.sub(r"_(\w)", lambda m: m[1].upper(), k))
        assert int(constant(source, rf"{prefix}{key('width')}{sep}(\d+)")) == in_shape[2]
        assert int(constant(source, rf"{prefix}{key('height')}{sep}(\d+)")) == in_shape[1]
        assert int(constant(source, rf"{prefix}{key('classes')}{sep}(\d+)")) == out_shape[-1]
        assert int(constant(source, rf"{prefix}{key('resize_shorter_side')}{sep}(\d+)")) == \
            record["resize_shorter_side"]
    assert constant(kotlin, r'const val LABELS_FILE = "([^"]+)"') == "labels.txt"
    assert floats(constant(kotlin, r"val MEAN = floatArrayOf\(([^)]+)\)")) == record["mean"]
    assert floats(constant(kotlin, r"val STD = floatArrayOf\(([^)]+)\)")) == record["std"]
    assert floats(constant(swift, r"static let mean: \[Float\] = \[([^\]]+)\]")) == record["mean"]
    assert floats(constant(swift, r"static let std: \[Float\] = \[([^\]]+)\]")) == record["std"]
    element = 4 if in_dtype == "float32" else 1
    assert f"ByteBuffer.allocateDirect(WIDTH * HEIGHT * 3 * {element})" in kotlin
    if in_dtype == "float32":
        assert "INPUT_SCALE" not in kotlin and "putFloat((value - MEAN[channel]) / STD[channel])" in kotlin
        assert "Array(1) { FloatArray(CLASSES) }" in kotlin
    else:
        assert in_dtype == "int8"
        assert np.float32(constant(kotlin, r"const val INPUT_SCALE = ([\d.e-]+)f")) == np.float32(in_scale)
        assert int(constant(kotlin, r"const val INPUT_ZERO_POINT = (-?\d+)")) == in_zero
        assert np.float32(constant(swift, r"static let inputScale: Float = ([\d.e-]+)")) == np.float32(in_scale)
        assert np.float32(constant(kotlin, r"const val OUTPUT_SCALE = ([\d.e-]+)f")) == np.float32(out_scale)
        assert int(constant(swift, r"static let outputZeroPoint = (-?\d+)")) == out_zero
        # int8 input whose quantization equals the normalisation: the camera byte minus 128, said plainly
        assert "feed the camera's bytes as they are minus 128" in kotlin
        assert "input.put((value - 128).toByte())" in kotlin
        assert "UInt8(bitPattern: Int8(Int(rgba[pixel * 4 + channel]) - 128))" in swift
        assert "output[0][it].toInt() - OUTPUT_ZERO_POINT" in kotlin


def test_two_snippets_declare_nothing_at_top_level(bundle):
    """Every name lives inside the class named after the file, so two files' snippets sit side by side."""
    names = []
    for name in (FP32, INT8):
        facts = read_app_facts(bundle / name)
        names.append(facts.type_name)
        for language, source in (("kotlin", kotlin_snippet(facts)), ("swift", swift_snippet(facts))):
            top = [child.type for child in parse(language, source).root_node.children]
            assert set(top) <= {"import", "import_header", "import_declaration", "class_declaration", "comment",
                                "line_comment", "import_list"}, top
            assert top.count("class_declaration") == 1
    assert names == ["MobilenetV1W025R128", "MobilenetV1W025R128Int8"]
    assert type_name("4x_model-v2.tflite") == "Model4xModelV2"


def test_report_puts_int8_first_and_holds_the_files_own_snippets(bundle):
    report = (bundle / "report.md").read_text()
    int8, fp32 = read_app_facts(bundle / INT8), read_app_facts(bundle / FP32)
    assert report.index(f"### `{INT8}`: Android") < report.index(f"### `{FP32}`: Android")
    for facts in (int8, fp32):
        assert kotlin_snippet(facts) in report and swift_snippet(facts) in report


@pytest.mark.parametrize("dtype", ["UINT8", "INT8"])
def test_quantized_input_that_is_not_the_camera_bytes_is_quantized_per_pixel(bundle, dtype):
    """Per-channel ImageNet normalisation cannot make the quantized input equal the camera's bytes: then the
    snippet normalises and quantizes every pixel, and does not claim the bytes are the input."""
    facts = replace(read_app_facts(bundle / INT8), mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                    input_dtype=dtype, input_scale=0.018658, input_zero_point=114 if dtype == "UINT8" else -14,
                    camera_bytes=False)
    kotlin, swift = kotlin_snippet(facts), swift_snippet(facts)
    parse("kotlin", kotlin)
    parse("swift", swift)
    low, high = (0, 255) if dtype == "UINT8" else (-128, 127)
    assert f"(Math.round(x / INPUT_SCALE) + INPUT_ZERO_POINT).coerceIn({low}, {high}).toByte()" in kotlin
    assert "NOT this file's input" in kotlin and "as they are" not in kotlin
    assert "let q = Int((x / Self.inputScale).rounded()) + Self.inputZeroPoint" in swift
    assert floats(constant(kotlin, r"val MEAN = floatArrayOf\(([^)]+)\)")) == [123.675, 116.28, 103.53]


def test_other_tools_files_and_files_without_metadata(bundle, shared_data, tmp_path):
    google = read_app_facts(shared_data / "tflite" / V1_SMALL)  # Google's own metadata, no edgekit entry
    assert (google.labels_file, google.classes, google.input_dtype) == ("imagenet_labels.txt", 1001, "UINT8")
    assert google.resize_shorter_side == 128  # no edgekit record of the resize: straight to the input size
    assert not google.camera_bytes  # its metadata says mean 127.5, its quantization 128: half a step apart
    parse("kotlin", kotlin_snippet(google))
    from edgekit.tflite_model import pack_model, unpack_model

    model = unpack_model((bundle / FP32).read_bytes())
    model.metadata = [m for m in model.metadata if m.name not in ("TFLITE_METADATA", b"TFLITE_METADATA")]
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(pack_model(model))
    with pytest.raises(EdgekitError, match="bare.tflite has no TFLite Metadata .*; export it again with edgekit"):
        read_app_facts(bare)


KOTLIN_DRIVER = """
import java.io.File
import java.io.FileInputStream
import java.io.RandomAccessFile

// An app's assets folder and a picture, as the stubs' Context and Bitmap
class FolderContext(private val folder: File, override val cacheDir: File) : android.content.Context() {
    override val assets = object : android.content.res.AssetManager() {
        override fun open(fileName: String) = FileInputStream(File(folder, fileName))
        override fun openFd(fileName: String): android.content.res.AssetFileDescriptor {
            val file = RandomAccessFile(File(folder, fileName), "r")
            return object : android.content.res.AssetFileDescriptor() {
                override val fileDescriptor = file.fd
                override val startOffset = 0L
                override val declaredLength = file.length()
                override fun close() = file.close()
            }
        }
    }
}

class PixelBitmap(override val width: Int, override val height: Int, private val argb: IntArray) :
    android.graphics.Bitmap() {
    override fun getPixels(pixels: IntArray, offset: Int, stride: Int, x: Int, y: Int, width: Int, height: Int) {
        for (row in 0 until height) {
            for (col in 0 until width) pixels[offset + row * stride + col] = argb[(y + row) * this.width + x + col]
        }
    }
}

fun picture(rgb: ByteArray, width: Int, height: Int) = PixelBitmap(width, height, IntArray(width * height) { i ->
    (0xFF shl 24) or ((rgb[3 * i].toInt() and 0xFF) shl 16) or ((rgb[3 * i + 1].toInt() and 0xFF) shl 8) or
        (rgb[3 * i + 2].toInt() and 0xFF)
})

fun save(input: java.nio.ByteBuffer, labels: List<String>, out: File) {
    val bytes = ByteArray(input.remaining())
    input.get(bytes)
    File(out, "input.bin").writeBytes(bytes)
    File(out, "labels.txt").writeText(labels.joinToString("\\n"))
}

fun main(args: Array<String>) {
    val context = FolderContext(File(args[0]), File(args[2]))
    val rgb = File(args[3]).readBytes()
    val out = File(args[4])
    when (args[1]) {
BRANCHES
    }
}
"""


@pytest.mark.slow
def test_kotlin_snippets_compile_and_fill_the_input_as_edgekit_does(bundle, shared_data, tmp_path):
    """kotlinc (Debian's `kotlin`) compiles both snippets together, against stand-ins for the Android API
    (tests/android_api_stubs), and runs them on the JVM: each reads its labels from the model file's zip archive,
    and turns a real photo into exactly the input edgekit's own preprocessing gives the file (also for inputs that are
    normalised and quantized per pixel)."""
    import shutil
    import subprocess

    from edgekit.images import load_rgb, normalize, resize_and_crop
    from edgekit.types import Preprocessing

    if shutil.which("kotlinc") is None:
        pytest.skip("kotlinc is not installed: apt-get install kotlin (.ci/run installs it)")
    sources = [*sorted((Path(__file__).parent / "android_api_stubs").glob("*.kt"))]
    branches = []
    int8 = read_app_facts(bundle / INT8)
    # the two inputs a per-channel normalisation gives (quantized per pixel), on the int8 file's tensors
    per_channel = dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), input_scale=0.018658,
                       camera_bytes=False)
    variants = {"PerChannelUint8": replace(int8, type_name="PerChannelUint8", input_dtype="UINT8",
                                           input_zero_point=114, output_dtype="UINT8", **per_channel),
                "PerChannelInt8": replace(int8, type_name="PerChannelInt8", input_zero_point=-14, **per_channel)}
    for name in (FP32, INT8, *variants):
        facts = variants.get(name) or read_app_facts(bundle / name)
        source = tmp_path / f"{facts.type_name}.kt"
        source.write_text(kotlin_snippet(facts))
        sources.append(source)
        branches.append(f'        "{facts.type_name}" -> {facts.type_name}(context).let {{ model -> '
                        f'save(model.toInput(picture(rgb, {facts.type_name}.WIDTH, {facts.type_name}.HEIGHT)), '
                        "model.labels, out); model.close() }")
    driver = tmp_path / "Driver.kt"
    driver.write_text(KOTLIN_DRIVER.replace("BRANCHES", "\n".join(branches)))
    classes = tmp_path / "classes"
    # short JVM runs: the first JIT tier and one GC thread do them with about half the CPU the defaults burn
    jvm = dict(os.environ, JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    compiled = subprocess.run(["kotlinc", "-nowarn", *map(str, sources), str(driver), "-d", str(classes)],
                              capture_output=True, text=True, env=jvm)
    assert compiled.returncode == 0, compiled.stderr[-3000:]

    manifest = json.loads((bundle / "manifest.json").read_text())
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
    crop = resize_and_crop(load_rgb(shared_data / "photos" / "parrot.jpg"), 128, preprocessing)
    (tmp_path / "photo.rgb").write_bytes(np.ascontiguousarray(crop).tobytes())
    labels = (bundle / "labels.txt").read_text().splitlines()

    def quantized(facts, low, high, dtype):
        x = (crop.astype(np.float32) - np.float32(facts.mean)) / np.float32(facts.std) / np.float32(facts.input_scale)
        return np.clip(np.floor(x.astype(np.float64) + 0.5) + facts.input_zero_point, low, high).astype(dtype)

    for name, expected in ((FP32, np.moveaxis(normalize(crop, preprocessing), 0, -1)),
                           (INT8, (crop.astype(np.int16) - 128).astype(np.int8)),
                           ("PerChannelUint8", quantized(variants["PerChannelUint8"], 0, 255, np.uint8)),
                           ("PerChannelInt8", quantized(variants["PerChannelInt8"], -128, 127, np.int8))):
        out, cache = tmp_path / f"out_{name}", tmp_path / f"cache_{name}"  # cache: the app's cacheDir
        out.mkdir()
        cache.mkdir()
        ran = subprocess.run(["kotlin", "-cp", str(classes), "DriverKt", str(bundle), type_name(name),
                              str(cache), str(tmp_path / "photo.rgb"), str(out)], capture_output=True, text=True,
                             env=jvm)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert (out / "labels.txt").read_text().splitlines() == labels
        made = np.frombuffer((out / "input.bin").read_bytes(), dtype=expected.dtype).reshape(expected.shape)
        np.testing.assert_array_equal(made, expected)
