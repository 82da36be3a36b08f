"""Weight sources: files (good, corrupt, wrong architecture, malicious), download with hash check, offline."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import edgekit
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.models.download import fetch_checkpoint
from edgekit.models import registry
from edgekit.models.registry import get_spec


@pytest.fixture(scope="module")
def v2_state():
    torch.manual_seed(1)
    return edgekit.create_model("mobilenet_v2", width=0.35, resolution=96).state_dict()


def _same_weights(model, state) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "module_prefix"])
def test_pt_file_loads_strict(tmp_path, v2_state, wrap):
    state = {f"module.{k}": v for k, v in v2_state.items()} if wrap == "module_prefix" else v2_state
    obj = {wrap: state, "epoch": 3} if wrap in ("state_dict", "model") else state
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = edgekit.create_model("mobilenet_v2", width=0.35, resolution=96, weights=path)
    assert _same_weights(model, v2_state)
    info = model.edgekit_config.weights
    assert info.source == "file" and info.trained and info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_safetensors_file(tmp_path, v2_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in v2_state.items()}, str(path))
    assert _same_weights(edgekit.create_model("mobilenet_v2", width=0.35, weights=path), v2_state)


def test_corrupt_files_fail_cleanly(tmp_path, v2_state):
    good = tmp_path / "good.pt"
    torch.save(v2_state, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(EdgekitError, match="corrupt or not a PyTorch checkpoint"):
        edgekit.create_model("mobilenet_v2", width=0.35, weights=truncated)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 100)
    with pytest.raises(EdgekitError, match="safetensors"):
        edgekit.create_model("mobilenet_v2", width=0.35, weights=bad_st)
    with pytest.raises(EdgekitError, match="does not exist"):
        edgekit.create_model("mobilenet_v2", weights=tmp_path / "missing.pt")
    not_state = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_state)
    with pytest.raises(EdgekitError, match="holds no state_dict"):
        edgekit.create_model("mobilenet_v2", weights=not_state)


def test_wrong_architecture_names_keys(tmp_path, v2_state):
    path = tmp_path / "v2_035.pt"
    torch.save(v2_state, path)
    with pytest.raises(EdgekitError, match=r"do not fit mobilenet_v2 width 1: .*wrongly shaped \(features\.0\.0\.weight"):
        edgekit.create_model("mobilenet_v2", weights=path)
    with pytest.raises(EdgekitError, match=r"do not fit efficientnet_b0 .*missing \(.*unexpected \(features\.1\.conv"):
        edgekit.create_model("efficientnet_b0", weights=path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/edgekit_pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"features.0.0.weight": _RunsCode()}, path)  # what a poisoned checkpoint looks like
    Path("/tmp/edgekit_pwned").unlink(missing_ok=True)
    with pytest.raises(EdgekitError, match="refused to load"):
        edgekit.create_model("mobilenet_v2", weights=path)
    assert not Path("/tmp/edgekit_pwned").exists()


def test_num_classes_replaces_classifier(tmp_path, v2_state, capsys):
    path = tmp_path / "w.pt"
    torch.save(v2_state, path)
    inferred = edgekit.create_model("mobilenet_v2", width=0.35, weights=path)
    assert inferred.edgekit_config.num_classes == 1000  # taken from the checkpoint
    model = edgekit.create_model("mobilenet_v2", width=0.35, num_classes=5, weights=path)
    assert model.classifier[1].out_features == 5
    assert "replacing the classifier" in capsys.readouterr().err
    assert "classifier replaced (1000 -> 5)" in model.edgekit_config.weights.note
    assert torch.equal(model.features[3].conv[0][0].weight, v2_state["features.3.conv.0.0.weight"])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def weights_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving files from a folder, standing in for the checkpoint host."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _publish(root: Path, state, stem: str) -> str:
    """Save like torchvision does: <stem>-<first 8 hex of sha256>.pth."""
    tmp = root / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    name = f"{stem}-{digest}.pth"
    tmp.rename(root / name)
    return name


def test_download_checks_hash_and_caches(weights_server, tmp_path, v2_state):
    root, url = weights_server
    name = _publish(root, v2_state, "mobilenet_v2")
    cache = tmp_path / "cache"
    path = fetch_checkpoint(name, url, cache)
    assert path.read_bytes() == (root / name).read_bytes()
    (root / name).unlink()
    assert fetch_checkpoint(name, url, cache) == path  # served from the cache now

    (root / "bad-deadbeef.pth").write_bytes(b"not what the hash says")
    with pytest.raises(EdgekitError, match="corrupt: sha256"):
        fetch_checkpoint("bad-deadbeef.pth", url, cache)
    assert sorted(p.name for p in cache.iterdir()) == [name]  # no partial file left behind


def test_imagenet_weights_from_mirror(weights_server, hub_dir, monkeypatch):
    """The real `imagenet` path end to end, with EDGEKIT_WEIGHTS_URL pointing at the local server."""
    root, url = weights_server
    monkeypatch.setenv("EDGEKIT_WEIGHTS_URL", url)
    torch.manual_seed(2)
    published = edgekit.create_model("mobilenet_v2").state_dict()
    spec = get_spec("mobilenet_v2")
    # Under the registry's own name the content cannot match the hash in the name: refused.
    torch.save(published, root / spec.checkpoint.filename)
    with pytest.raises(EdgekitError, match="corrupt: sha256"):
        edgekit.create_model("mobilenet_v2", weights="imagenet")
    assert not (hub_dir / "checkpoints" / spec.checkpoint.filename).exists()
    # Registered under a name carrying its real hash, it downloads, verifies and loads.
    name = _publish(root, published, "mobilenet_v2")
    monkeypatch.setitem(registry._REGISTRY, "mobilenet_v2",
                        replace(spec, checkpoint=replace(spec.checkpoint, filename=name)))
    model = edgekit.create_model("mobilenet_v2", weights="imagenet")
    assert model.edgekit_config.weights.source == "imagenet"
    assert model.edgekit_config.preprocessing.crop_fraction == pytest.approx(224 / 256)
    assert torch.equal(model.classifier[1].weight, published["classifier.1.weight"])
    # now cached: works with the server gone
    monkeypatch.setenv("EDGEKIT_WEIGHTS_URL", "http://127.0.0.1:9/")
    assert edgekit.create_model("mobilenet_v2", weights="imagenet").edgekit_config.weights.source == "imagenet"


def test_offline_default_falls_back_loudly_explicit_fails(hub_dir, monkeypatch, capsys):
    monkeypatch.setenv("EDGEKIT_WEIGHTS_URL", "http://127.0.0.1:9/")  # discard port: connection refused
    model = edgekit.create_model("mobilenet_v2", weights="default")
    info = model.edgekit_config.weights
    assert info.source == "random" and not info.trained and "cannot download" in info.note
    assert "RANDOM weights" in capsys.readouterr().err
    with pytest.raises(EdgekitError, match="cannot download .*copy mobilenet_v2-b0353104.pth to"):
        edgekit.create_model("mobilenet_v2", weights="imagenet")
    with pytest.raises(EdgekitError, match="no ImageNet checkpoint for mobilenet_v1"):
        edgekit.create_model("mobilenet_v1", weights="imagenet")


def test_cli_reports_weight_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["info", "mobilenet_v2", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "corrupt" in err


def test_weights_path_is_recorded_absolute(tmp_path, v2_state, monkeypatch):
    """Manifests record where the weights are, so a bundle can be re-checked from any folder."""
    torch.save(v2_state, tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    info = edgekit.create_model("mobilenet_v2", width=0.35, weights="w.pt").edgekit_config.weights
    assert info.requested == "w.pt" and info.path == str(tmp_path / "w.pt")
