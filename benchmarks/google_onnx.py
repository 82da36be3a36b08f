"""What the int8 ONNX benchmarks start from: one of Google's ImageNet MobileNets imported into an edgekit model,
exported to fp32 ONNX with edgekit's exporter, and the calibration pictures edgekit's tests use (the 9 everyday
photos plus every 5th of the 250 shared ImageNet samples, 59 in all; the other 200 are left for scoring)."""

from __future__ import annotations

from pathlib import Path

CALIBRATION_STRIDE = 5


def fp32_onnx_and_calibration(name: str, weights: str, width, resolution, data: Path, folder: Path):
    """(model, fp32 ONNX path in ``folder``, CalibrationSet, the labelled ImageNet samples in labels.csv order)."""
    import edgekit
    from edgekit.exporters.common import edgekit_metadata, export_ready
    from edgekit.exporters.onnx import torch_to_onnx
    from edgekit.images import read_labelled_set
    from edgekit.labels import default_labels
    from edgekit.quantize.calibration import CalibrationSet

    model = edgekit.create_model(name, weights=data / "tflite" / weights, width=width, resolution=resolution)
    config = model.edgekit_config
    fp32 = folder / "fp32.onnx"
    torch_to_onnx(export_ready(model, config.resolution), fp32, resolution=config.resolution,
                  metadata=edgekit_metadata(config, default_labels(config.num_classes)))
    items = read_labelled_set(data / "imagenet-samples" / "labels.csv")
    calibration = CalibrationSet.from_files(
        sorted((data / "photos").iterdir()) + [i.path for i in items[::CALIBRATION_STRIDE]],
        config.preprocessing, config.resolution)
    return model, fp32, calibration, items
