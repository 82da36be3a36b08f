"""PyTorch -> ExecuTorch (.pte) with the XNNPACK delegate: PyTorch's own on-device runtime for Android and iOS.

fp32: ``torch.export`` -> ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` -> ``to_executorch``. int8:
PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer`` (int8 per-channel symmetric weights, int8
per-tensor activations), calibrated on the same pictures as the other formats, then the same lowering: XNNPACK
runs the quantized graph with its int8 kernels. Input NCHW float32 ``[1, 3, H, W]`` (the int8 file quantizes
inside), output float32 logits; a model of several inputs or outputs (``edgekit_io``) takes each input so, in
forward()'s order, and returns every output in order (their names travel in the metadata's ``io``).

edgekit's metadata (the same JSON every format carries) is a constant method of the program, ``edgekit_metadata``,
returning the UTF-8 bytes as a uint8 tensor: ExecuTorch has no free-form metadata section, and a constant method
is written with the program, once. The census is the delegation: how many of the graph's operators XNNPACK took,
counted by ExecuTorch's own ``get_delegation_info``.

Where export time goes (MobileNet v2, AMD EPYC Zen 3 with AVX2, 2 cores shared with other jobs;
benchmarks/results/executorch_format.md, each export's manifest records its phases): ``import executorch`` takes
10-17 s once per process; ``torch.export`` 2-4 s; ``to_edge_transform_and_lower`` is the rest, 26-38 s for fp32
(the first lowering in a process added 5-10 s building XNNPACK's upsample and attention pattern graphs; edgekit
skips the patterns a program cannot match: _without_unmatchable_patterns) and ~60 s for int8. A profile of the
int8 lowering: ATen decompositions into the edge dialect (three ``run_decompositions``) ~45%, the XNNPACK
back-end's graph passes ~40% (each re-traces the whole graph with fake tensors), the edge dialect's dtype
verifier ~7%. Cut here: the int8 calibration uses min/max observers instead
of the quantizer's default histogram observers and runs 16 pictures per call (MobileNet v1 0.25 int8 export: 152 s
before, 66 s after, on the shared cores); the lowering itself has no public switch to skip passes that cannot
apply to a CNN, and the verifier's switch is private (``EdgeCompileConfig._check_ir_validity``).
"""

from __future__ import annotations

import importlib
import json
import operator
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..capture import captured_output, one_line
from ..errors import EdgekitError
from ..formats import get_format
from ..quantize.calibration import input_range
from ..quantize.weight_grid import INT8_LEVELS, GridSummary, channel_steps
from ..runtimes import PTE_METADATA_METHOD, executorch_runtime, program_metadata
from .backend import FormatBackend
from .common import sample_inputs

CONVERTER = "torch.export + ExecuTorch XNNPACK delegate"
CALIBRATION_METHOD = "minmax"  # min/max observers (_quantizer), as the ONNX and TFLite files


