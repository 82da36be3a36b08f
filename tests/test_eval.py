"""Top-1/top-5 evaluation: the scoring itself, `edgekit eval` on models and files, and its failure modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.evaluate import Batch, evaluate, image_batches, torch_predictor
from edgekit.images import read_labelled_set
from edgekit.runtimes import open_runtime

SMALL = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(scope="module")
def small_tflite(shared_data) -> Path:
    return shared_data / "tflite" / SMALL


@pytest.fixture(scope="module")
def labels_csv(shared_data) -> Path:
    return shared_data / "imagenet-samples" / "labels.csv"


@pytest.fixture(scope="module")
def small_model(small_tflite):
    return edgekit.create_model("mobilenet_v1", weights=small_tflite)


@pytest.fixture(scope="module")
def first_50(labels_csv, small_model):
    cfg = small_model.edgekit_config
    return list(image_batches(read_labelled_set(labels_csv)[:50], cfg.resolution, cfg.preprocessing, 50))


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- scoring ----------------------------------------------------------------------------------------------

def _batch(labels, files=None, unreadable=()):
    n = len(labels)
    return Batch(np.zeros((n, 3, 4, 4), np.float32), np.asarray(labels, np.int64),
                 [Path(f or f"img{i}.jpg") for i, f in enumerate(files or [None] * n)], list(unreadable))


def _fixed_scores(scores):
    scores = np.asarray(scores, np.float32)
    return lambda x: scores[: len(x)]


def test_top1_top5_counts():
    # 7 classes; image 0: right at rank 1, image 1: rank 3, image 2: rank 6 (missed by top-5)
    scores = [[9, 1, 2, 3, 4, 5, 6],
              [0, 1, 9, 8, 7, 2, 3],
              [6, 5, 4, 3, 2, 1, 0]]
    result = evaluate(_fixed_scores(scores), [_batch([0, 4, 5])])
    assert (result.correct_top1, result.correct_top5, result.images) == (1, 2, 3)
    assert result.topk.tolist()[1] == [2, 3, 4, 6, 5]
    assert result.to_dict()["top1"] == pytest.approx(1 / 3, abs=1e-6)


def test_background_output_is_dropped_for_1001_outputs():
    scores = np.zeros((2, 1001), np.float32)
    scores[:, 0] = 10  # background wins, but is not a class
    scores[0, 4] = 5   # output 4 = ImageNet class 3
    scores[1, 8] = 5
    auto = evaluate(_fixed_scores(scores), [_batch([3, 7])])
    assert auto.background_dropped and auto.correct_top1 == 2 and auto.num_outputs == 1001
    kept = evaluate(_fixed_scores(scores), [_batch([3, 7])], background="none")
    assert not kept.background_dropped and kept.correct_top1 == 0
    with pytest.raises(EdgekitError, match="background"):
        evaluate(_fixed_scores(scores), [_batch([3, 7])], background="sometimes")


def test_unreadable_files_are_counted_and_labels_checked():
    scores = np.eye(3, dtype=np.float32)
    result = evaluate(_fixed_scores(scores), [_batch([0, 1], unreadable=["a.jpg: bad"]), _batch([], unreadable=["b"])])
    assert result.images == 2 and result.unreadable == ["a.jpg: bad", "b"]
    with pytest.raises(EdgekitError, match="class 5.*3 classes"):
        evaluate(_fixed_scores(scores), [_batch([0, 5])])
    with pytest.raises(EdgekitError, match="none of the 2 images could be decoded"):
        evaluate(_fixed_scores(scores), [_batch([], unreadable=["x: bad", "y: bad"])])


# --- edgekit eval on a class-folder set with a broken and a greyscale image ------------------------------------

@pytest.fixture()
def folder_set(tmp_path, labels_csv) -> Path:
    """ImageNet-style class folders 000..999 (sorted order = class index) holding 8 shared photos, one of them
    converted to greyscale PNG, and one file that is not an image at all."""
    from PIL import Image

    root = tmp_path / "set"
    for k in range(1000):
        (root / f"{k:03d}").mkdir(parents=True)
    items = read_labelled_set(labels_csv)[:8]
    for item in items[:7]:
        shutil.copy(item.path, root / f"{item.label:03d}" / item.path.name)
    grey = items[7]
    with Image.open(grey.path) as image:
        image.convert("L").save(root / f"{grey.label:03d}" / "grey.png")
    (root / f"{items[0].label:03d}" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg" * 10)
    return root


def test_eval_class_folders_with_broken_and_greyscale_images(folder_set, small_tflite, small_model, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    code, out, err = _run(["eval", "mobilenet_v1", "--weights", str(small_tflite), "--data", str(folder_set),
                           "--json", str(out_json)], capsys)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["images"] == 8 and data["unreadable"] == 1
    assert "broken.jpg" in data["unreadable_files"][0]
    assert "skipped 1 unreadable" in err and "top-1" in out and "top-5" in out
    assert data["target"]["kind"] == "model" and data["target"]["config"]["padding"] == "tf_same"
    # the same figures as scoring the readable files (the greyscale one included) through the API
    cfg = small_model.edgekit_config
    items = read_labelled_set(folder_set)
    api = evaluate(torch_predictor(small_model), image_batches(items, cfg.resolution, cfg.preprocessing))
    assert any(f.endswith("grey.png") for f in api.files)
    assert (data["correct_top1"], data["correct_top5"]) == (api.correct_top1, api.correct_top5)
    assert data["correct_top1"] >= 3  # real weights on real photos, greyscale included


def test_eval_folder_class_count_mismatch_is_a_usage_error(tmp_path, labels_csv, small_tflite, capsys):
    # two folders cannot be classes 0 and 1 of a 1000-class model: refused before scoring, unless mapped
    items = read_labelled_set(labels_csv)[:2]
    for i, item in enumerate(items):
        (tmp_path / f"class{i}").mkdir()
        shutil.copy(item.path, tmp_path / f"class{i}" / item.path.name)
    code, out, err = _run(["eval", str(small_tflite), "--data", str(tmp_path), "--json", str(tmp_path / "r.json")],
                          capsys)
    assert code == 2 and "2 class folders but" in err and "scores 1000 classes" in err and "--class-map" in err
    assert out == "" and not (tmp_path / "r.json").exists() and "images " not in err  # nothing scored
    mapping = tmp_path / "map.txt"
    mapping.write_text(f"class0,{items[0].label}\nclass1,{items[1].label}\n")
    code, out, err = _run(["eval", str(small_tflite), "--data", str(tmp_path), "--class-map", str(mapping),
                           "--json", str(tmp_path / "r.json")], capsys)
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and "--class-map" in err and data["images"] == 2 and data["data"]["layout"] == "class-map"
    assert data["correct_top1"] >= 1  # the tench is right, so the mapping reached the scorer


def test_eval_all_images_broken_is_an_error(tmp_path, small_tflite, capsys):
    (tmp_path / "n01440764").mkdir()  # a synset folder: class 0 of ImageNet, so the set fits the model
    (tmp_path / "n01440764" / "x.jpg").write_bytes(b"garbage")
    code, out, err = _run(["eval", "mobilenet_v1", "--weights", str(small_tflite), "--data", str(tmp_path),
                           "--json", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "could be decoded" in err and not (tmp_path / "r.json").exists()


# --- targets ---------------------------------------------------------------------------------------------------

def test_eval_tflite_file_derives_preprocessing_and_drops_background(small_tflite, labels_csv, first_50, tmp_path,
                                                                    capsys):
    out_json = tmp_path / "file.json"
    code, out, err = _run(["eval", str(small_tflite), "--data", str(labels_csv), "--limit", "50",
                           "--json", str(out_json)], capsys)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    target = data["target"]
    assert target["kind"] == "file" and target["resolution"] == 128
    assert target["preprocessing"]["mean"] == [128.0] * 3 and target["preprocessing"]["std"] == [128.0] * 3
    assert "quantization" in target["preprocessing_source"]
    assert data["images"] == 50 and data["model_outputs"] == 1001 and data["background_dropped"]
    direct = evaluate(open_runtime(small_tflite), first_50)
    assert data["correct_top1"] == direct.correct_top1 and data["correct_top5"] == direct.correct_top5


def test_eval_json_to_stdout_is_pure_json(small_tflite, labels_csv, capsys):
    code, out, err = _run(["eval", str(small_tflite), "--data", str(labels_csv), "--limit", "10", "--json", "-"],
                          capsys)
    assert code == 0, err
    assert json.loads(out)["images"] == 10 and "top-1" in err  # the table moves to stderr


@pytest.mark.slow  # 50 images through PyTorch twice (~4 s)
def test_eval_keep_background_scores_the_same(small_tflite, labels_csv, small_model, first_50, tmp_path, capsys):
    out_json = tmp_path / "bg.json"
    code, _, err = _run(["eval", "mobilenet_v1", "--weights", str(small_tflite), "--keep-background",
                         "--data", str(labels_csv), "--limit", "50", "--json", str(out_json)], capsys)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["model_outputs"] == 1001 and data["background_dropped"]
    default = evaluate(torch_predictor(small_model), first_50)
    assert data["correct_top1"] == default.correct_top1 and data["correct_top5"] == default.correct_top5


@pytest.mark.slow  # an ONNX export and 50 images through ORT and PyTorch (~4 s)
def test_eval_float_onnx_needs_preprocessing(small_model, labels_csv, first_50, tmp_path, capsys):
    import torch

    onnx_path = tmp_path / "mobilenet_v1.onnx"
    torch.onnx.export(small_model, torch.zeros(1, 3, 128, 128), str(onnx_path), dynamo=False,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    code, _, err = _run(["eval", str(onnx_path), "--data", str(labels_csv), "--limit", "50"], capsys)
    assert code == 2 and "--preprocessing" in err and "--mean" in err
    out_json = tmp_path / "onnx.json"
    code, _, err = _run(["eval", str(onnx_path), "--data", str(labels_csv), "--limit", "50",
                         "--mean", "128", "128", "128", "--std", "128", "128", "128", "--json", str(out_json)], capsys)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["target"]["preprocessing_source"] == "given" and not data["background_dropped"]
    torch_result = evaluate(torch_predictor(small_model), first_50)
    assert abs(data["correct_top1"] - torch_result.correct_top1) <= 1  # fp32 ORT vs PyTorch: same argmax


@pytest.mark.parametrize("argv, message", [
    (["eval", "{tmp}", "--data", "{csv}"], "holds no manifest.json"),
    (["eval", "mobilenet_v9", "--data", "{csv}"], "unknown model"),
    (["eval", "{tmp}/missing.tflite", "--data", "{csv}"], "does not exist"),
    (["eval", "nowhere/model.pt", "--data", "{csv}"], "neither a registered model"),
    (["eval", "{tflite}", "--weights", "imagenet", "--data", "{csv}"], "--weights only applies"),
    (["eval", "mobilenet_v1", "--weights", "{tflite}", "--data", "{tmp}/none.csv"], "does not exist"),
    (["eval", "mobilenet_v1", "--weights", "{tflite}", "--data", "{csv}", "--mean", "1", "2", "3"], "together"),
    (["eval", "mobilenet_v1", "--weights", "{tflite}", "--data", "{csv}", "--crop-fraction", "1.5"], "(0, 1]"),
    (["eval", "mobilenet_v2", "--weights", "{tflite}", "--data", "{csv}"], "layer 0"),
    (["eval", "{tflite}", "--data", "{csv}", "--json", "{tflite}/out.json"], "cannot write --json"),
])
def test_eval_errors_are_one_line_with_exit_code_2(argv, message, tmp_path, labels_csv, small_tflite, capsys):
    values = {"tmp": str(tmp_path), "csv": str(labels_csv), "tflite": str(small_tflite)}
    code, out, err = _run([a.format(**values) for a in argv], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("edgekit: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert out == ""


def test_eval_labels_out_of_range_is_an_error(tmp_path, labels_csv, small_tflite, capsys):
    first = read_labelled_set(labels_csv)[0]
    csv = tmp_path / "bad.csv"
    csv.write_text(f"file,class_index\n{first.path},1500\n")
    code, _, err = _run(["eval", "mobilenet_v1", "--weights", str(small_tflite), "--data", str(csv)], capsys)
    assert code == 2 and "class 1500" in err
