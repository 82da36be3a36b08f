"""The flatbuffer reader on files as real producers write them."""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.exporters.common import edgekit_metadata, export_ready
from edgekit.exporters.tflite import torch_to_tflite
from edgekit.labels import default_labels
from edgekit.tflite_model import TFLiteModel

# both tests read one TFLite conversion plus an ai-edge-quantizer pass (~6 s)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp16_quantizer_output(tmp_path_factory):
    """ai-edge-quantizer's raw output: it stores weights after the flatbuffer and points at them by offset."""
    from ai_edge_quantizer import algorithm_manager, quantizer
    from ai_edge_quantizer.qtyping import TFLOperationName

    model = edgekit.create_model("mobilenet_v1", width=0.25, resolution=128)
    cfg = model.edgekit_config
    path = tmp_path_factory.mktemp("fp32") / "v1.tflite"
    torch_to_tflite(export_ready(model, 128), path, resolution=128,
                    metadata=edgekit_metadata(cfg, default_labels(cfg.num_classes)))
    q = quantizer.Quantizer(str(path))
    q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return bytes(q.quantize().quantized_model), TFLiteModel.from_file(path)


def test_reads_weights_stored_after_the_flatbuffer(fp16_quantizer_output):
    flat, fp32 = fp16_quantizer_output
    model = TFLiteModel(flat, "fp16")
    fp16_weights = [t for t in model.tensors if t.dtype == "FLOAT16"]
    assert fp16_weights and all(t.data is not None and t.data.size == np.prod(t.shape) for t in fp16_weights)
    # the values are the fp32 file's weights, rounded to float16
    fp32_by_shape = {t.shape: t.data for t in fp32.tensors if t.data is not None and t.dtype == "FLOAT32"}
    first = fp16_weights[0]
    assert np.allclose(first.data.astype(np.float32), fp32_by_shape[first.shape], atol=1e-3)


def test_truncated_external_weights_fail_cleanly(fp16_quantizer_output):
    flat, _ = fp16_quantizer_output
    with pytest.raises(EdgekitError, match="truncated|corrupt"):
        TFLiteModel(flat[: len(flat) - 1000], "cut")
