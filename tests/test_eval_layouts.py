"""`edgekit eval` reads the layouts labelled data comes in (CSV, labels.csv in a folder, ImageNet synset folders
and synset-named files, class folders with or without --class-map), refuses data that cannot belong to the model
before scoring, refuses random weights and chance-level scores unless --allow-chance, and feeds edgekit's own
files the preprocessing they carry."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.evaluate import PREPROCESSING_PRESETS, chance_problem
from edgekit.images import imagenet_synsets, read_class_map, read_labelled_set

SMALL = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(scope="module")
def samples(shared_data) -> Path:
    return shared_data / "imagenet-samples"


@pytest.fixture(scope="module")
def small_tflite(shared_data) -> Path:
    return shared_data / "tflite" / SMALL


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _pairs(items) -> list[tuple[str, int]]:
    return sorted((item.path.name, item.label) for item in items)


# --- layouts -------------------------------------------------------------------------------------------------------

def test_synset_list_is_imagenets_index_order(samples):
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and list(synsets) == sorted(synsets) and synsets[0] == "n01440764"
    with open(samples / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 250 and all(synsets[int(r["class_index"])] == r["synset"] for r in rows)


def test_every_layout_of_the_same_images_gives_the_same_labels(samples, tmp_path):
    reference = read_labelled_set(samples / "labels.csv")
    assert reference.layout == "csv"
    in_folder = read_labelled_set(samples)  # a folder holding labels.csv is read through it
    assert in_folder.layout == "csv" and _pairs(in_folder) == _pairs(reference)
    flat = read_labelled_set(samples / "images")  # n01440764_tench.JPEG ...: synset-named files
    assert flat.layout == "imagenet-synsets" and _pairs(flat) == _pairs(reference)

    nested = tmp_path / "train"
    for item in reference[:12]:
        synset = item.path.name[:9]
        (nested / synset).mkdir(parents=True)
        os.symlink(item.path.resolve(), nested / synset / "a.jpg")
    folders = read_labelled_set(nested)
    assert folders.layout == "imagenet-synsets"
    assert sorted(i.label for i in folders) == sorted(i.label for i in reference[:12])

    by_synset = tmp_path / "synsets.csv"
    by_synset.write_text("file,synset\n" + "".join(f"{i.path.resolve()},{i.path.name[:9]}\n" for i in reference[:5]))
    assert [i.label for i in read_labelled_set(by_synset)] == [i.label for i in reference[:5]]


def test_class_maps_and_their_mistakes(tmp_path, samples):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    first = read_labelled_set(samples / "labels.csv")[0].path.resolve()
    os.symlink(first, tmp_path / "cat" / "1.jpg")
    os.symlink(first, tmp_path / "dog" / "2.jpg")
    plain = read_labelled_set(tmp_path)
    assert plain.layout == "class-folders" and plain.folders == 2 and [i.label for i in plain] == [0, 1]
    lines = tmp_path / "labels.txt"
    lines.write_text("bird\ndog\ncat\n")  # a bundle's labels.txt: line k = class k
    assert [i.label for i in read_labelled_set(tmp_path, lines)] == [2, 1]
    pairs = tmp_path / "map.csv"
    pairs.write_text("cat,281\ndog,207\n")
    mapped = read_labelled_set(tmp_path, pairs)
    assert mapped.layout == "class-map" and [i.label for i in mapped] == [281, 207]
    pairs.write_text("cat,281\n")
    with pytest.raises(EdgekitError, match="does not name the folder.*dog"):
        read_labelled_set(tmp_path, pairs)
    with pytest.raises(EdgekitError, match="names a class twice"):
        lines.write_text("cat\ncat\ndog\n")
        read_class_map(lines)
    with pytest.raises(EdgekitError, match="drop --class-map"):
        read_labelled_set(samples / "labels.csv", lines)
    (tmp_path / "n01440764").mkdir()
    with pytest.raises(EdgekitError, match="mixes ImageNet synset folders"):
        read_labelled_set(tmp_path)
    bogus = tmp_path / "bogus"
    (bogus / "n99999999").mkdir(parents=True)
    os.symlink(first, bogus / "n99999999" / "x.jpg")
    with pytest.raises(EdgekitError, match="n99999999 is not one of the 1000 ImageNet-1k synsets"):
        read_labelled_set(bogus)


# --- refusing nonsense before scoring ----------------------------------------------------------------------------

def test_labels_beyond_the_models_classes_are_refused_before_scoring(tmp_path, samples, small_tflite, capsys):
    first = read_labelled_set(samples / "labels.csv")[0]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"file,class_index\n{first.path.resolve()},3\n{first.path.resolve()},1000\n")
    code, out, err = _run(["eval", small_tflite, "--data", bad, "--json", tmp_path / "r.json"], capsys)
    assert code == 2 and "has class 1000, but" in err and "scores 1000 classes after dropping the background" in err
    assert out == "" and "images 1/" not in err and not (tmp_path / "r.json").exists()


def test_random_weights_are_refused_unless_allowed(samples, capsys):
    argv = ["eval", "mobilenet_v1", "--width", "0.25", "--resolution", "128", "--weights", "random",
            "--data", samples / "labels.csv", "--limit", "3"]
    code, out, err = _run(argv, capsys)
    assert code == 2 and "random (untrained) weights" in err and "--allow-chance" in err and out == ""
    code, out, err = _run(argv + ["--allow-chance"], capsys)
    assert code == 0 and "scoring them anyway" in err and "top-1" in out


def test_a_chance_score_exits_1_and_warns_before_the_table(tmp_path, samples, small_tflite, capsys):
    # class indices in another order than the model's (a seeded permutation): a real model scores what guessing
    # scores. (Moving every label to the next class is not chance: neighbouring ImageNet classes look alike.)
    import random

    order = list(range(1000))
    random.Random(0).shuffle(order)
    shifted = tmp_path / "shuffled.csv"
    items = read_labelled_set(samples / "labels.csv")[:120]
    shifted.write_text("file,class_index\n" + "".join(f"{i.path.resolve()},{order[i.label]}\n" for i in items))
    code, out, err = _run(["eval", small_tflite, "--data", shifted, "--json", "-"], capsys)
    assert code == 1
    assert err.index("is what guessing scores") < err.index("target ")  # the warning comes before the table
    data = json.loads(out)
    assert "guessing" in data["chance"] and data["images"] == 120
    code, out, err = _run(["eval", small_tflite, "--data", shifted, "--allow-chance"], capsys)
    assert code == 0 and "is what guessing scores" in err and "exit 1" not in err and "top-1" in out


def test_chance_judgement():
    assert chance_problem(0, 250, 1000) and chance_problem(2, 250, 1000)  # 0.8%: guessing
    assert chance_problem(0, 8, 1000) is None  # a weak model on 8 images may miss them all
    assert chance_problem(115, 250, 1000) is None  # the 0.25/128 MobileNet's 46%
    assert "far below chance" in chance_problem(20, 250, 2)  # 8% of two classes: the labels are swapped
    assert "guessing" in chance_problem(125, 250, 2)
    assert chance_problem(137, 250, 2) is None  # 55% of two classes on 250 images: weak, not proven useless


# --- preprocessing -------------------------------------------------------------------------------------------------

def test_presets_state_their_numbers(capsys):
    assert PREPROCESSING_PRESETS["tf"].mean == (128.0,) * 3 and PREPROCESSING_PRESETS["tf"].std == (128.0,) * 3
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "tf: mean 128 std 128 (x = (pixel - 128) / 128; Google's quantized MobileNets)" in text
    assert "imagenet: mean 123.675,116.28,103.53 std 58.395,57.12,57.375" in text


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_edgekit_files_carry_their_preprocessing(suffix, v1_fp32_bundle, samples, tmp_path, capsys):
    # the fp32 files take float input: without edgekit's metadata, eval would need --preprocessing
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stderr"]
    model = v1_fp32_bundle["bundle"] / f"mobilenet_v1_w0.25_r128{suffix}"
    out = tmp_path / "r.json"
    code, _, err = _run(["eval", model, "--data", samples / "labels.csv", "--limit", "40", "--json", out], capsys)
    assert code == 0, err
    data = json.loads(out.read_text())
    target = data["target"]
    assert target["preprocessing_source"].startswith("recorded in the file's edgekit metadata")
    assert target["preprocessing"]["mean"] == [128.0] * 3 and target["edgekit"]["weights"]["trained"] is True
    assert data["correct_top1"] >= 12  # Google's weights, fed right (about 46% on these images)
