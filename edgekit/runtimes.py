"""Run any exported file on the same NCHW float32 inputs the PyTorch model takes.

Each runner hides its format's conventions: NHWC layout, integer input and output tensors (quantized with
the file's own scale and zero point), fixed batch size. Parity, validate and eval all call these, so a
figure never depends on which command produced it. Imports only numpy and the runtime: no PyTorch for .onnx and
.tflite files (ExecuTorch's Python runtime takes torch tensors, so a .pte file brings torch in).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .capture import captured_output
from .console import warn
from .devices.runner import executorch_runtime  # without the compiler: 5 s of 7 s of imports
from .errors import EdgekitError
from .formats import FORMATS, SUFFIXES, format_of


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, as a phone app has to feed or read it."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy name: float32, int8, uint8
    layout: str  # NCHW, NHWC, NC
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}


def _layout(shape) -> str:
    if len(shape) == 4:
        return "NHWC" if shape[-1] == 3 else "NCHW"
    return "NC" if len(shape) == 2 else "?"


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


# What LiteRT prints on stderr when the first interpreter of a process applies XNNPACK: a notice, not news
_LITERT_NOTICES = ("INFO: Created TensorFlow Lite XNNPACK delegate",)


# What ExecuTorch prints when it loads: its native code's CPU feature reads and thread pool size, and torchao's
# notices about CUDA-only kernels and a deprecated pytree registration (torchao comes in with executorch)
_EXECUTORCH_NOTICES = ("[cpuinfo_utils.cpp", "[threadpool.cpp", "[XNNPACKBackend.cpp", "torchao/_C", "_pytree.py")


def _said(log: list[str]) -> list[str]:
    return [line.strip() for line in log if line.strip() and not line.startswith(_LITERT_NOTICES)]


class TFLiteRunner:
    """``reference=True``: LiteRT's reference kernels (plain C++, no XNNPACK, no CPU-specific code), the
    arithmetic the TFLite spec defines, against which the host's optimised kernels are checked."""

    REFERENCE_PATH = "LiteRT reference kernels"
    HOST_KERNELS = "LiteRT's XNNPACK kernels"
    # why the two can differ on any CPU; XNNPACK widens 8-bit products to 32-bit sums, so never saturation
    KERNEL_DIFFERENCE = ("XNNPACK requantizes in float and the reference kernels in fixed point, so a layer's "
                         "result can differ by a rounding step (not saturation: XNNPACK sums 8-bit products in 32 bits)")
    SATURATES_WITHOUT_DOT_PRODUCT = False

    def __init__(self, path: Path, threads: int | None = None, reference: bool = False):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path = path
        resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
        # Native code writes straight to fd 2, past Python: only the load is captured, so validate and eval
        # print their tables without LiteRT's delegate notice, and anything else it says is passed on.
        try:
            with captured_output() as log:
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads,
                                               experimental_op_resolver_type=resolver)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            message = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            # the exception's first line, then the last lines LiteRT printed (kernel errors go there)
            reason = "; ".join(dict.fromkeys([message] + _said(log)[-2:]))
            raise EdgekitError(f"LiteRT cannot load {path} ({reason[:400]}); the file is corrupt or not a TFLite "
                               "model") from None
        for line in _said(log):  # what LiteRT said beyond its usual notice: passed on, under the user's control
            warn(f"LiteRT: {line}")
        self._inputs = self.interpreter.get_input_details()
        self._input = self._inputs[0]
        self._outputs = self.interpreter.get_output_details()
        self.inputs = [self._spec(d) for d in self._inputs]
        self.outputs = [self._spec(d) for d in self._outputs]

    @staticmethod
    def _spec(detail) -> TensorSpec:
        scale, zero_point = detail["quantization"]
        quantized = np.dtype(detail["dtype"]).kind in "iu" and scale != 0.0
        shape = tuple(int(s) for s in detail["shape"])
        layout = "NHWC" if len(shape) == 4 else _layout(shape)  # TFLite computes channels-last: every 4-D tensor
        return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name, layout,
                          float(scale) if quantized else None, int(zero_point) if quantized else None)

    def __call__(self, x_nchw: np.ndarray) -> np.ndarray:
        return self.run([x_nchw])[0]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Every input (NCHW float32, in the file's input order) -> every output, float32 [N, values] each, a
        per-pixel output in the reference's NCHW order."""
        check_input_count(self.path, len(inputs), len(self.inputs))
        feeds = [np.moveaxis(x, 1, -1) if spec.layout == "NHWC" else x for x, spec in zip(inputs, self.inputs)]
        results: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for i in range(len(feeds[0])):  # TFLite models are exported with batch 1
            try:
                for x, spec, detail in zip(feeds, self.inputs, self._inputs):
                    sample = x[i][None]
                    if spec.scale is not None:
                        sample = quantize(sample, spec.scale, spec.zero_point, np.dtype(spec.dtype))
                    self.interpreter.set_tensor(detail["index"], sample.astype(spec.dtype, copy=False))
                self.interpreter.invoke()
                outs = [self.interpreter.get_tensor(detail["index"]) for detail in self._outputs]
            except (ValueError, RuntimeError) as e:  # a file that loads but cannot run (a damaged graph)
                raise EdgekitError(f"LiteRT cannot run {self.path} ({_first_line(e)}); the file is corrupt or not "
                                   "a model edgekit can run") from None
            for out, out_spec, collected in zip(outs, self.outputs, results):
                if out_spec.scale is not None:
                    out = dequantize(out, out_spec.scale, out_spec.zero_point)
                if out_spec.layout == "NHWC":  # a per-pixel output, back to the reference's NCHW order
                    out = np.moveaxis(out, -1, 1)
                collected.append(out.astype(np.float32).reshape(1, -1))
        return [np.concatenate(collected) for collected in results]


def check_input_count(path: Path, given: int, takes: int,
                      fix: str = "a model of several inputs is checked on its bundle with `edgekit validate`") -> None:
    if given != takes:
        raise EdgekitError(f"{path.name} takes {takes} input{'s' * (takes != 1)}, {given} given; {fix}")


class OnnxRunner:
    """``reference=True``: graph optimizations off, so a QDQ file's DequantizeLinear -> float op ->
    QuantizeLinear runs as written, in float: the quantized model's arithmetic without the host's integer
    kernels (which on x86 without VNNI saturate: ``edgekit.quantize.onnx_saturation``)."""

    REFERENCE_PATH = "ORT float QDQ (optimizations off)"
    HOST_KERNELS = "ONNX Runtime's int8 kernels"
    KERNEL_DIFFERENCE = ("ONNX Runtime's kernels round each layer's requantization themselves, so a layer's result "
                         "can differ by a rounding step")
    SATURATES_WITHOUT_DOT_PRODUCT = True  # its x86 u8s8 kernels add pairs of 8-bit products in 16 bits

    def __init__(self, path: Path, threads: int | None = None, reference: bool = False):
        import onnxruntime as ort

        self.path = path
        options = ort.SessionOptions()
        if reference:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception classes for bad files
            raise EdgekitError(f"ONNX Runtime cannot load {path} ({str(e).splitlines()[0][:160]}); the file is "
                               "corrupt or not an ONNX model") from None
        type_names = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
                      "tensor(float16)": "float16"}
        self.inputs = [TensorSpec(i.name, tuple(i.shape), type_names.get(i.type, i.type), _layout(i.shape))
                       for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(o.shape), type_names.get(o.type, o.type), _layout(o.shape))
                        for o in self.session.get_outputs()]
        self._fixed_batch = isinstance(self.inputs[0].shape[0], int)

    def __call__(self, x_nchw: np.ndarray) -> np.ndarray:
        return self._outputs([x_nchw])[0]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Every input (NCHW float32, in the graph's input order) -> every output, float32 [N, values] each."""
        return [out.reshape(len(out), -1) for out in self._outputs(inputs)]

    def _outputs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Every output as the graph gives it (a per-pixel output keeps its NCHW shape), float32."""
        check_input_count(self.path, len(inputs), len(self.inputs))
        feeds = [x.astype(spec.dtype, copy=False) for x, spec in zip(inputs, self.inputs)]
        names = [spec.name for spec in self.inputs]
        try:
            if self._fixed_batch:
                runs = [self.session.run(None, {n: x[i][None] for n, x in zip(names, feeds)})
                        for i in range(len(feeds[0]))]
                outputs = [np.concatenate([run[k] for run in runs]) for k in range(len(self.outputs))]
            else:
                outputs = self.session.run(None, dict(zip(names, feeds)))
        except Exception as e:  # ORT's own exception classes: a file that loads but cannot run
            raise EdgekitError(f"ONNX Runtime cannot run {self.path} ({_first_line(e)}); the file is corrupt or not "
                               "a model edgekit can run") from None
        return [np.asarray(out, dtype=np.float32) for out in outputs]


PTE_METADATA_METHOD = "edgekit_metadata"  # a .pte program's constant method holding edgekit's metadata (JSON bytes)


def program_metadata(program) -> dict:
    """edgekit's metadata from a loaded ExecuTorch program's constant method; {} for a program without it."""
    if PTE_METADATA_METHOD not in program.method_names:
        return {}
    (payload,) = program.load_method(PTE_METADATA_METHOD).execute([])
    return json.loads(bytes(payload.numpy().astype(np.uint8)).decode("utf-8"))


class PteRunner:
    """An ExecuTorch program (.pte) in ExecuTorch's Python runtime, with the kernels it was lowered to (XNNPACK for
    the files edgekit writes). The delegate's compiled blob has no portable twin, so there is no reference path:
    ``reference=True`` is refused and parity reports no kernel split for .pte files."""

    REFERENCE_PATH = None
    HOST_KERNELS = "ExecuTorch's XNNPACK kernels"

    def __init__(self, path: Path, threads: int | None = None, reference: bool = False):
        if reference:
            raise EdgekitError(f"{path.name}: an ExecuTorch program has no reference path to run on")
        format_of(path).require()
        self.path = path
        try:
            # native code says where it read the CPU's features and how many threads it uses: notices, captured
            with captured_output() as log, warnings.catch_warnings():
                # its bindings announce themselves as an ExperimentalWarning on import: a notice, not news
                warnings.simplefilter("ignore")
                import torch  # ExecuTorch's Python runtime takes and returns torch tensors

                portable_lib, Runtime = executorch_runtime()

                if threads:
                    # the only thread knob its Python API has (private: extension/pybindings/pybindings.pyi in
                    # github.com/pytorch/executorch/blob/v1.5.1; tests/test_dependencies.py pins the version)
                    portable_lib._unsafe_reset_threadpool(threads)
                program = Runtime.get().load_program(Path(path))
                self.method = program.load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError/ValueError with its error code
            reason = "; ".join(dict.fromkeys([_first_line(e)] + _said(log)[-2:]))
            raise EdgekitError(f"ExecuTorch cannot load {path} ({reason[:300]}); the file is corrupt or not an "
                               "ExecuTorch program") from None
        self._torch = torch
        for line in _said(log):
            if not any(notice in line for notice in _EXECUTORCH_NOTICES):
                warn(f"ExecuTorch: {line}")
        meta = self.method.metadata
        # a program keeps no tensor names: those edgekit's metadata records for a model of several inputs or
        # outputs, else the first input and output get the names every edgekit file uses
        try:
            io = program_metadata(program).get("io") or {}
        except Exception:  # noqa: BLE001 - unreadable metadata only costs the names
            io = {}
        inputs = io.get("inputs") or ["image"]
        outputs = io.get("outputs") or ["logits"]
        self.inputs = [self._spec(inputs[i] if i < len(inputs) else f"input_{i}", meta.input_tensor_meta(i))
                       for i in range(meta.num_inputs())]
        self.outputs = [self._spec(outputs[i] if i < len(outputs) else f"output_{i}", meta.output_tensor_meta(i))
                        for i in range(meta.num_outputs())]

    _DTYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32"}  # c10 ScalarType codes

    @classmethod
    def _spec(cls, name: str, meta) -> TensorSpec:
        shape = tuple(int(s) for s in meta.sizes())
        return TensorSpec(name, shape, cls._DTYPES.get(int(meta.dtype()), str(meta.dtype())), _layout(shape))

    def __call__(self, x_nchw: np.ndarray) -> np.ndarray:
        return self.run([x_nchw])[0]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Every input (NCHW float32, in the program's input order) -> every output, float32 [N, values] each."""
        check_input_count(self.path, len(inputs), len(self.inputs))
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for i in range(len(inputs[0])):  # programs are exported with batch 1
            feeds = [self._torch.from_numpy(np.ascontiguousarray(x[i][None].astype(np.float32))) for x in inputs]
            try:
                outs = self.method.execute(feeds)
            except Exception as e:  # the runtime's own errors: a program that loads but cannot run
                raise EdgekitError(f"ExecuTorch cannot run {self.path} ({_first_line(e)}); the file is corrupt or "
                                   "not a model edgekit can run") from None
            for out, collected in zip(outs, results):
                collected.append(out.numpy().astype(np.float32).reshape(1, -1))
        return [np.concatenate(collected) for collected in results]


# The runner of each registered format (edgekit.formats); a format without one cannot be run
_RUNNERS = {"onnx": OnnxRunner, "tflite": TFLiteRunner, "pte": PteRunner}
# The portable path each runtime can compute an int8 file on, by file suffix (formats without one are absent)
REFERENCE_PATHS = {FORMATS[name].suffix: runner.REFERENCE_PATH for name, runner in _RUNNERS.items()
                   if runner.REFERENCE_PATH}


def runner_class(path: str | Path):
    """The runner class for ``path``'s format, or None for a file edgekit does not run."""
    found = format_of(path)
    return _RUNNERS.get(found.name) if found else None


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)[:200]


def open_runtime(path: str | Path, threads: int | None = None, reference: bool = False):
    """A callable that maps NCHW float32 inputs to float32 outputs, whatever the file's format; ``reference``
    computes with the runtime's portable reference path instead of the host's optimised kernels."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"model file {path} does not exist; check the path")
    runner = runner_class(path)
    if runner is None:
        raise EdgekitError(f"unsupported model file {path.name}: edgekit runs {', '.join(SUFFIXES)} files")
    return runner(path, threads, reference)