def _lower_and_write(exported, out: Path, metadata: dict, seconds: dict) -> dict:
    """Lower an exported program to XNNPACK, write it to ``out`` with the metadata method; return the census.
    ``seconds`` gets the time of each phase."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    payload = torch.tensor(list(json.dumps(metadata, separators=(",", ":")).encode("utf-8")), dtype=torch.uint8)
    with _timed(seconds, "lower"), _without_unmatchable_patterns(exported):
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                           constant_methods={PTE_METADATA_METHOD: payload})
    delegation = _delegation(get_delegation_info(edge.exported_program().graph_module))
    with _timed(seconds, "serialize"):
        Path(out).write_bytes(edge.to_executorch().buffer)  # the caller's temporary path: renamed once whole
    return delegation


# XNNPACK's lowering looks for bilinear upsampling and attention by matching pattern graphs that it builds on first
# use in each process, with a torch.export and to_edge of its own per pattern (MobileNet v1 0.25 fp32, the first
# lowering in its process: 9.9-12.4 s with them, 5.1-5.3 s without; AMD EPYC Zen 3). Each pattern holds its marker
# operator (measured, ExecuTorch 1.5: the bilinear ones are upsample_bilinear2d itself, the attention ones hold
# _softmax and bmm), so a program without that operator has nothing they could match.
_PATTERN_BUILDERS = {  # module, function that builds the patterns, what it returns when there are none, markers
    "bilinear upsampling": ("executorch.backends.xnnpack.partition.graphs.bilinear_2d", "get_graphs_dict", dict,
                            ("upsample",)),
    "attention": ("executorch.backends.xnnpack.partition.graphs.sdpa", "get_graphs", list, ("softmax", "attention")),
}


def _operator_names(exported) -> set[str] | None:
    """Every operator the program calls, by name; None when it calls something that is not a plain ATen operator
    (a higher-order operator, a Python function): what that becomes after decomposition is not known here."""
    import torch

    names = set()
    for module in exported.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
            if node.op != "call_function":
                continue
            if isinstance(node.target, torch._ops.OpOverload):
                names.add(str(node.target))
            elif getattr(operator, getattr(node.target, "__name__", ""), None) is not node.target:
                return None
    return names


@contextmanager
def _without_unmatchable_patterns(exported):
    """Lower without building the pattern graphs that cannot match ``exported`` (see _PATTERN_BUILDERS); where in
    doubt, or when ExecuTorch moved them, the lowering builds them as always. A pattern skipped wrongly could only
    cost XNNPACK a fused operator, never a wrong result: the passes swap a matched subgraph for its equivalent."""
    names = _operator_names(exported)
    replaced = []
    for module_name, function, empty, markers in _PATTERN_BUILDERS.values():
        if names is None or any(marker in name for name in names for marker in markers):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if callable(getattr(module, function, None)):
            replaced.append((module, function, getattr(module, function)))
            setattr(module, function, empty)
    try:
        yield
    finally:
        for module, function, original in replaced:
            setattr(module, function, original)


@contextmanager
def _timed(seconds: dict, phase: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = round(seconds.get(phase, 0.0) + time.perf_counter() - started, 2)


def _delegation(info) -> dict:
    """The share of the graph XNNPACK runs: operators delegated, operators left to ExecuTorch's portable kernels."""
    delegated, left = int(info.num_delegated_nodes), int(info.num_non_delegated_nodes)
    by_op = {op: {"delegated": b.delegated, "not_delegated": b.non_delegated}
             for op, b in sorted(info.delegation_by_operator.items())}
    return {"backend": "XnnpackBackend", "delegated_subgraphs": int(info.num_delegated_subgraphs),
            "operators_delegated": delegated, "operators_not_delegated": left,
            "share_delegated": round(delegated / (delegated + left), 4) if delegated + left else 0.0,
            "not_delegated": {op: b["not_delegated"] for op, b in by_op.items() if b["not_delegated"]},
            "by_operator": by_op}


@contextmanager
def _converting(what: str):
    """The libraries' notices (torchao's CUDA-only kernels, pytree deprecations, FutureWarnings) stay off the
    console; what they printed goes into the one-line error when the conversion fails."""
    log: list[str] = []
    try:
        with captured_output() as log, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except EdgekitError:
        raise
    except Exception as e:  # torch.export, the quantizer and the lowering raise many exception types
        raise EdgekitError(f"ExecuTorch {what} failed: {one_line(e, log)}; the model uses something torch.export "
                           "or XNNPACK cannot take (try --formats onnx,tflite)") from None


def torch_to_pte(model, out: Path, *, resolution: int, metadata: dict) -> dict:
    """Write ``out`` from an export-ready ``model``: fp32, delegated to XNNPACK."""
    seconds: dict[str, float] = {}
    with _converting("export"):
        with _timed(seconds, "import"):  # timed apart: the first import in a process costs seconds
            import torch
            from executorch import exir

            del exir

        with _timed(seconds, "torch.export"):
            exported = torch.export.export(model, sample_inputs(model, resolution))
        delegation = _lower_and_write(exported, out, metadata, seconds)
    return {"converter": CONVERTER, "delegation": delegation, "operators": _operators(delegation), "seconds": seconds}


