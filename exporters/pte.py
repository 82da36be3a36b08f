"""PyTorch -> ExecuTorch (.pte) with the XNNPACK delegate: PyTorch's own on-device runtime for Android and iOS.

fp32: ``torch.export`` -> ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` -> ``to_executorch``. int8:
PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer`` (int8 per-channel symmetric weights, int8
per-tensor activations), calibrated on the same pictures as the other formats, then the same lowering: XNNPACK
runs the quantized graph with its int8 kernels. Input NCHW float32 ``[1, 3, H, W]`` (the int8 file quantizes
inside), output float32 logits.

edgekit's metadata (the same JSON every format carries) is a constant method of the program, ``edgekit_metadata``,
returning the UTF-8 bytes as a uint8 tensor: ExecuTorch has no free-form metadata section, and a constant method
is written with the program, once. The census is the delegation: how many of the graph's operators XNNPACK took,
counted by ExecuTorch's own ``get_delegation_info``.

Where export time goes (MobileNet v2, AMD EPYC Zen 3, AVX2, 2 cores; benchmarks/results/executorch_format.md):
``to_edge_transform_and_lower`` is nearly all of it, and inside it the XNNPACK back-end's graph passes re-trace
the whole graph once per pass (torch.fx interpreter and fake tensors); the export itself takes 1-2 s.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..capture import captured_output, one_line
from ..errors import EdgekitError
from ..formats import get_format
from ..quantize.calibration import input_range
from .backend import FormatBackend

METADATA_METHOD = "edgekit_metadata"  # the program's constant method holding edgekit's metadata (JSON bytes)
CONVERTER = "torch.export + ExecuTorch XNNPACK delegate"
CALIBRATION_METHOD = "minmax"  # min/max observers (_quantizer), as the ONNX and TFLite files


def _lower_and_write(exported, out: Path, metadata: dict) -> dict:
    """Lower an exported program to XNNPACK, write it to ``out`` with the metadata method; return the census."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    payload = torch.tensor(list(json.dumps(metadata, separators=(",", ":")).encode("utf-8")), dtype=torch.uint8)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                       constant_methods={METADATA_METHOD: payload})
    delegation = _delegation(get_delegation_info(edge.exported_program().graph_module))
    Path(out).write_bytes(edge.to_executorch().buffer)  # the caller's temporary path: renamed once whole
    return delegation


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
    with _converting("export"):
        import torch

        exported = torch.export.export(model, (torch.zeros(1, 3, resolution, resolution),))
        delegation = _lower_and_write(exported, out, metadata)
    return {"converter": CONVERTER, "delegation": delegation, "operators": _operators(delegation)}


def quantize_pte(model, out: Path, calibration, *, resolution: int, metadata: dict) -> dict:
    """Write ``out``: ``model`` quantized with XNNPACKQuantizer (PT2E, static, per-channel weights), its activation
    ranges observed on ``calibration``'s pictures, lowered to XNNPACK."""
    with _converting("int8 quantization"):
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        sample = (torch.zeros(1, 3, resolution, resolution),)
        prepared = prepare_pt2e(torch.export.export(model, sample).module(), _quantizer())
        with torch.no_grad():
            for image in calibration.nchw:  # batch 1: the graph was exported for it
                prepared(torch.from_numpy(np.ascontiguousarray(image[None])))
        _observe_full_input_range(prepared, input_range(calibration))
        quantized = convert_pt2e(prepared)
        delegation = _lower_and_write(torch.export.export(quantized, sample), out, metadata)
    return {"converter": CONVERTER, "calibration_method": CALIBRATION_METHOD,
            "weights": "int8 per-channel symmetric", "activations": "int8 per-tensor",
            "quantizer": "XNNPACKQuantizer (PT2E, static)", "delegation": delegation,
            "operators": _operators(delegation)}


_EPS = 2.0 ** -24  # the smallest scale an observer may give (XNNPACK's config uses 2**-12)


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


def _observe_full_input_range(prepared, value_range: tuple[float, float]) -> None:
    """Give the model input's observer every value the preprocessing can produce, as the other formats do
    (``quantize.calibration.input_range``): a camera frame may be darker or brighter than every calibration
    picture."""
    import torch

    low, high = value_range
    for node in prepared.graph.nodes:
        if node.op != "placeholder":
            continue
        for user in node.users:
            observer = getattr(prepared, str(user.target), None) if user.op == "call_module" else None
            if observer is not None and hasattr(observer, "min_val"):
                observer.min_val = torch.tensor(low)
                observer.max_val = torch.tensor(high)


def _operators(delegation: dict) -> dict[str, int]:
    return {op: counts["delegated"] + counts["not_delegated"] for op, counts in delegation["by_operator"].items()}


def read_metadata(path: Path) -> dict:
    """edgekit's metadata from the program's constant method; {} for a program without it."""
    with captured_output():
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(Path(path))
        if METADATA_METHOD not in program.method_names:
            return {}
        (payload,) = program.load_method(METADATA_METHOD).execute([])
    return json.loads(bytes(payload.numpy().astype(np.uint8)).decode("utf-8"))


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
