"""App code for a .tflite file, generated from the file's own metadata so that it cannot drift from it: Kotlin for
Android (LiteRT's Interpreter, CameraX or any Bitmap) and Swift for iOS (TensorFlowLiteSwift).

Every number comes from the file: the input size, type and quantization, the output's, the normalisation and the
labels file from its standard TFLite Metadata (``tflite_metadata``), the resize before the centre crop from edgekit's
own metadata entry. Each snippet is one source file holding one class named after the model file; every constant
lives inside that class, so the snippets of two files compile side by side in one app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgekitError
from .tflite_metadata import read_standard_metadata

LITERT_GRADLE = 'implementation("com.google.ai.edge.litert:litert:1.4.0")'
CAMERAX_GRADLE = 'implementation("androidx.camera:camera-core:1.4.2")'
SWIFT_POD = "pod 'TensorFlowLiteSwift'"
_INT_RANGE = {"UINT8": (0, 255), "INT8": (-128, 127)}


@dataclass(frozen=True)
class AppFacts:
    """What an app needs to feed one .tflite file and read its answer, as read back from the file."""

    file: str  # the file's name, as the app ships it
    type_name: str  # the Kotlin/Swift class of its snippet
    width: int
    height: int
    resize_shorter_side: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_dtype: str  # FLOAT32, UINT8, INT8
    input_scale: float | None
    input_zero_point: int | None
    camera_bytes: bool  # the camera's bytes are the input as they are (uint8) or minus 128 (int8)
    output_dtype: str
    output_scale: float | None
    output_zero_point: int | None
    classes: int
    labels_file: str


def type_name(file_name: str) -> str:
    """``mobilenet_v1_w0.25_r128_int8.tflite`` -> ``MobilenetV1W025R128Int8``: a class name per file."""
    stem = Path(file_name).name.removesuffix(".tflite")
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", stem) if part)
    return name if name[:1].isalpha() else f"Model{name}"


def read_app_facts(path: str | Path) -> AppFacts:
    """The facts of the .tflite file at ``path``, read from its metadata (one-line error when it has none)."""
    from .exporters.tflite import read_metadata

    path = Path(path)
    several = read_metadata(path).get("io")
    if several:  # the snippets feed one picture and read one score vector
        raise EdgekitError(f"the snippets feed one picture and read one score vector, and {path.name} takes "
                           f"{len(several['inputs'])} input(s) ({', '.join(several['inputs'])}) and gives "
                           f"{len(several['outputs'])} output(s) ({', '.join(several['outputs'])}): with LiteRT, "
                           "fill one buffer per input in that order and call runForMultipleInputsOutputs")
    standard = read_standard_metadata(path)
    if standard is None or not standard.mean or standard.width is None or standard.labels_file is None:
        raise EdgekitError(f"{path.name} has no TFLite Metadata with image size, normalisation and labels; export it "
                           "again with edgekit")
    if standard.color_space != "RGB":
        raise EdgekitError(f"{path.name} takes {str(standard.color_space).lower()} pictures; the app snippets are "
                           "written for RGB camera pictures")
    record = (read_metadata(path).get("preprocessing") or {})
    three = lambda values: tuple(float(v) for v in (values * 3 if len(values) == 1 else values))  # noqa: E731
    return AppFacts(
        file=path.name, type_name=type_name(path.name), width=standard.width, height=standard.height,
        # without edgekit's record (another tool's file) the picture is resized straight to the crop size
        resize_shorter_side=int(record.get("resize_shorter_side") or min(standard.width, standard.height)),
        interpolation=record.get("interpolation", "bilinear"), mean=three(standard.mean), std=three(standard.std),
        input_dtype=standard.input_dtype, input_scale=standard.input_scale,
        input_zero_point=standard.input_zero_point, camera_bytes=standard.camera_bytes,
        output_dtype=standard.output_dtype, output_scale=standard.output_scale,
        output_zero_point=standard.output_zero_point, classes=standard.classes, labels_file=standard.labels_file)


def _float(value: float) -> str:
    """A float literal both Kotlin (with ``f``) and Swift read: shortest repr that round-trips float32."""
    import numpy as np

    text = np.format_float_positional(np.float32(value), trim="-")
    return text if "." in text else text + ".0"


def _kotlin_floats(values) -> str:
    return ", ".join(f"{_float(v)}f" for v in values)


def _input_summary(f: AppFacts) -> str:
    quant = (f", scale {_float(f.input_scale)}, zero point {f.input_zero_point}" if f.input_scale is not None else "")
    return f"input {f.input_dtype.lower()} [1, {f.height}, {f.width}, 3] RGB{quant}"


def _output_summary(f: AppFacts) -> str:
    quant = (f", scale {_float(f.output_scale)}, zero point {f.output_zero_point}" if f.output_scale is not None
             else "")
    return f"output {f.output_dtype.lower()} [1, {f.classes}]{quant}"


def _feeding_note(f: AppFacts) -> str:
    if f.input_dtype == "FLOAT32":
        return "float32 input: each channel normalised to (pixel - MEAN) / STD"
    if f.camera_bytes:
        offset = " minus 128" if f.input_dtype == "INT8" else ""
        return (f"{f.input_dtype.lower()} input: feed the camera's bytes as they are{offset}. Its quantization "
                f"(scale {_float(f.input_scale)}, zero point {f.input_zero_point}) equals the normalisation "
                f"(mean {_float(f.mean[0])}, std {_float(f.std[0])}), so no arithmetic is needed")
    return (f"{f.input_dtype.lower()} input: normalise each channel, then quantize with the input's scale and zero "
            "point (the camera's bytes are NOT this file's input)")


def kotlin_snippet(f: AppFacts) -> str:
    """One Kotlin file, ``<type_name>.kt``: LiteRT Interpreter, labels read from the model file, CameraX frames or
    any Bitmap resized and centre-cropped, the input filled as this file needs."""
    element = 4 if f.input_dtype == "FLOAT32" else 1
    quantized_in = f.input_dtype in _INT_RANGE
    constants = [f'const val MODEL_FILE = "{f.file}"  // in app/src/main/assets',
                 f'const val LABELS_FILE = "{f.labels_file}"  // inside MODEL_FILE (TFLite Metadata associated file)',
                 f"const val WIDTH = {f.width}",
                 f"const val HEIGHT = {f.height}",
                 f"const val RESIZE_SHORTER_SIDE = {f.resize_shorter_side}  // then keep the centre WIDTH x HEIGHT",
                 f"const val CLASSES = {f.classes}",
                 f"val MEAN = floatArrayOf({_kotlin_floats(f.mean)})  // per channel R, G, B; pixels 0..255",
                 f"val STD = floatArrayOf({_kotlin_floats(f.std)})"]
    if quantized_in:
        constants += [f"const val INPUT_SCALE = {_float(f.input_scale)}f",
                      f"const val INPUT_ZERO_POINT = {f.input_zero_point}"]
    if f.output_dtype in _INT_RANGE:
        constants += [f"const val OUTPUT_SCALE = {_float(f.output_scale)}f",
                      f"const val OUTPUT_ZERO_POINT = {f.output_zero_point}"]
    if f.input_dtype == "FLOAT32":
        fill = ["for ((channel, value) in rgb(pixel).withIndex()) {",
                "    input.putFloat((value - MEAN[channel]) / STD[channel])",
                "}"]
    elif f.camera_bytes:
        offset = " - 128" if f.input_dtype == "INT8" else ""
        fill = [f"// Feed the camera's bytes as they are{' minus 128' if offset else ''}: this file's quantization "
                "equals its normalisation.",
                f"for (value in rgb(pixel)) input.put({f'(value{offset})' if offset else 'value'}.toByte())"]
    else:
        low, high = _INT_RANGE[f.input_dtype]
        fill = ["for ((channel, value) in rgb(pixel).withIndex()) {",
                "    val x = (value - MEAN[channel]) / STD[channel]",
                f"    input.put((Math.round(x / INPUT_SCALE) + INPUT_ZERO_POINT).coerceIn({low}, {high}).toByte())",
                "}"]
    if f.output_dtype == "FLOAT32":
        output = ["val output = Array(1) { FloatArray(CLASSES) }",
                  "interpreter.run(toInput(centreCrop(picture)), output)",
                  "val scores = output[0]"]
    else:
        byte = "(output[0][it].toInt() and 0xFF)" if f.output_dtype == "UINT8" else "output[0][it].toInt()"
        output = ["val output = Array(1) { ByteArray(CLASSES) }",
                  "interpreter.run(toInput(centreCrop(picture)), output)",
                  f"val scores = FloatArray(CLASSES) {{ OUTPUT_SCALE * ({byte} - OUTPUT_ZERO_POINT) }}"]
    bicubic = ("  // the model was evaluated with bicubic resizing; Android scales bilinear"
               if f.interpolation == "bicubic" else "")
    lines = [
        f"// {f.type_name}.kt: {f.file}, {_input_summary(f)}, {_output_summary(f)}, labels in {f.labels_file} inside "
        "the file.",
        f"// Every number below was read from the file's metadata. {_feeding_note(f)}.",
        f"// Gradle: {LITERT_GRADLE}, {CAMERAX_GRADLE}",
        "import android.content.Context",
        "import android.graphics.Bitmap",
        "import android.graphics.Matrix",
        "import androidx.camera.core.ImageProxy",
        "import java.io.File",
        "import java.io.FileInputStream",
        "import java.nio.ByteBuffer",
        "import java.nio.ByteOrder",
        "import java.nio.channels.FileChannel",
        "import java.util.zip.ZipFile",
        "import org.tensorflow.lite.Interpreter",
        "",
        f"class {f.type_name}(context: Context) : AutoCloseable {{",
        "    companion object {",
        *[f"        {c}" for c in constants],
        "    }",
        "",
        "    data class Prediction(val index: Int, val label: String, val score: Float)",
        "",
        "    private val interpreter: Interpreter",
        "    val labels: List<String>",
        "",
        "    init {",
        "        val model = context.assets.openFd(MODEL_FILE).use { fd ->",
        "            FileInputStream(fd.fileDescriptor).channel",
        "                .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)",
        "        }",
        "        interpreter = Interpreter(model, Interpreter.Options().setNumThreads(4))",
        "        labels = readLabels(context)",
        '        check(labels.size == CLASSES) { "$LABELS_FILE in $MODEL_FILE holds ${labels.size} names, not $CLASSES" }',
        "    }",
        "",
        "    /** The .tflite is also a zip archive: its labels file is an entry of it. */",
        "    private fun readLabels(context: Context): List<String> {",
        "        val copy = File(context.cacheDir, MODEL_FILE)",
        "        context.assets.open(MODEL_FILE).use { input -> copy.outputStream().use { input.copyTo(it) } }",
        "        return ZipFile(copy).use { zip ->",
        '            val entry = zip.getEntry(LABELS_FILE) ?: error("$MODEL_FILE holds no $LABELS_FILE")',
        "            zip.getInputStream(entry).bufferedReader().readLines().filter { it.isNotEmpty() }",
        "        }",
        "    }",
        "",
        "    /** CameraX: ImageAnalysis.Builder().setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888). */",
        "    fun classify(frame: ImageProxy): Prediction {",
        "        val rotation = frame.imageInfo.rotationDegrees",
        "        val bitmap = try { frame.toBitmap() } finally { frame.close() }",
        "        if (rotation == 0) return classify(bitmap)",
        "        val turn = Matrix().apply { postRotate(rotation.toFloat()) }",
        "        return classify(Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, turn, true))",
        "    }",
        "",
        "    fun classify(picture: Bitmap): Prediction {",
        *[f"        {line}" for line in output],
        "        var best = 0",
        "        for (i in scores.indices) if (scores[i] > scores[best]) best = i",
        "        return Prediction(best, labels[best], scores[best])",
        "    }",
        "",
        "    /** Resize the shorter side to RESIZE_SHORTER_SIDE, then keep the centre WIDTH x HEIGHT. */",
        "    fun centreCrop(picture: Bitmap): Bitmap {",
        "        val (width, height) = if (picture.width <= picture.height) {",
        "            RESIZE_SHORTER_SIDE to maxOf(RESIZE_SHORTER_SIDE, RESIZE_SHORTER_SIDE * picture.height / picture.width)",
        "        } else {",
        "            maxOf(RESIZE_SHORTER_SIDE, RESIZE_SHORTER_SIDE * picture.width / picture.height) to RESIZE_SHORTER_SIDE",
        "        }",
        f"        val resized = Bitmap.createScaledBitmap(picture, width, height, true){bicubic}",
        "        return Bitmap.createBitmap(resized, (width - WIDTH) / 2, (height - HEIGHT) / 2, WIDTH, HEIGHT)",
        "    }",
        "",
        "    private fun rgb(pixel: Int) = intArrayOf((pixel shr 16) and 0xFF, (pixel shr 8) and 0xFF, pixel and 0xFF)",
        "",
        "    fun toInput(crop: Bitmap): ByteBuffer {",
        f"        val input = ByteBuffer.allocateDirect(WIDTH * HEIGHT * 3 * {element}).order(ByteOrder.nativeOrder())",
        "        val pixels = IntArray(WIDTH * HEIGHT)",
        "        crop.getPixels(pixels, 0, WIDTH, 0, 0, WIDTH, HEIGHT)",
        "        for (pixel in pixels) {",
        *[f"            {line}" for line in fill],
        "        }",
        "        return input.rewind() as ByteBuffer",
        "    }",
        "",
        "    override fun close() = interpreter.close()",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _swift_floats(values) -> str:
    return ", ".join(_float(v) for v in values)


def swift_snippet(f: AppFacts) -> str:
    """One Swift file, ``<type_name>.swift``: TensorFlowLiteSwift's Interpreter, labels read from the model file's
    zip archive, a CGImage (or a camera CVPixelBuffer) resized and centre-cropped, the input filled as this file
    needs."""
    stem = f.file.removesuffix(".tflite")
    quantized_in = f.input_dtype in _INT_RANGE
    constants = [f'static let modelName = "{stem}"  // {f.file} in the app bundle',
                 f'static let labelsFile = "{f.labels_file}"  // inside the model file (TFLite Metadata associated file)',
                 f"static let width = {f.width}",
                 f"static let height = {f.height}",
                 f"static let resizeShorterSide = {f.resize_shorter_side}  // then keep the centre width x height",
                 f"static let classes = {f.classes}",
                 f"static let mean: [Float] = [{_swift_floats(f.mean)}]  // per channel R, G, B; pixels 0...255",
                 f"static let std: [Float] = [{_swift_floats(f.std)}]"]
    if quantized_in:
        constants += [f"static let inputScale: Float = {_float(f.input_scale)}",
                      f"static let inputZeroPoint = {f.input_zero_point}"]
    if f.output_dtype in _INT_RANGE:
        constants += [f"static let outputScale: Float = {_float(f.output_scale)}",
                      f"static let outputZeroPoint = {f.output_zero_point}"]
    if f.input_dtype == "FLOAT32":
        fill = ["var values = [Float]()",
                "values.reserveCapacity(Self.width * Self.height * 3)",
                "for pixel in 0..<(Self.width * Self.height) {",
                "    for channel in 0..<3 {",
                "        let value = Float(rgba[pixel * 4 + channel])",
                "        values.append((value - Self.mean[channel]) / Self.std[channel])",
                "    }",
                "}",
                "let input = values.withUnsafeBufferPointer { Data(buffer: $0) }"]
    elif f.camera_bytes:
        value = "rgba[pixel * 4 + channel]" if f.input_dtype == "UINT8" else \
            "UInt8(bitPattern: Int8(Int(rgba[pixel * 4 + channel]) - 128))"
        fill = [f"// Feed the camera's bytes as they are{' minus 128' if f.input_dtype == 'INT8' else ''}: this "
                "file's quantization equals its normalisation.",
                "var input = Data(capacity: Self.width * Self.height * 3)",
                "for pixel in 0..<(Self.width * Self.height) {",
                "    for channel in 0..<3 {",
                f"        input.append({value})",
                "    }",
                "}"]
    else:
        store = "UInt8(clamping: q)" if f.input_dtype == "UINT8" else "UInt8(bitPattern: Int8(clamping: q))"
        fill = ["var input = Data(capacity: Self.width * Self.height * 3)",
                "for pixel in 0..<(Self.width * Self.height) {",
                "    for channel in 0..<3 {",
                "        let x = (Float(rgba[pixel * 4 + channel]) - Self.mean[channel]) / Self.std[channel]",
                "        let q = Int((x / Self.inputScale).rounded()) + Self.inputZeroPoint",
                f"        input.append({store})",
                "    }",
                "}"]
    if f.output_dtype == "FLOAT32":
        scores = "let scores: [Float] = output.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }"
    elif f.output_dtype == "UINT8":
        scores = "let scores: [Float] = output.map { Self.outputScale * Float(Int($0) - Self.outputZeroPoint) }"
    else:
        scores = ("let scores: [Float] = output.map { Self.outputScale * Float(Int(Int8(bitPattern: $0)) - "
                  "Self.outputZeroPoint) }")
    lines = [
        f"// {f.type_name}.swift: {f.file}, {_input_summary(f)}, {_output_summary(f)}, labels in {f.labels_file} "
        "inside the file.",
        f"// Every number below was read from the file's metadata. {_feeding_note(f)}.",
        f"// CocoaPods: {SWIFT_POD} (or the TensorFlowLiteSwift Swift package)",
        "import CoreGraphics",
        "import CoreImage",
        "import CoreVideo",
        "import Foundation",
        "import TensorFlowLite",
        "",
        f"final class {f.type_name} {{",
        *[f"    {c}" for c in constants],
        "",
        "    struct Prediction {",
        "        let index: Int",
        "        let label: String",
        "        let score: Float",
        "    }",
        "",
        "    enum Failure: Error {",
        "        case missingModel, missingLabels, unreadableFrame",
        "    }",
        "",
        "    private let interpreter: Interpreter",
        "    private let frames = CIContext()",
        "    let labels: [String]",
        "",
        "    init() throws {",
        '        guard let path = Bundle.main.path(forResource: Self.modelName, ofType: "tflite") else {',
        "            throw Failure.missingModel",
        "        }",
        "        var options = Interpreter.Options()",
        "        options.threadCount = 4",
        "        interpreter = try Interpreter(modelPath: path, options: options)",
        "        try interpreter.allocateTensors()",
        "        labels = try Self.readLabels(Data(contentsOf: URL(fileURLWithPath: path)))",
        "        guard labels.count == Self.classes else { throw Failure.missingLabels }",
        "    }",
        "",
        "    /// The .tflite is also a zip archive (entries stored uncompressed): find the labels file in its directory.",
        "    static func readLabels(_ file: Data) throws -> [String] {",
        "        let bytes = [UInt8](file)",
        "        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }",
        "        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }",
        "        var end = bytes.count - 22  // the end-of-central-directory record",
        "        while end >= 0 && u32(end) != 0x0605_4b50 { end -= 1 }",
        "        guard end >= 0 else { throw Failure.missingLabels }",
        "        var entry = u32(end + 16)",
        "        for _ in 0..<u16(end + 10) {",
        "            let nameLength = u16(entry + 28)",
        "            let name = String(decoding: bytes[(entry + 46)..<(entry + 46 + nameLength)], as: UTF8.self)",
        "            if name == labelsFile {",
        "                let header = u32(entry + 42)",
        "                let start = header + 30 + u16(header + 26) + u16(header + 28)",
        "                let text = String(decoding: bytes[start..<(start + u32(entry + 20))], as: UTF8.self)",
        "                return text.split(separator: \"\\n\").map(String.init)",
        "            }",
        "            entry += 46 + nameLength + u16(entry + 30) + u16(entry + 32)",
        "        }",
        "        throw Failure.missingLabels",
        "    }",
        "",
        "    /// A camera frame (AVCaptureVideoDataOutput, kCVPixelFormatType_32BGRA), already upright.",
        "    func classify(_ frame: CVPixelBuffer) throws -> Prediction {",
        "        let image = CIImage(cvPixelBuffer: frame)",
        "        guard let picture = frames.createCGImage(image, from: image.extent) else { throw Failure.unreadableFrame }",
        "        return try classify(picture)",
        "    }",
        "",
        "    func classify(_ picture: CGImage) throws -> Prediction {",
        "        let rgba = Self.centreCrop(picture)",
        *[f"        {line}" for line in fill],
        "        try interpreter.copy(input, toInputAt: 0)",
        "        try interpreter.invoke()",
        "        let output = try interpreter.output(at: 0).data",
        f"        {scores}",
        "        let best = scores.indices.max { scores[$0] < scores[$1] }!",
        "        return Prediction(index: best, label: labels[best], score: scores[best])",
        "    }",
        "",
        "    /// Resize the shorter side to resizeShorterSide, keep the centre width x height, as RGBA bytes.",
        "    static func centreCrop(_ picture: CGImage) -> [UInt8] {",
        "        let scale = Double(resizeShorterSide) / Double(min(picture.width, picture.height))",
        "        let drawWidth = Double(picture.width) * scale",
        "        let drawHeight = Double(picture.height) * scale",
        "        var rgba = [UInt8](repeating: 0, count: width * height * 4)",
        "        rgba.withUnsafeMutableBytes { buffer in",
        "            guard let context = CGContext(data: buffer.baseAddress, width: width, height: height,",
        "                                          bitsPerComponent: 8, bytesPerRow: width * 4,",
        "                                          space: CGColorSpaceCreateDeviceRGB(),",
        "                                          bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return }",
        "            context.interpolationQuality = .medium",
        "            context.draw(picture, in: CGRect(x: (Double(width) - drawWidth) / 2, y: (Double(height) - drawHeight) / 2,",
        "                                             width: drawWidth, height: drawHeight))",
        "        }",
        "        return rgba",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def app_section(bundle: Path, files: list[str]) -> list[str]:
    """report.md's "In an app" section for the .tflite ``files`` of ``bundle`` (int8 first), each snippet generated
    from the file as written. A file whose metadata cannot be read gets its one-line reason instead."""
    if not files:
        return []
    lines = ["## In an app", "",
             "Generated from each file's own metadata (TFLite Metadata and edgekit's entry), so the numbers are the "
             "file's. Android Studio's ML Model Binding and MediaPipe's image classifier read the same metadata with "
             "no code. Each snippet is one source file whose names all live inside its class.", ""]
    for name in files:
        try:
            facts = read_app_facts(bundle / name)
        except EdgekitError as e:
            lines += [f"`{name}`: no snippet ({e}).", ""]
            continue
        lines += [f"### `{name}`: Android (Kotlin, `{facts.type_name}.kt`)", "", "```kotlin", kotlin_snippet(facts)
                  .rstrip("\n"), "```", "", f"### `{name}`: iOS (Swift, `{facts.type_name}.swift`)", "", "```swift",
                  swift_snippet(facts).rstrip("\n"), "```", ""]
    return lines
