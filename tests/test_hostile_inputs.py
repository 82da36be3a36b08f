"""Bad input, one table: each case prepares a folder, runs one command line, and must end with the expected exit
code (0 pass, 1 a check failed, 2 unusable input) and a one-line message that names the problem. The harness
also checks what is left behind: no temporary or staging file, no file that looks finished but is not, and the
user's own files exactly as they were.

To add a case, add a row to CASES: (id, setup, argv, exit code, fragment of the message). ``setup(case)``
receives a ``Case`` with the temporary folder and the shared data, and returns nothing; ``argv`` may use
``{tmp}`` and ``{data}``, filled in after setup.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main

V1_SMALL = ["mobilenet_v1", "--width", "0.25", "--resolution", "128"]
VARIANT = "mobilenet_v1_w0.25_r128"
CSV_HEADER = "file,class_index\n"


@dataclass
class Case:
    tmp: Path
    data: Path
    bundle: Path | None = None  # a fresh copy of a finished fp32 bundle, when the case asks for one


# ------------------------------------------------------------------------------------------ builders
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels and holds almost nothing: a decompression bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def _strip_png(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((1, 200_000), np.uint8)).save(path)  # 274 bytes, 200000x1 pixels


def _csv(case: Case, rows: str, encoding: str = "utf-8", bom: bool = False) -> None:
    text = CSV_HEADER + rows
    raw = text.encode(encoding)
    (case.tmp / "set.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw)


def _sample(case: Case) -> str:
    return str(sorted((case.data / "imagenet-samples" / "images").iterdir())[0])


def _edit_manifest(case: Case, edit) -> None:
    path = case.bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _users_folder(case: Case) -> None:
    folder = case.tmp / "out" / VARIANT
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"mine": true}')
    (folder / "notes.txt").write_text("my notes")


def _previous_bundle(case: Case) -> None:
    folder = case.tmp / "out" / VARIANT
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"format_version": 1, "edgekit_version": "0.1.0", "artifacts": []}')
    (folder / "model.onnx").write_bytes(b"shipped")


def _fifo_csv(case: Case) -> None:
    os.mkfifo(case.tmp / "pipe.jpg")
    _csv(case, f"pipe.jpg,0\n{_sample(case)},0\n")


def _bad_images_csv(case: Case, maker) -> None:
    maker(case.tmp / "bad.png")
    _csv(case, f"bad.png,0\n{_sample(case)},0\n")


def _nothing(case: Case) -> None:
    pass


NEEDS_BUNDLE = "bundle"
EVAL_FILE = ["eval", "{data}/tflite/mobilenet_v1_0.25_128_quant.tflite", "--data", "{tmp}/set.csv"]

# (id, setup, argv, exit code, message fragment); setup NEEDS_BUNDLE first copies the fp32 bundle to {tmp}/b
CASES = [
    # export: checked before any work
    ("unknown-model", _nothing, ["export", "resnet9000", "--out", "{tmp}/out"], 2, "unknown model"),
    ("weights-is-a-folder", _nothing, ["export", *V1_SMALL, "--weights", "{tmp}", "--out", "{tmp}/out"], 2,
     "is a folder"),
    ("huge-num-classes", _nothing, ["export", *V1_SMALL, "--weights", "random", "--num-classes", "100000000",
                                    "--out", "{tmp}/out"], 2, "num_classes must be a positive integer up to 100,000"),
    ("opset-99", _previous_bundle, ["export", *V1_SMALL, "--weights", "random", "--opset", "99",
                                    "--out", "{tmp}/out"], 2, "--opset 99 is outside"),
    ("gate-above-one", _nothing, ["export", *V1_SMALL, "--gate", "int8.cosine_mean=2", "--out", "{tmp}/out"], 2,
     "outside 0..1"),
    ("gate-nan", _nothing, ["export", *V1_SMALL, "--gate", "fp32.cosine_min=nan", "--out", "{tmp}/out"], 2,
     "outside 0..1"),
    ("gate-inf", _nothing, ["export", *V1_SMALL, "--gate", "fp16.psnr_db=inf", "--out", "{tmp}/out"], 2,
     "outside 0..1000"),
    ("gate-150-percent", _nothing, ["export", *V1_SMALL, "--gate", "int8.top1_agreement=150%", "--out",
                                    "{tmp}/out"], 2, "outside 0..1"),
    ("io-dtype-without-int8", _nothing, ["export", *V1_SMALL, "--io-dtype", "uint8", "--out", "{tmp}/out"], 2,
     "--io-dtype applies to int8 files; add --int8"),
    ("calib-method-without-int8", _nothing, ["export", *V1_SMALL, "--calib-method", "entropy", "--out",
                                             "{tmp}/out"], 2, "--calib-method applies to int8 files"),
    ("users-folder-with-a-manifest", _users_folder, ["export", *V1_SMALL, "--weights", "random", "--out",
                                                     "{tmp}/out"], 2, "is not an edgekit bundle"),
    ("out-under-proc", _nothing, ["export", *V1_SMALL, "--weights", "random", "--out", "/proc/edgekit-out"], 2,
     "cannot create output folder /proc/edgekit-out"),
    # eval: data problems
    ("csv-empty-class-index", lambda c: _csv(c, "a.jpg,\n"), EVAL_FILE, 2, "line 2: the row needs both a file"),
    ("csv-not-utf8", lambda c: _csv(c, "caf\u00e9.jpg,1\n", encoding="latin-1"), EVAL_FILE, 2, "is not UTF-8"),
    ("eval-mean-nan", lambda c: _csv(c, "x.jpg,1\n"), [*EVAL_FILE, "--mean", "nan", "1", "1", "--std", "1", "1",
                                                       "1"], 2, "--mean must be finite"),
    ("json-to-a-folder", lambda c: _csv(c, "x.jpg,1\n"), [*EVAL_FILE, "--json", "{tmp}"], 2,
     "cannot write --json"),
    # validate: a tampered bundle never passes, and says why
    ("labels-edited", NEEDS_BUNDLE, ["validate", "{tmp}/b"], 1, "labels.txt: sha256 mismatch"),
    ("labels-deleted", NEEDS_BUNDLE, ["validate", "{tmp}/b"], 1, "labels.txt is missing"),
    ("artifact-entry-removed", NEEDS_BUNDLE, ["validate", "{tmp}/b"], 1, "is in the bundle but not in its manifest"),
    ("artifact-path-escapes", NEEDS_BUNDLE, ["validate", "{tmp}/b"], 1, "outside the bundle"),
    ("artifact-path-absolute", NEEDS_BUNDLE, ["validate", "{tmp}/b"], 1, "outside the bundle (absolute)"),
    ("reference-truncated", NEEDS_BUNDLE, ["validate", "{tmp}/b"], 1, "reference.npz"),
    ("validate-json-to-a-folder", NEEDS_BUNDLE, ["validate", "{tmp}/b", "--json", "{tmp}"], 2,
     "cannot write --json"),
    ("validate-gate-inf", NEEDS_BUNDLE, ["validate", "{tmp}/b", "--gate", "fp32.psnr_db=inf"], 2, "outside 0..1000"),
    # inspect
    ("inspect-images-empty", lambda c: (c.tmp / "empty").mkdir(), ["inspect",
                                                                  "{data}/tflite/mobilenet_v1_0.25_128_quant.tflite",
                                                                  "--images", "{tmp}/empty"], 2, None),
]

# validate cases that need their bundle tampered with after the copy
TAMPER = {
    "labels-edited": lambda c: (c.bundle / "labels.txt").write_text("cat\ndog\n"),
    "labels-deleted": lambda c: (c.bundle / "labels.txt").unlink(),
    "artifact-entry-removed": lambda c: _edit_manifest(c, lambda d: d["artifacts"].pop()),
    "artifact-path-escapes": lambda c: _edit_manifest(c, lambda d: d["artifacts"][0].update(path="../elsewhere.onnx")),
    "artifact-path-absolute": lambda c: _edit_manifest(c, lambda d: d["artifacts"][0].update(path="/etc/passwd")),
    "reference-truncated": lambda c: (c.bundle / "reference.npz").write_bytes(
        (c.bundle / "reference.npz").read_bytes()[:300]),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def fp32_bundle(v1_fp32_bundle) -> Path:
    assert v1_fp32_bundle["code"] == 0, v1_fp32_bundle["stderr"]
    return v1_fp32_bundle["bundle"]


@pytest.mark.parametrize("case_id, setup, argv, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, setup, argv, code, fragment, tmp_path, shared_data, fp32_bundle, capsys, monkeypatch):
    case = Case(tmp_path, shared_data)
    monkeypatch.chdir(tmp_path)
    if setup == NEEDS_BUNDLE:
        case.bundle = Path(shutil.copytree(fp32_bundle, tmp_path / "b"))
        TAMPER.get(case_id, lambda c: None)(case)
    else:
        setup(case)
    before = _snapshot(tmp_path)
    words = [w.format(tmp=tmp_path, data=shared_data) for w in argv]
    assert main(words) == code, capsys.readouterr()
    err = capsys.readouterr().err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("edgekit: error: ")]
        assert len(errors) == 1, err
        assert "Traceback" not in err
        if fragment:
            assert fragment in errors[0], errors[0]
        assert "please report it" not in errors[0]
    after = _snapshot(tmp_path)
    # nothing half-written and nothing new that looks finished; the user's files untouched
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial", ".part"))]
    assert not leftovers, leftovers
    assert {k: v for k, v in before.items()} == {k: after[k] for k in before if k in after}, "a file was changed"
    assert set(before) <= set(after), "a file was removed"
    assert not [name for name in set(after) - set(before) if name.endswith(("manifest.json", ".json"))], \
        set(after) - set(before)


@pytest.mark.parametrize("case_id", [c[0] for c in CASES if c[1] == NEEDS_BUNDLE and c[3] == 1])
def test_validate_names_the_problem(case_id, tmp_path, fp32_bundle, capsys):
    """The exit-1 validate cases of the table, with the problem line read from stdout, where validate's verdict
    goes (exit 1 is a verdict, not an error)."""
    case = Case(tmp_path, Path())
    case.bundle = Path(shutil.copytree(fp32_bundle, tmp_path / "b"))
    TAMPER[case_id](case)
    fragment = next(c[4] for c in CASES if c[0] == case_id)
    assert main(["validate", str(case.bundle)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("problem:")]
    assert any(fragment in line for line in problems), problems


@pytest.mark.parametrize("maker, reason", [
    (lambda p: _png_header_only(p, 10_000, 10_000), "100 megapixels, over the 89 MP limit"),  # edgekit's check
    (lambda p: _png_header_only(p, 20_000, 20_000), "decompression bomb"),  # Pillow's own, at open
    (_strip_png, "too elongated to resize"),
])
def test_pictures_that_would_exhaust_memory_are_skipped_and_named(maker, reason, tmp_path, shared_data, capsys,
                                                                 monkeypatch):
    case = Case(tmp_path, shared_data)
    _bad_images_csv(case, maker)
    out = tmp_path / "eval.json"
    assert main(["eval", str(shared_data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"), "--data",
                 str(tmp_path / "set.csv"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["unreadable"] == 1 and reason in data["unreadable_files"][0]
    assert data["images"] == 1


def test_a_fifo_in_the_data_is_skipped_not_waited_on(tmp_path, shared_data):
    case = Case(tmp_path, shared_data)
    _fifo_csv(case)
    out = tmp_path / "eval.json"
    assert main(["eval", str(shared_data / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"), "--data",
                 str(tmp_path / "set.csv"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["images"] == 1 and "not a regular file" in data["unreadable_files"][0]


def test_a_csv_with_a_byte_order_mark_reads(tmp_path, shared_data):
    case = Case(tmp_path, shared_data)
    _csv(case, f"{_sample(case)},0\n", bom=True)
    from edgekit.images import read_labelled_set

    (item,) = read_labelled_set(tmp_path / "set.csv")
    assert item.label == 0 and item.path.name.startswith("n01440764")


def test_gates_from_a_manifest_are_bounded(tmp_path, fp32_bundle, capsys):
    case = Case(tmp_path, Path())
    case.bundle = Path(shutil.copytree(fp32_bundle, tmp_path / "b"))
    _edit_manifest(case, lambda d: d["gates"]["fp32"].update(cosine_min=-1e9, top1_agreement=2))
    assert main(["validate", str(case.bundle)]) == 0  # the default fp32 gates apply instead, and the files pass
    out = capsys.readouterr().out
    assert "the manifest's fp32 gate: cosine_min threshold -1000000000.0 is outside 0..1" in out
    assert f"checked: {VARIANT}.onnx (sha256 matches, parity re-run); {VARIANT}.tflite (sha256 matches, parity " \
           "re-run); labels.txt (sha256 matches); reference.npz (sha256 matches)" in out


def test_one_bad_manifest_in_a_folder_of_bundles_fails_alone(tmp_path, fp32_bundle, capsys):
    good = Path(shutil.copytree(fp32_bundle, tmp_path / "all" / "good"))
    bad = tmp_path / "all" / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{ not json")
    assert main(["validate", str(tmp_path / "all")]) == 1
    out = capsys.readouterr().out
    assert f"{good}: PASS" in out and f"{bad}: FAIL" in out and "is not a valid edgekit manifest" in out


def test_malformed_mirror_url_is_one_line(monkeypatch, hub_dir, tmp_path, capsys):
    monkeypatch.setenv("EDGEKIT_WEIGHTS_URL", "htp:/mirror")
    assert main(["export", "mobilenet_v2", "--weights", "imagenet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "EDGEKIT_WEIGHTS_URL='htp:/mirror' is not an http(s) or file URL" in err
    assert not (tmp_path / "out" / "mobilenet_v2").exists()


def _unreadable_pictures(folder: Path) -> Path:
    folder.mkdir()
    for i in range(3):
        (folder / f"broken_{i}.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.mark.slow  # two real exports of the smallest MobileNet
@pytest.mark.parametrize("extra, code, said", [
    # finishes, but a gate fails (ONNX alone: which format it is does not matter, a TFLite conversion costs ~6 s)
    (["--gate", "fp32.psnr_db=1000", "--formats", "onnx"], 1, "parity FAILED"),
    (["--int8", "--calib", "{tmp}/unreadable"], 3, "failed: none of the 3 parity images"),  # a step fails
])
def test_a_failed_re_export_leaves_the_shipped_bundle_exactly_as_it_was(extra, code, said, tmp_path, fp32_bundle,
                                                                        capsys):
    out = tmp_path / "exports"
    shipped = Path(shutil.copytree(fp32_bundle, out / VARIANT))
    _unreadable_pictures(tmp_path / "unreadable")
    before = _snapshot(shipped)
    argv = ["export", *V1_SMALL, "--weights", "random", "--latency-runs", "0", "--parity-samples", "2",
            "--out", str(out), *[w.format(tmp=tmp_path) for w in extra]]
    assert main(argv) == code
    said_all = capsys.readouterr()
    assert said in said_all.out + said_all.err
    assert _snapshot(shipped) == before  # not a byte changed
    failed = out / f"{VARIANT}.failed"
    manifest = json.loads((failed / "manifest.json").read_text())
    assert manifest["passed"] is False and (failed / "report.md").is_file()
    assert f"the previous bundle {shipped} is unchanged" in said_all.out + said_all.err
    assert sorted(p.name for p in out.iterdir()) == [VARIANT, f"{VARIANT}.failed"]  # no staging left
    assert main(["validate", str(out)]) == 0  # the folder's bundles: the shipped one, not the failed attempt
    assert main(["validate", str(failed)]) == 1


def test_weights_with_nan_are_refused(tmp_path, capsys):
    import torch

    import edgekit

    state = edgekit.create_model("mobilenet_v1", width=0.25, resolution=128, weights="random").state_dict()
    state["features.3.pw.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    assert main(["info", *V1_SMALL, "--weights", str(tmp_path / "diverged.pt")]) == 2
    assert "hold NaN or infinite values (first: features.3.pw.0.weight)" in capsys.readouterr().err