CALIBRATION_BATCH = 16


def quantize_pte(model, out: Path, calibration, *, resolution: int, metadata: dict) -> dict:
    """Write ``out``: ``model`` quantized with XNNPACKQuantizer (PT2E, static, per-channel weights), its activation
    ranges observed on ``calibration``'s pictures (input K of a model of several: the pictures shifted by K),
    lowered to XNNPACK."""
    seconds: dict[str, float] = {}
    with _converting("int8 quantization"):
        with _timed(seconds, "import"):
            import torch
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        sample = sample_inputs(model, resolution)
        with _timed(seconds, "prepare"):
            observed, batch = _observable(model, resolution)
            untied = _untie_shared_weights(observed)
            prepared = prepare_pt2e(observed, _quantizer())
        arrays = calibration.inputs(len(sample))
        with _timed(seconds, "calibrate"), torch.no_grad():
            for start in range(0, len(arrays[0]), batch):
                prepared(*(torch.from_numpy(np.ascontiguousarray(x[start:start + batch])) for x in arrays))
        _observe_full_input_range(prepared, input_range(calibration))
        clamped = _clamp_to_activations(prepared)
        grid = _keep_weight_grid(prepared)
        with _timed(seconds, "convert"):
            quantized = convert_pt2e(prepared)
        with _timed(seconds, "torch.export"):
            exported = torch.export.export(quantized, sample)
        delegation = _lower_and_write(exported, out, metadata, seconds)
    return {"converter": CONVERTER, "calibration_method": CALIBRATION_METHOD,
            "weights": "int8 per-channel symmetric", "activations": "int8 per-tensor",
            "quantizer": "XNNPACKQuantizer (PT2E, static)", "activation_ranges_clamped": clamped,
            "shared_weights_untied": untied, "weights_on_source_grid": grid.to_dict(),
            "delegation": delegation, "operators": _operators(delegation), "seconds": seconds}


def _observable(model, resolution: int):
    """The graph PT2E observes, and the batch it takes: exported with a dynamic batch so that calibration runs
    CALIBRATION_BATCH pictures per call (one per call was most of the int8 time); a model whose graph fixes its
    batch is exported for batch 1."""
    import torch

    try:
        batch_dim = torch.export.Dim("batch", min=1, max=CALIBRATION_BATCH)
        pair = sample_inputs(model, resolution, batch=2)
        program = torch.export.export(model, pair, dynamic_shapes=tuple({0: batch_dim} for _ in pair))
        return program.module(), CALIBRATION_BATCH
    except Exception:  # noqa: BLE001 - torch.export refuses the dynamic batch: calibrate one picture at a time
        return torch.export.export(model, sample_inputs(model, resolution)).module(), 1


def _untie_shared_weights(graph_module) -> int:
    """Give each further use of a weight that several operators share (a Siamese pair's one backbone applied to
    both pictures) its own copy, in ``graph_module`` (a graph PT2E will observe); returns how many copies were made.

    XNNPACK cannot compile a quantized weight feeding two operators (measured with ExecuTorch 1.5.1: the lowered
    program fails to load, ``XNNCompiler::compileModel failed: 0x1``); with a copy each, every use is quantized
    alike (the same values give the same per-channel scales). The int8 file then holds the weights once per use."""
    copies = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "get_attr" or len(node.users) < 2:
            continue
        value = _attribute(graph_module, node.target)
        for use, user in enumerate(list(node.users)[1:], start=1):
            name = f"{node.target.replace('.', '_')}_use{use}"
            graph_module.register_buffer(name, value.detach().clone())
            with graph_module.graph.inserting_before(user):
                copy = graph_module.graph.get_attr(name)
            copy.meta = dict(node.meta)  # the quantizer reads the weight's shape from its fake value
            user.replace_input_with(node, copy)
            copies += 1
    if copies:
        graph_module.recompile()
    return copies


