"""Standard TFLite Metadata in a .tflite file: what Android Studio's ML Model Binding, the MediaPipe / LiteRT image
classifier task and the TFLite Task Library read, so that an app needs no code to know the input's normalisation and
the labels.

The file gets a ``TFLITE_METADATA`` entry (a ``ModelMetadata`` flatbuffer of the schema in
``tflite_metadata_schema.fbs``, written with the flatc-generated ``tflite_metadata_schema_generated``) and its labels as
an associated file: ``labels.txt`` stored (uncompressed) in a zip archive appended to the flatbuffer, exactly as the
schema's own populator does. The interpreter ignores the appended bytes; the readers open the file as a zip.

Written per file (each from its own input tensor):
- ``ModelMetadata``: name, description, version, author, licence, ``min_parser_version``;
- input ``TensorMetadata``: ``ImageProperties`` (RGB, the tensor's width and height), a ``NormalizationOptions``
  process unit and ``Stats`` (the range of the tensor's values);
- output ``TensorMetadata``: the labels as a ``TENSOR_AXIS_LABELS`` associated file, and ``Stats`` for a quantized output.

Quantized inputs. The schema says "quantized models share the same normalization parameters as their corresponding
float models": a reader normalises a pixel to (pixel - mean) / std, then quantizes it with the input tensor's scale and
zero point. So every file of a model carries the float model's mean and std, and ``camera_bytes_exact`` tells
whether that composition is the identity on the camera's bytes: for a uint8 input quantize((p - mean) / std) == p for
every byte p and channel, for an int8 input == p - 128. edgekit calibrates the input range so that this holds whenever
mean and std are the same for the three channels and the mean is a whole number (scale = 1 / std, zero point = mean;
quantize/calibration.py ``input_range``). It must hold for the no-code readers: MediaPipe and the Task Library feed a
uint8 input the raw bytes and skip the normalisation. When it does not hold (per-channel ImageNet mean/std, or mean
127.5), the input's description says so and the app snippet quantizes each pixel itself.

``edgekit``'s own metadata entry (exporters/tflite.py) is left untouched: this module writes a separate entry.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import tflite_metadata_schema_generated as meta
from .errors import EdgekitError
from .fileio import atomic_write_bytes
from .tflite_model import TFLiteModel, pack_model, schema, unpack_model

METADATA_NAME = "TFLITE_METADATA"  # the model-metadata entry name the schema's readers look up
METADATA_IDENTIFIER = b"M001"  # the schema's file_identifier
# The largest "Added in" version among the fields written here: all of them exist since the schema's first release.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same export gives the same bytes (and sha256)
_DTYPE_RANGE = {"UINT8": (0, 255), "INT8": (-128, 127)}
_CAMERA_OFFSET = {"UINT8": 0, "INT8": -128}  # a camera byte p is the quantized value p + offset


@dataclass(frozen=True)
class ModelFacts:
    """What a file says about itself that its tensors cannot: the caller's facts. The image size, the input and
    output types and their quantization are read from the model itself, so they cannot disagree with it."""

    name: str
    description: str
    version: str
    author: str
    license: str
    labels: tuple[str, ...]
    mean: tuple[float, ...]  # per channel (or one for all), pixel scale 0..255: x = (pixel - mean) / std
    std: tuple[float, ...]
    labels_file: str = LABELS_FILE
    # a model of several inputs or outputs: each output's task (classifier, dense, embedding), in order
    output_tasks: tuple[str, ...] = ()

    @classmethod
    def from_edgekit(cls, metadata: dict) -> "ModelFacts":
        """The facts of edgekit's own metadata entry (``exporters.common.edgekit_metadata``); ``author``, ``license``
        and ``version`` keys, when a caller adds them, win over the defaults."""
        p = metadata["preprocessing"]
        weights = metadata.get("weights") or {}
        producer = metadata.get("producer", "edgekit")
        labels = tuple(metadata.get("labels") or ())
        sha = weights.get("sha256")
        trained = "trained" if weights.get("trained") else "UNTRAINED (random)"
        return cls(
            name=metadata.get("variant") or metadata.get("model", "model"),
            description=(f"{metadata.get('model', 'image model')}, {len(labels)} classes, "
                         f"{trained} weights from {weights.get('source', 'unknown source')}; exported by {producer}. "
                         "Input: an RGB picture resized so that its shorter side is "
                         f"{p.get('resize_shorter_side', '?')} px, centre-cropped to {p.get('crop', '?')} px."),
            version=metadata.get("version") or (f"weights sha256 {sha[:16]}" if sha else "untrained"),
            author=metadata.get("author") or f"not recorded (exported by {producer})",
            license=metadata.get("license") or "not recorded: the licence of the weights applies",
            labels=labels, mean=_collapse(p["mean"]), std=_collapse(p["std"]),
            output_tasks=tuple((metadata.get("io") or {}).get("tasks") or ()))


def _collapse(values) -> tuple[float, ...]:
    """One value when all channels share it (as Google's files write it; every reader propagates it)."""
    values = tuple(float(v) for v in values)
    return values[:1] if len(set(values)) == 1 else values


def camera_bytes_exact(mean, std, dtype: str, scale: float | None, zero_point: int | None) -> bool:
    """True when quantizing (p - mean) / std with the input's ``scale`` and ``zero_point`` gives back every camera byte
    p (uint8) or p - 128 (int8) on every channel, computed in float32 as a phone does: then an app feeds the bytes
    as they are."""
    if dtype not in _DTYPE_RANGE or scale is None or zero_point is None:
        return False
    pixels = np.arange(256, dtype=np.float32)
    low, high = _DTYPE_RANGE[dtype]
    for m, s in zip(np.broadcast_to(np.float32(mean), (3,)), np.broadcast_to(np.float32(std), (3,))):
        x = (pixels - m) / s
        q = np.clip(np.round(x / np.float32(scale)) + zero_point, low, high)
        if not np.array_equal(q, pixels + _CAMERA_OFFSET[dtype]):
            return False
    return True


@dataclass
class _Edge:
    """The model's input or output tensor as the metadata needs it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int | None


def _edge(model, tensor_index: int) -> _Edge:
    tensor = model.subgraphs[0].tensors[tensor_index]
    dtype = {v: k for k, v in vars(schema().TensorType).items() if not k.startswith("_")}.get(tensor.type, "?")
    q = tensor.quantization
    scale = zero = None
    if q is not None and q.scale is not None and len(q.scale) == 1:
        scale = float(q.scale[0])
        zero = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
    name = tensor.name.decode(errors="replace") if isinstance(tensor.name, bytes) else (tensor.name or "")
    return _Edge(name, tuple(int(s) for s in tensor.shape), dtype, scale, zero)


def _stats(low, high) -> meta.StatsT:
    stats = meta.StatsT()
    stats.min, stats.max = [float(v) for v in low], [float(v) for v in high]
    return stats


def _input_metadata(edge: _Edge, facts: ModelFacts) -> meta.TensorMetadataT:
    tensor = meta.TensorMetadataT()
    tensor.name = edge.name
    size = f"{edge.shape[2]}x{edge.shape[1]}" if len(edge.shape) == 4 else "?"
    kind = "greyscale" if len(edge.shape) == 4 and edge.shape[3] == 1 else "RGB"
    tensor.description = f"{kind} picture, {size} pixels, {edge.dtype.lower()}."
    if len(edge.shape) == 4 and edge.shape[3] in (1, 3):
        image = meta.ImagePropertiesT()
        image.colorSpace = meta.ColorSpaceType.RGB if edge.shape[3] == 3 else meta.ColorSpaceType.GRAYSCALE
        image.defaultSize = meta.ImageSizeT()
        image.defaultSize.width, image.defaultSize.height = edge.shape[2], edge.shape[1]
        tensor.content = meta.ContentT()
        tensor.content.contentPropertiesType = meta.ContentProperties.ImageProperties
        tensor.content.contentProperties = image
    normalization = meta.NormalizationOptionsT()
    channels = edge.shape[3] if len(edge.shape) == 4 else 3
    mean, std = (facts.mean[:1], facts.std[:1]) if channels == 1 else (facts.mean, facts.std)
    normalization.mean, normalization.std = list(mean), list(std)
    unit = meta.ProcessUnitT()
    unit.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    unit.options = normalization
    tensor.processUnits = [unit]
    if edge.dtype in _DTYPE_RANGE:
        low, high = _DTYPE_RANGE[edge.dtype]
        tensor.stats = _stats([low], [high])
        if camera_bytes_exact(mean, std, edge.dtype, edge.scale, edge.zero_point):
            tensor.description += (" Feed the camera's bytes as they are" +
                                   (" minus 128." if edge.dtype == "INT8" else "."))
        else:
            tensor.description += (" Normalise each pixel to (pixel - mean) / std, then quantize it with the "
                                   "input's scale and zero point: the raw camera bytes are not this file's input.")
    else:
        tensor.stats = _stats([(0.0 - m) / s for m, s in zip(*np.broadcast_arrays(mean, std))],
                              [(255.0 - m) / s for m, s in zip(*np.broadcast_arrays(mean, std))])
    return tensor


def _output_metadata(edge: _Edge, facts: ModelFacts, task: str | None = None,
                     labelled: bool = True) -> tuple[meta.TensorMetadataT, dict[str, bytes]]:
    """An output's metadata; ``task`` (an output of a model of several) says whether it is class scores, and only
    the ``labelled`` one carries the labels."""
    tensor = meta.TensorMetadataT()
    tensor.name = edge.name
    classifier = len(edge.shape) == 2 if task is None else task == "classifier"
    tensor.description = ("Scores of the classes (logits: the larger, the likelier; no softmax applied)." if classifier
                          else "An embedding: compare two by their distance." if task == "embedding"
                          else f"Model output, shape {list(edge.shape)}.")
    tensor.content = meta.ContentT()
    tensor.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    tensor.content.contentProperties = meta.FeaturePropertiesT()
    if edge.dtype in _DTYPE_RANGE:
        low, high = _DTYPE_RANGE[edge.dtype]
        tensor.stats = _stats([low], [high])
    files: dict[str, bytes] = {}
    if facts.labels and classifier and labelled and edge.shape[1] == len(facts.labels):
        labels = meta.AssociatedFileT()
        labels.name = facts.labels_file
        labels.description = "Class names, one per line, in the order of the output's scores."
        labels.type = meta.AssociatedFileType.TENSOR_AXIS_LABELS
        tensor.associatedFiles = [labels]
        files[facts.labels_file] = ("\n".join(facts.labels) + "\n").encode("utf-8")
    return tensor, files


def set_standard_metadata(model, facts: ModelFacts) -> dict[str, bytes]:
    """Set the ``TFLITE_METADATA`` entry of ``model`` (an unpacked ``ModelT``, see ``tflite_model.unpack_model``) to
    ``facts``, replacing an earlier one and keeping every other entry. Returns the associated files to append
    after packing: ``append_associated_files(pack_model(model), files)``. For a caller that already holds the
    unpacked model; ``add_standard_metadata`` does the whole round trip on bytes."""
    if any("\n" in label for label in facts.labels):
        raise EdgekitError("a label holds a line break; labels.txt has one class name per line")
    graph = model.subgraphs[0]
    model_meta = meta.ModelMetadataT()
    model_meta.name, model_meta.description, model_meta.version = facts.name, facts.description, facts.version
    model_meta.author, model_meta.license = facts.author, facts.license
    model_meta.minParserVersion = MIN_PARSER_VERSION
    subgraph = meta.SubGraphMetadataT()
    subgraph.name = "image_classifier"
    files: dict[str, bytes] = {}
    if len(graph.inputs) == 1 and len(graph.outputs) == 1:  # one picture in, one score vector out
        subgraph.inputTensorMetadata = [_input_metadata(_edge(model, graph.inputs[0]), facts)]
        output, files = _output_metadata(_edge(model, graph.outputs[0]), facts)
        subgraph.outputTensorMetadata = [output]
    elif facts.output_tasks and len(graph.outputs) == len(facts.output_tasks):
        # a model of several inputs or outputs: every input a picture, labels on the first classifier output only
        subgraph.inputTensorMetadata = [_input_metadata(_edge(model, i), facts) for i in graph.inputs]
        labelled = facts.output_tasks.index("classifier") if "classifier" in facts.output_tasks else None
        subgraph.outputTensorMetadata = []
        for k, (index, task) in enumerate(zip(graph.outputs, facts.output_tasks)):
            output, found = _output_metadata(_edge(model, index), facts, task, labelled=k == labelled)
            subgraph.outputTensorMetadata.append(output)
            files |= found
    model_meta.subgraphMetadata = [subgraph]
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model_meta.Pack(builder), file_identifier=METADATA_IDENTIFIER)
    payload = np.frombuffer(bytes(builder.Output()), dtype=np.uint8)
    tfl = schema()
    model.metadata = model.metadata or []
    entry = next((m for m in model.metadata if _text(m.name) == METADATA_NAME), None)
    if entry is None:
        model.buffers.append(tfl.BufferT())
        entry = tfl.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata.append(entry)
    model.buffers[entry.buffer].data = payload
    return files


def append_associated_files(flat: bytes, files: dict[str, bytes]) -> bytes:
    """``flat`` (a packed flatbuffer, with nothing appended) followed by a zip archive of ``files``, stored
    uncompressed: the layout the metadata readers open (they refuse compressed entries)."""
    if not files:
        return flat
    out = io.BytesIO()
    out.write(flat)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def add_standard_metadata(flat: bytes, facts: ModelFacts) -> bytes:
    """``flat`` (a .tflite file's bytes, with or without associated files appended) with standard metadata for
    ``facts`` and its labels appended. Earlier associated files are dropped: the labels are written again."""
    model = unpack_model(flat)
    files = set_standard_metadata(model, facts)
    return append_associated_files(pack_model(model), files)


def write_standard_metadata(path: str | Path, facts: ModelFacts) -> None:
    """Add standard metadata to the .tflite file at ``path`` in place (temp file, then rename)."""
    path = Path(path)
    atomic_write_bytes(path, add_standard_metadata(_read(path), facts))


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise EdgekitError(f"model file {path} does not exist; check the path")
    return path.read_bytes()


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else (value or "")


@dataclass
class StandardMetadata:
    """A file's standard metadata as read back, with the input and output tensors' own type and quantization."""

    name: str
    description: str
    version: str
    author: str
    license: str
    min_parser_version: str
    width: int | None
    height: int | None
    color_space: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None  # (min, max)
    input_name: str
    input_dtype: str  # FLOAT32, UINT8, INT8
    input_scale: float | None
    input_zero_point: int | None
    output_name: str
    output_dtype: str
    output_scale: float | None
    output_zero_point: int | None
    classes: int
    labels_file: str | None
    labels: tuple[str, ...]

    @property
    def camera_bytes(self) -> bool:
        """The app feeds the camera's bytes as they are (uint8), or minus 128 (int8)."""
        return camera_bytes_exact(self.mean, self.std, self.input_dtype, self.input_scale, self.input_zero_point)


def read_standard_metadata(source: bytes | str | Path, name: str = "<bytes>") -> StandardMetadata | None:
    """The standard metadata of a .tflite file (path or bytes), or None when it has none. The labels come from the
    associated file inside the file's zip archive."""
    if isinstance(source, (str, Path)):
        name, source = str(source), _read(Path(source))
    graph = TFLiteModel(source, name)
    raw = graph.metadata.get(METADATA_NAME)
    if not raw:
        return None
    try:
        if not meta.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
            raise ValueError("identifier")
        root = meta.ModelMetadataT.InitFromPackedBuf(bytearray(raw), 0)
    except Exception:  # a damaged flatbuffer fails anywhere inside the generated code
        raise EdgekitError(f"{name}: its {METADATA_NAME} entry is not TFLite Metadata; export the file again") from None
    sub = (root.subgraphMetadata or [None])[0]
    inputs = (sub.inputTensorMetadata or []) if sub else []
    outputs = (sub.outputTensorMetadata or []) if sub else []
    mean = std = ()
    width = height = color = stats = None
    if inputs:
        for unit in inputs[0].processUnits or []:
            if unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions:
                mean, std = tuple(float(v) for v in unit.options.mean), tuple(float(v) for v in unit.options.std)
        content = inputs[0].content
        if content is not None and content.contentPropertiesType == meta.ContentProperties.ImageProperties:
            props = content.contentProperties
            color = {v: k for k, v in vars(meta.ColorSpaceType).items() if not k.startswith("_")}.get(props.colorSpace)
            if props.defaultSize is not None:
                width, height = int(props.defaultSize.width), int(props.defaultSize.height)
        if inputs[0].stats is not None:
            stats = (tuple(float(v) for v in inputs[0].stats.min), tuple(float(v) for v in inputs[0].stats.max))
    labels_file, labels = None, ()
    for entry in (outputs[0].associatedFiles or []) if outputs else []:
        if entry.type == meta.AssociatedFileType.TENSOR_AXIS_LABELS:
            labels_file = _text(entry.name)
            labels = _associated_file(source, labels_file, name).decode("utf-8").splitlines()
            break
    (tin,), (tout,) = graph.input_tensors()[:1], graph.output_tensors()[:1]
    if color is not None and width is None and len(tin.shape) == 4:  # default_size is optional for a fixed size
        width, height = tin.shape[2], tin.shape[1]

    def quant(t):
        if t.quantization is None or t.quantization.per_channel:
            return None, None
        zero = t.quantization.zero_point
        return float(t.quantization.scale[0]), int(zero[0]) if zero.size else 0

    return StandardMetadata(
        _text(root.name), _text(root.description), _text(root.version), _text(root.author), _text(root.license),
        _text(root.minParserVersion), width, height, color, mean, std, stats, tin.name, tin.dtype, *quant(tin),
        tout.name, tout.dtype, *quant(tout), int(tout.shape[-1]) if tout.shape else 0, labels_file,
        tuple(line for line in labels if line))


def _associated_file(flat: bytes, file_name: str, source: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(flat)) as archive:
            return archive.read(file_name)
    except (zipfile.BadZipFile, KeyError):
        raise EdgekitError(f"{source}: its metadata names the associated file {file_name}, which the file does not "
                           "hold; export the file again") from None
