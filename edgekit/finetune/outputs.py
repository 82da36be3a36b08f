"""The files a finished fine-tune leaves in DIR: weights, labels, the curve, and training.json written last.

training.json is the mark of a finished run: it is written (atomically) only after the other three, so a folder
without it never looks finished, and a rerun resumes from the checkpoint instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..fileio import atomic_path, atomic_write_text, sha256_file

WEIGHTS_NAME = "model.safetensors"
LABELS_NAME = "labels.txt"
RECORD_NAME = "training.json"
CURVE_NAME = "training.png"
WORK_NAME = ".finetune"  # checkpoint and feature cache of an unfinished run


def write_weights(model: torch.nn.Module, path: Path, metadata: dict) -> str:
    """The whole model's state_dict as safetensors (the best epoch's), with edgekit's facts in its header;
    returns the file's sha256."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"edgekit": json.dumps(metadata)})
    return sha256_file(path)


def write_labels(path: Path, classes: tuple[str, ...]) -> None:
    atomic_write_text(path, "\n".join(classes) + "\n")


def write_curve(path: Path, history: list[dict], best_epoch: int, title: str) -> None:
    """Loss and top-1 per epoch, training and validation, the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(9, 3.6), dpi=100)
    loss_axes, top1_axes = figure.subplots(1, 2)
    for axes, key, label in ((loss_axes, "loss", "cross-entropy loss"), (top1_axes, "top1", "top-1 accuracy")):
        scale = 100 if key == "top1" else 1
        axes.plot(epochs, [scale * h[f"train_{key}"] for h in history], label="training (augmented)", marker=".")
        axes.plot(epochs, [scale * h[f"val_{key}"] for h in history], label="validation", marker=".")
        axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {best_epoch}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label + (" (%)" if key == "top1" else ""))
        axes.grid(alpha=0.3)
    top1_axes.legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_record(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def read_record(path: Path) -> dict | None:
    """A finished run's training.json, or None when it cannot be read as one."""
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "key" in record else None
