"""edgekit uses private internals of some libraries (ai-edge-quantizer's Calibrator and qsv_utils, ONNX Runtime's
calibrate module and MLAS's U8S8 pair order, litert-torch's config, torch.onnx's opset constants, ExecuTorch's
thread-pool knob and delegation census): their version ranges are capped in
pyproject.toml, and this test says plainly when an installed version is one edgekit was never tested with."""

from __future__ import annotations

from importlib import metadata

import pytest

# distribution -> (the versions edgekit's suite ran on, the internals that make a new one a risk)
TESTED = {
    "ai-edge-quantizer": (("0.10",), "Calibrator, qsv_utils.min_max_update, recipe_manager"),
    "onnxruntime": (("1.31", "1.32"), "quantization.calibrate.create_calibrator/save_tensors_data; MLAS U8S8 "
                                      "pairs bytes (2j, 2j+1), which quantize/onnx_saturation.py relies on"),
    "litert-torch": (("0.10",), "config.show_progress, to_channel_last_io"),
    "torch": (("2.13",), "torch.onnx._constants (the opsets each ONNX exporter writes: exporters/onnx.py)"),
    "executorch": (("1.5",), "extension.pybindings.portable_lib._unsafe_reset_threadpool (edgekit/runtimes.py, "
                             "devices/runner.py), devtools.backend_debug.get_delegation_info, XNNPACKQuantizer's "
                             "module path (exporters/pte.py)"),
}
OPTIONAL = {"executorch"}  # the edgekit[executorch] extra: checked where it is installed


@pytest.mark.parametrize("distribution", sorted(TESTED))
def test_installed_versions_are_the_tested_ones(distribution):
    tested, internals = TESTED[distribution]
    try:
        installed = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        if distribution in OPTIONAL:
            pytest.skip(f"{distribution} is an optional extra and not installed here")
        raise
    assert installed.startswith(tested), (
        f"{distribution} {installed} is installed; edgekit was tested with {' and '.join(tested)}.x and uses its "
        f"internals ({internals}): run the int8 tests, then add the version here and widen pyproject.toml")
