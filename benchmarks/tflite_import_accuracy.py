"""Accuracy of Google's MobileNet .tflite files imported into edgekit's PyTorch models.

For each shared .tflite file: the source file's top-1/top-5 (LiteRT interpreter, uint8), the imported
PyTorch fp32 model's (TF SAME padding, as edgekit builds it), the top-1 agreement between the two, and the
same weights with PyTorch's symmetric padding (to show what the padding mode is worth). All predictors see
the same preprocessed images (crop 0.875, bilinear, mean/std from the file's input quantization).

    .venv/bin/python benchmarks/tflite_import_accuracy.py [--data ../shared/data] [--limit N]

Writes benchmarks/results/tflite_import_accuracy.md and .json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from edgekit.cpu import describe, host_cpu

REPO = Path(__file__).resolve().parents[1]
FILES = (
    ("mobilenet_v1", "mobilenet_v1_0.25_128_quant.tflite"),
    ("mobilenet_v1", "mobilenet_v1_0.5_160_quant.tflite"),
    ("mobilenet_v1", "mobilenet_v1_0.75_192_quant.tflite"),
    ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite"),
)


def measure(data: Path, limit: int | None, batch_size: int) -> list[dict]:
    import edgekit
    from edgekit.evaluate import evaluate, image_batches, top1_agreement, torch_predictor
    from edgekit.images import read_labelled_set
    from edgekit.models.registry import build_model
    from edgekit.runtimes import open_runtime

    items = read_labelled_set(data / "imagenet-samples" / "labels.csv")[:limit]
    rows = []
    for name, filename in FILES:
        path = data / "tflite" / filename
        model = edgekit.create_model(name, weights=path)
        config = model.edgekit_config
        symmetric = build_model(replace(config, padding="symmetric"))
        symmetric.load_state_dict(model.state_dict())
        batches = list(image_batches(items, config.resolution, config.preprocessing, batch_size))
        source = evaluate(open_runtime(path, threads=1), batches, label=f"{filename} (LiteRT)")
        imported = evaluate(torch_predictor(model), batches, label=f"{filename} (PyTorch, tf_same)")
        naive = evaluate(torch_predictor(symmetric), batches, label=f"{filename} (PyTorch, symmetric)")
        rows.append({
            "model": f"{name} {config.width}/{config.resolution}", "file": filename, "images": source.images,
            "source_top1": source.top1, "source_top5": source.top5,
            "imported_top1": imported.top1, "imported_top5": imported.top5,
            "agreement_top1": top1_agreement(source, imported),
            "symmetric_top1": naive.top1, "symmetric_agreement_top1": top1_agreement(source, naive),
        })
    return rows


def write(rows: list[dict], out: Path, command: str) -> str:
    import json

    from edgekit.fileio import atomic_write_text
    from edgekit.table import markdown_table

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    table = markdown_table(
        ["model", "images", "source top-1 (LiteRT uint8)", "imported top-1 (PyTorch fp32)", "top-1 agreement",
         "source top-5", "imported top-5", "symmetric padding top-1", "symmetric agreement"],
        [[r["model"], r["images"], pct(r["source_top1"]), pct(r["imported_top1"]), pct(r["agreement_top1"]),
          pct(r["source_top5"]), pct(r["imported_top5"]), pct(r["symmetric_top1"]),
          pct(r["symmetric_agreement_top1"])] for r in rows])
    text = (f"# Google MobileNet .tflite files imported into edgekit\n\nCommand: `{command}`\n\n{table}\n\n"
            "Source: the .tflite file in the LiteRT interpreter (uint8 in, uint8 out, 1001 classes with "
            "background dropped). Imported: `edgekit.create_model(name, weights=FILE)`, fp32 PyTorch with TF SAME "
            "padding. Symmetric: the same weights with PyTorch's symmetric padding. Same preprocessed images for "
            "all three (crop 0.875, bilinear, mean 128, std 128 from the files' input quantization).\n")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tflite_import_accuracy.md", text)
    meta = {"command": command, "python": platform.python_version(), "machine": describe(host_cpu()),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    atomic_write_text(out / "tflite_import_accuracy.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--limit", type=int, help="first N images only (default: all)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    rows = measure(args.data, args.limit, args.batch_size)
    command = ".venv/bin/python benchmarks/tflite_import_accuracy.py" + "".join(f" {a}" for a in sys.argv[1:])
    print(write(rows, args.out, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
