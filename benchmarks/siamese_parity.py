"""Siamese embeddings through edgekit export: what int8 does to cosine and to same/different decisions.

No trained Siamese network exists on this machine, so the embedding network is the zoo's ``siamese`` on a trained
backbone: the features of Google's ImageNet MobileNet .tflite files (imported by edgekit), the zoo's pool and a
seeded random 128-d projection, L2-normalised (tests/trained_tasks.py: siamese_on_google_weights). Each is exported
by ``edgekit.pipeline.run_export`` (fp32 and int8, ONNX and TFLite; int8 calibrated on 128 of the shared ImageNet
samples; parity on 16 others, so 120 pairs, at the threshold the manifest records). Then every file embeds 100
ImageNet samples the calibration did not use; the table gives the cosine to PyTorch's embedding and the agreement
of the same/different decision on all 4,950 pairs at the manifest's threshold. To see what the gates must catch,
the MobileNet v1 network is also exported with a deliberately poor int8 calibration: 3 crops of one photo.

    .venv/bin/python benchmarks/siamese_parity.py [--work DIR]

Writes benchmarks/results/siamese_parity.md and .json (figures name the CPU; the machine was shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from trained_tasks import export_bundle, predict, score_files, siamese_on_google_weights  # noqa: E402
from scratch import work_folder  # noqa: E402  (benchmarks/scratch.py, beside this script)

RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("EDGEKIT_DATA", "../shared/data"))
BACKBONES = (("mobilenet_v1_0.25_128_quant.tflite", 128), ("mobilenet_v2_1.0_224_quant.tflite", 224))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--images", type=int, default=100, help="held-out ImageNet samples to embed")
    args = parser.parse_args()

    import torch

    from edgekit.cpu import describe, host_cpu
    from edgekit.images import find_images, load_batch
    from edgekit.parity import OutputTask, compare

    torch.set_num_threads(1)
    work = work_folder(args.work, "siamese.")
    images = find_images(DATA / "imagenet-samples" / "images")
    # calibration, parity and scoring use disjoint pictures: every other one for calibration, the rest split
    calib_dir, parity_dir = work / "calib", work / "parity"
    for folder, chosen in ((calib_dir, images[0::2][:128]), (parity_dir, images[1::2][:16])):
        folder.mkdir(parents=True, exist_ok=True)
        for path in chosen:
            target = folder / path.name
            if not target.exists():
                target.symlink_to(path.resolve())
    scored = images[1::2][16:16 + args.images]
    poor_dir = work / "poor_calib"
    _poor_calibration(poor_dir)
    results = []
    runs = [(f, r, calib_dir, "") for f, r in BACKBONES] + [(BACKBONES[0][0], BACKBONES[0][1], poor_dir, "poor")]
    for filename, resolution, calib, poor in runs:
        model = siamese_on_google_weights(DATA / "tflite" / filename, resolution)
        print(f"{filename}: siamese at {resolution} px{' (poor calibration)' if poor else ''}", flush=True)
        manifest, bundle = export_bundle(model, work / f"exports{poor}", calib, parity_dir)
        task = OutputTask.from_dict(manifest.model["task"])
        inputs = load_batch(scored, resolution, model.edgekit_config.preprocessing).nchw
        reference = predict(model, inputs)

        def score(outputs, reference=reference, task=task):
            m = compare(reference, outputs, None, task)
            return {"cosine_min": m.cosine_min, "cosine_mean": m.cosine_mean, "psnr_db": m.psnr_db,
                    "decision_agreement": m.decision_agreement}

        rows = score_files(bundle, manifest, inputs, score)
        same = float(np.mean(_distances(reference) < task.distance_threshold))
        results.append({"backbone": filename, "resolution": resolution, "poor_calibration": bool(poor), "threshold": task.to_dict(),
                        "pairs": len(scored) * (len(scored) - 1) // 2, "same_share_pytorch": same, "files": rows,
                        "export_parity": {p.artifact: p.metrics.to_dict() for p in manifest.parity},
                        "manifest_passed": manifest.passed})
    result = {"cpu": describe(host_cpu()), "load_average": os.getloadavg(), "images": len(scored),
              "models": results}
    write_results(result)
    return 0


def _poor_calibration(folder: Path) -> None:
    """3 crops of one photo: ranges far narrower than the ImageNet pictures the network will see."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(DATA / "photos" / "sunflower.bmp") as photo:
        photo = photo.convert("RGB")
        w, h = photo.size
        for i, box in enumerate(((0, 0, w // 3, h // 3), (w // 3, h // 3, 2 * w // 3, 2 * h // 3),
                                 (2 * w // 3, 0, w, h // 3))):
            photo.crop(box).save(folder / f"crop{i}.png")


def _distances(embeddings: np.ndarray) -> np.ndarray:
    from edgekit.parity import pair_distances

    return pair_distances(embeddings)


def write_results(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "siamese_parity.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Siamese embeddings, fp32 and int8: cosine and same/different decisions", "",
             f"CPU: {result['cpu']}; the machine was shared with other engineers (load average "
             f"{result['load_average'][0]:.1f} at the end). Produced by `benchmarks/siamese_parity.py`.", "",
             "Embedding network: the zoo's `siamese` on the features of Google's ImageNet MobileNet file (imported "
             "by edgekit), pool, a seeded random 128-d projection, L2 norm. Threshold: the one the export recorded "
             f"in the manifest (halfway between the two middle pair distances of PyTorch's embeddings on the 16 parity "
             f"pictures, so half of those 120 pairs are 'same'). Scored on "
             f"{result['images']} ImageNet samples neither calibration nor parity used.", ""]
    for model in result["models"]:
        threshold = model["threshold"]["distance_threshold"]
        poor = " with int8 calibrated on 3 crops of one photo (deliberately poor)" if model["poor_calibration"] else ""
        lines += [f"## {model['backbone']} at {model['resolution']} px{poor} (threshold {threshold:.4g}; "
                  f"{model['same_share_pytorch']:.1%} of {model['pairs']} pairs 'same' for PyTorch)", "",
                  "| file | precision | size | cosine min | cosine mean | PSNR dB | decisions as PyTorch | export parity |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in model["files"]:
            lines.append(f"| {r['file']} | {r['precision']} | {r['bytes'] / 1e6:.2f} MB | {r['cosine_min']:.5f} | "
                         f"{r['cosine_mean']:.5f} | {r['psnr_db']:.1f} | {r['decision_agreement']:.2%} | {r['parity']} |")
        lines += ["", "Export parity (16 pictures, 120 pairs, + 4 random inputs): " + "; ".join(
            f"{name}: cosine mean {m['cosine_mean']:.5f}, decisions {m['decision_agreement']:.1%}"
            for name, m in model["export_parity"].items() if m.get("decision_agreement") is not None), ""]
    (RESULTS / "siamese_parity.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