def _attribute(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


# the smallest scale an observer may give; XNNPACK's config uses 2**-12 (get_symmetric_quantization_config in
# github.com/pytorch/executorch/blob/v1.5.1/backends/xnnpack/quantizer/xnnpack_quantizer.py)
_EPS = 2.0 ** -24


def _quantizer():
    """XNNPACKQuantizer's static per-channel config with min/max activation observers instead of its default
    HistogramObserver: the ranges ONNX Runtime's and ai-edge-quantizer's MinMax calibration set, so the three
    int8 files are calibrated alike (and the histogram search was most of the int8 export time)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torchao.quantization.pt2e import MinMaxObserver, PerChannelMinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    activations = replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=_EPS))
    # its weight scales have a floor of 2**-12, which rounds a channel whose weights stay below 0.03 (depthwise
    # channels of small MobileNets) to a handful of levels; any positive floor keeps an all-zero channel finite
    weights = replace(config.weight, observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=_EPS))
    return XNNPACKQuantizer().set_global(replace(config, input_activation=activations,
                                                 output_activation=activations, weight=weights))


def _observers(prepared, node):
    """The observer modules that watch ``node``'s output directly (PT2E inserts them as call_module nodes)."""
    return [(user, getattr(prepared, str(user.target))) for user in node.users
            if user.op == "call_module" and hasattr(getattr(prepared, str(user.target), None), "min_val")]


def _observe_full_input_range(prepared, value_range: tuple[float, float]) -> None:
    """Give each model input's observer every value the preprocessing can produce, as the other formats do
    (``quantize.calibration.input_range``): a camera frame may be darker or brighter than every calibration
    picture. The first observer may sit behind a zero padding (TF SAME), which changes no range."""
    import torch

    low, high = value_range
    for node in prepared.graph.nodes:
        if node.op != "placeholder":
            continue
        frontier = [node]
        while frontier:
            current = frontier.pop()
            watched = _observers(prepared, current)
            for _, observer in watched:
                observer.min_val = torch.tensor(min(low, 0.0))
                observer.max_val = torch.tensor(max(high, 0.0))
            if not watched:  # a layout op or padding in front of the first observer
                frontier += [u for u in current.users if u.op == "call_function"]


def _keep_weight_grid(prepared) -> GridSummary:
    """Give each weight channel that is already on an int8 grid (Google's quantization-aware weights, see
    ``quantize/weight_grid.py``) that step as its scale, as the ONNX and TFLite files do: its weight observer's
    range becomes +-127 steps, so the symmetric scale, max / ((127 - -127) / 2), is the step itself and the int8
    weights are the source file's levels. convert_pt2e then derives each bias scale from it."""
    import torch

    summary = GridSummary()
    for node in prepared.graph.nodes:
        if node.op != "get_attr":
            continue
        for _, observer in _observers(prepared, node):
            if not hasattr(observer, "ch_axis") or observer.min_val.numel() < 2:
                continue  # a per-tensor observer: no weight of a convolution or linear layer
            steps = channel_steps(_attribute(prepared, node.target).detach().double().numpy(), observer.ch_axis)
            summary.count(len(steps), sum(step is not None for step in steps))
            for channel, step in enumerate(steps):
                if step is not None:
                    observer.min_val[channel] = torch.tensor(-INT8_LEVELS * step)
                    observer.max_val[channel] = torch.tensor(INT8_LEVELS * step)
    return summary


def _clamp_to_activations(prepared) -> int:
    """Observe each convolution or linear output that only feeds a ReLU or ReLU6 (hardtanh) on the range the
    activation lets through; returns how many ranges were narrowed.

    XNNPACKQuantizer fuses conv+ReLU but not conv+ReLU6 (is_relu_node knows relu only, hardtanh is a shared-observer
    op: github.com/pytorch/executorch/blob/v1.5.1/backends/xnnpack/quantizer/xnnpack_quantizer_utils.py), so the
    hardtanh shares its input's observer and the int8 scale
    of every conv+ReLU6 covers the conv's whole pre-clamp output (MobileNet v1 0.25: [-20, 15] where [0, 6]
    survives), several times coarser than needed (measured: cosine 0.984 against 0.993 for the TFLite file).
    XNNPACK fuses the clamp into the convolution anyway, so quantizing with the clamped range is what TFLite's
    fused RELU6 does, and exact for every value that survives the clamp."""
    import torch

    bounds = {torch.ops.aten.hardtanh.default: (-1.0, 1.0), torch.ops.aten.hardtanh_.default: (-1.0, 1.0),
              torch.ops.aten.relu.default: (0.0, float("inf")), torch.ops.aten.relu_.default: (0.0, float("inf"))}
    narrowed = 0
    for node in prepared.graph.nodes:
        if node.op != "call_function" or node.target not in bounds:
            continue
        low, high = bounds[node.target]
        if node.target in (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default):
            low = float(node.args[1]) if len(node.args) > 1 else low
            high = float(node.args[2]) if len(node.args) > 2 else high
        source = node.args[0]
        if source.op != "call_module" or len(source.users) != 1:
            continue  # the pre-activation tensor is read elsewhere too: its full range is needed
        observed = [getattr(prepared, str(source.target))] + [o for _, o in _observers(prepared, node)]
        for observer in observed:
            if hasattr(observer, "min_val") and observer.min_val.numel():
                observer.min_val = torch.clamp(observer.min_val, min=low, max=high)
                observer.max_val = torch.clamp(observer.max_val, min=low, max=high)
        narrowed += 1
    return narrowed


def _operators(delegation: dict) -> dict[str, int]:
    return {op: counts["delegated"] + counts["not_delegated"] for op, counts in delegation["by_operator"].items()}


def read_metadata(path: Path) -> dict:
    """edgekit's metadata from the program's constant method; {} for a program without it."""
    with captured_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bindings' ExperimentalWarning on import
        _, runtime = executorch_runtime()
        return program_metadata(runtime.get().load_program(Path(path)))


class PteBackend(FormatBackend):
    """ExecuTorch: torch.export and XNNPACK lowering for fp32, PT2E with XNNPACKQuantizer for int8."""

    format = get_format("pte")
    calibration_methods = (CALIBRATION_METHOD,)
    calibration_note = "XNNPACKQuantizer with min/max observers, the input range fixed to the preprocessing's"

    def export_fp32(self, model, out: Path, *, spec, resolution: int, metadata: dict) -> dict:
        # the precision travels in the program too: a .pte has no graph to read it from without ExecuTorch
        return torch_to_pte(model, out, resolution=resolution, metadata=metadata | {"precision": "fp32"})

    def quantize_int8(self, model, fp32: Path, out: Path, *, calibration, spec, metadata: dict) -> dict:
        return quantize_pte(model, out, calibration, resolution=calibration.resolution,
                            metadata=metadata | {"precision": "int8"}) | {
            "calibration_note": self.calibration_note}

    def int8_summary(self, details: dict) -> str | None:
        return f"{details['delegation']['share_delegated']:.0%} of the operators on XNNPACK"

    def read_metadata(self, path: Path) -> dict:
        try:
            return read_metadata(path)
        except Exception:  # noqa: BLE001 - a program that cannot say it simply has no edgekit metadata
            return {}

    def census(self, path: Path) -> dict | None:
        return None  # the delegation census is taken while lowering, from the graph (the file keeps no graph)


BACKEND = PteBackend()
