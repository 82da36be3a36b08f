"""Shared fixtures: the read-only test data beside the checkout, and seeded randomness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "imagenet-samples" / "labels.csv").exists():
        pytest.fail(f"shared test data missing at {SHARED_DATA}; set EDGEKIT_DATA to the folder")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, so no test sees checkpoints a developer happens to have."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch_home" / "hub"
