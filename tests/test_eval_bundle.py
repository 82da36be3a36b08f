"""`edgekit eval BUNDLE`: the PyTorch model and every file of an export bundle scored on the same images, in one
table. The bundle is Google's MobileNet v1 0.25/128 imported as real weights, exported once per test session
(shared with test_inspect.py) with int8 calibrated on the shared everyday photos (none of the scored ImageNet
images)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.evaluate import evaluate, image_batches
from edgekit.images import read_labelled_set
from edgekit.runtimes import open_runtime
from edgekit.types import Preprocessing

pytestmark = pytest.mark.slow  # a real int8 export, 250-image evaluations

VARIANT = "mobilenet_v1_w0.25_r128"
WEIGHTS = "mobilenet_v1_0.25_128_quant.tflite"
FILES = [f"{VARIANT}.onnx", f"{VARIANT}.tflite", f"{VARIANT}_int8.onnx", f"{VARIANT}_int8.tflite"]
# int8 against PyTorch on the 250 photos, AMD EPYC (avx2). Top-1 against labels moves by a few near-ties either way:
# with Google's levels kept exactly (quantize/weight_grid.py) ONNX int8 44.4% (reference path 46.4%), TFLite 42.8%
# (44.0%), PyTorch 46.0%; before, 44.8 (42.0) and 43.6 (44.4). Agreement with PyTorch is the steadier figure: now
# 89.6-93.2%, before 83.2-87.2%, so its floor is the tighter check.
MAX_INT8_TOP1_GAP = 0.035
MIN_INT8_AGREEMENT = 0.88
# every int8 file is scored twice: the host's kernels, then the runtime's reference path (edgekit.parity)
ROWS = [*FILES[:3], f"{FILES[2]}:reference", FILES[3], f"{FILES[3]}:reference"]


@pytest.fixture(scope="module")
def labels_csv(shared_data) -> Path:
    return shared_data / "imagenet-samples" / "labels.csv"


@pytest.fixture(scope="module")
def bundle(v1_int8_bundle) -> Path:
    """The session's int8 bundle (conftest.v1_int8_bundle, shared with test_inspect.py): `edgekit export
    mobilenet_v1 --weights FILE --int8 --calib PHOTOS --latency-runs 0`."""
    assert v1_int8_bundle["code"] == 0, v1_int8_bundle["stdout"] + v1_int8_bundle["stderr"]
    return v1_int8_bundle["bundle"]


@pytest.fixture(scope="module")
def full_eval(bundle, labels_csv, tmp_path_factory):
    """The whole shared set (250 images), table and JSON, once per module."""
    json_path = tmp_path_factory.mktemp("eval") / "eval.json"
    stdout_lines = []
    code = _main_capturing(["eval", str(bundle), "--data", str(labels_csv), "--json", str(json_path)],
                           stdout_lines)
    assert code == 0
    return "".join(stdout_lines), json.loads(json_path.read_text())


def _main_capturing(argv, sink) -> int:
    # module-scoped fixtures cannot use capsys: collect stdout through a redirect instead
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    sink.append(buffer.getvalue())
    return code


@pytest.fixture()
def copy(bundle, tmp_path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(bundle, tmp_path / VARIANT))


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines()[2:] if line.strip() and
            not line.startswith("(")}


def test_one_table_pytorch_and_every_file_int8_within_2_points(full_eval):
    table, data = full_eval
    rows = _rows(table)
    assert list(rows) == ["pytorch", *ROWS]
    assert "top-1 agreement" in table.splitlines()[0]
    assert rows["pytorch"][1:3] == ["pytorch", "fp32"] and rows["pytorch"][5] == "reference"
    assert rows[f"{VARIANT}_int8.tflite"][1:3] == ["tflite", "int8"]
    assert all(row[-2:] == ["250", "0"] for row in rows.values())  # images, unreadable

    targets = {t["name"]: t for t in data["targets"]}
    assert list(targets) == ["pytorch", *ROWS]
    reference = targets["pytorch"]
    assert reference["images"] == 250 and reference["top1_agreement"] == 1.0
    # the import's accuracy on these images (README: 46.0% imported top-1): a meaningful reference, not noise
    assert 0.40 <= reference["top1"] <= 0.52 and reference["top5"] > reference["top1"]
    for name in FILES[:2]:
        assert targets[name]["top1_agreement"] >= 0.99, name  # fp32 files compute what PyTorch computes
        assert abs(targets[name]["top1"] - reference["top1"]) <= 0.01
    for name in ROWS[2:]:
        t = targets[name]
        assert t["precision"] == "int8" and t["images"] == 250
        # integer arithmetic: close, and really not the float model
        assert MIN_INT8_AGREEMENT <= t["top1_agreement"] < 1.0, name
    for name in FILES[2:]:
        # v1 0.25/128 is a 45% model full of near-ties, calibrated here on 9 photos: one rounding step moves a few
        # of the 250 images (figures above MAX_INT8_TOP1_GAP)
        t = targets[name]
        assert abs(t["top1"] - reference["top1"]) <= MAX_INT8_TOP1_GAP, (name, t["top1"], reference["top1"])
        # the reference path computes the same file without this CPU's kernels: the same answers within rounding
        assert abs(t["top1"] - targets[f"{name}:reference"]["top1"]) <= MAX_INT8_TOP1_GAP, name
    manifest = json.loads((Path(data["bundle"]) / "manifest.json").read_text())
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    assert all(targets[n]["sha256"] == by_path[n]["sha256"] for n in FILES)
    assert data["pytorch"]["status"] == "rebuilt" and data["pytorch"]["check"]["cosine_min"] > 0.9999
    assert data["agreement_with"] == "pytorch" and data["resolution"] == 128
    assert data["preprocessing"]["mean"] == [128.0] * 3 and data["preprocessing_source"] == "recorded in the manifest"
    assert data["data"]["images"] == 250 and data["data"]["unreadable"] == 0


def test_rows_match_the_file_scored_alone(full_eval, bundle, labels_csv):
    # same images, same preprocessing: the bundle row is what evaluating the file by itself gives
    _, data = full_eval
    preprocessing = Preprocessing.from_dict(data["preprocessing"])
    items = read_labelled_set(labels_csv)
    alone = evaluate(open_runtime(bundle / FILES[3]), image_batches(items, 128, preprocessing))
    row = next(t for t in data["targets"] if t["name"] == FILES[3])
    assert (alone.correct_top1, alone.correct_top5) == (row["correct_top1"], row["correct_top5"])


def test_altered_file_is_an_error_naming_it(copy, labels_csv, tmp_path, capsys):
    model = copy / FILES[3]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # still loads; the numbers would move a little
    model.write_bytes(bytes(data))
    out = tmp_path / "eval.json"
    assert main(["eval", str(copy), "--data", str(labels_csv), "--limit", "4", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{FILES[3]}: sha256 mismatch, the file was altered after export" in err
    assert not out.exists()


def test_moved_weights_warn_then_score_the_files_against_the_fp32_onnx(copy, labels_csv, shared_data, tmp_path,
                                                                        capsys):
    _edit_manifest(copy, lambda d: d["model"]["weights"].update(path=str(tmp_path / "gone" / WEIGHTS)))
    out = tmp_path / "eval.json"
    assert main(["eval", str(copy), "--data", str(labels_csv), "--limit", "8", "--json", str(out)]) == 0
    table, err = capsys.readouterr()
    assert "no PyTorch row: the weights file" in err and "is not there" in err
    assert "pytorch" not in _rows(table) and _rows(table)[f"{VARIANT}.onnx"][5] == "reference"
    assert f"top-1 agreement is with {VARIANT}.onnx" in table
    data = json.loads(out.read_text())
    assert data["pytorch"]["status"] == "unavailable" and data["agreement_with"] == f"{VARIANT}.onnx"
    assert [t["name"] for t in data["targets"]] == ROWS

    assert main(["eval", str(copy), "--data", str(labels_csv), "--limit", "8", "--pytorch", "require"]) == 2
    assert "cannot score the PyTorch model" in capsys.readouterr().err

    # --weights points at the file where it is now; a different file is refused by its hash
    assert main(["eval", str(copy), "--data", str(labels_csv), "--limit", "8",
                 "--weights", str(shared_data / "tflite" / WEIGHTS), "--pytorch", "require"]) == 0
    assert "pytorch" in _rows(capsys.readouterr().out)
    assert main(["eval", str(copy), "--data", str(labels_csv), "--limit", "8", "--pytorch", "require",
                 "--weights", str(shared_data / "tflite" / "mobilenet_v1_0.5_160_quant.tflite")]) == 2
    assert "differs from the one exported (sha256" in capsys.readouterr().err


def test_a_rebuilt_model_that_is_not_the_exported_one_is_refused(copy, labels_csv, capsys):
    # same weights, symmetric instead of TF padding: a different function, caught by the stored reference outputs
    _edit_manifest(copy, lambda d: d["model"].update(padding="symmetric"))
    assert main(["eval", str(copy), "--data", str(labels_csv), "--limit", "4", "--pytorch", "require"]) == 2
    assert "does not reproduce the bundle's reference outputs" in capsys.readouterr().err


def test_random_weights_bundle_scores_its_files_alone(tmp_path, labels_csv, capsys):
    assert main(["export", "mobilenet_v1", "--width", "0.25", "--resolution", "128", "--weights", "random",
                 "--formats", "onnx", "--parity-random", "2", "--parity-samples", "0", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    bundle = tmp_path / "mobilenet_v1_w0.25_r128"
    out = tmp_path / "eval.json"
    # random weights score chance: refused before anything is opened or scored, unless asked for
    assert main(["eval", str(bundle), "--data", str(labels_csv), "--limit", "6", "--json", str(out)]) == 2
    assert "exported with random (untrained) weights" in capsys.readouterr().err and not out.exists()
    assert main(["eval", str(bundle), "--data", str(labels_csv), "--limit", "6", "--json", str(out),
                 "--allow-chance"]) == 0
    table, err = capsys.readouterr()
    assert "no PyTorch row: the bundle was exported with random weights" in err
    assert list(_rows(table)) == ["mobilenet_v1_w0.25_r128.onnx"]
    data = json.loads(out.read_text())
    assert data["pytorch"]["status"] == "unavailable" and data["targets"][0]["images"] == 6
    assert main(["eval", str(bundle), "--data", str(labels_csv), "--limit", "6", "--pytorch", "require",
                 "--allow-chance"]) == 2
    assert "random weights" in capsys.readouterr().err


def test_files_alone_never_import_torch(bundle, labels_csv):
    code = ("import sys\nfrom edgekit.cli import main\nrc = main(sys.argv[1:])\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\nsys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "eval", str(bundle), "--data", str(labels_csv),
                             "--limit", "4", "--pytorch", "skip"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "NO_TORCH"
    assert list(_rows(result.stdout.rsplit("\n", 2)[0])) == ROWS


@pytest.mark.parametrize("argv, message", [
    (["--width", "0.5"], "--width: a bundle's model and files are fixed by its manifest"),
    (["--pytorch", "skip", "--weights", "x.tflite"], "--pytorch skip leaves out"),
])
def test_bundle_usage_errors(bundle, labels_csv, argv, message, capsys):
    assert main(["eval", str(bundle), "--data", str(labels_csv), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_folder_holding_bundles(bundle, tmp_path, labels_csv, capsys):
    one = tmp_path / "one"
    shutil.copytree(bundle, one / VARIANT)
    assert main(["eval", str(one), "--data", str(labels_csv), "--limit", "2", "--pytorch", "skip"]) == 0
    assert list(_rows(capsys.readouterr().out)) == ROWS
    shutil.copytree(bundle, one / "other")
    assert main(["eval", str(one), "--data", str(labels_csv), "--limit", "2"]) == 2
    assert "holds 2 bundles" in capsys.readouterr().err


def test_a_model_of_several_outputs_is_scored_on_the_output_its_labels_name(full_eval, shared_data, labels_csv,
                                                                            tmp_path, capsys):
    """One picture in, an embedding and then the class scores out (Google's v1 0.25 weights): eval scores the
    output the labels belong to, not the first one, and gets the zoo model's top-1 on the same 250 photos."""
    import torch
    from torch import nn

    import edgekit

    net = edgekit.create_model("mobilenet_v1", width=0.25, resolution=128, weights=shared_data / "tflite" / WEIGHTS)

    class EmbeddingAndScores(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            features = torch.flatten(self.net.avgpool(self.net.features(image)), 1)
            return features, self.net.classifier(features)

    manifest = edgekit.export(EmbeddingAndScores(), torch.zeros(1, 3, 128, 128),
                              preprocessing=net.edgekit_config.preprocessing, task=["embedding", "classifier"],
                              labels=list(net.edgekit_config.labels), formats=("onnx",), out=tmp_path,
                              latency_runs=0)
    assert manifest.passed and manifest.model["labelled_output"] == "output_1"
    report = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "embedding_and_scores"), "--data", str(labels_csv), "--json",
                 str(report)]) == 0
    (target,) = json.loads(report.read_text())["targets"]  # the files alone: a user's module is not rebuilt
    zoo = next(t for t in full_eval[1]["targets"] if t["name"] == "pytorch")
    assert target["images"] == 250 and target["top1"] == zoo["top1"] and target["top5"] == zoo["top5"]
    # the file alone does not say which output holds the class scores: one line, pointing at the bundle
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "embedding_and_scores" / "embedding_and_scores.onnx"), "--data",
                 str(labels_csv)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "gives 2 outputs" in errors[0] and "bundle" in errors[0], errors
