"""`edgekit models`: the zoo at a glance.

Parameters and MACs come from the module graph (``edgekit.models.profile``), counted on PyTorch's meta device:
modules are built without memory and the forward computes shapes, no arithmetic. The figures depend only on the
model code, so they are kept in a cache keyed by that code (``$XDG_CACHE_HOME/edgekit/models-<key>.json``): a
repeated `edgekit models` reads it and never imports torch (about 0.1 s instead of 3 s for torch's import
alone). Any change to ``edgekit/models`` or to edgekit's or torch's version gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from .. import __version__


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the registered models with params and MACs",
                       description="The zoo: parameters, MACs at the default resolution, resolutions, ImageNet "
                                   "weights. Counted once per version of the model code and cached "
                                   "($XDG_CACHE_HOME/edgekit, default ~/.cache/edgekit).")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..table import format_table, human_count

    rows = zoo_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(["model", "params", "MACs", "resolution", "imagenet"],
                       [[r["name"], human_count(r["params"]), human_count(r["macs"]), r["resolution"],
                         "yes" if r["imagenet_weights"] else "-"] for r in rows]))
    print("\nnext: edgekit info NAME   or   edgekit export NAME --int8")
    return 0


def code_key() -> str:
    """What the figures depend on: edgekit's and torch's versions and the source of ``edgekit/models``."""
    digest = hashlib.sha256(f"edgekit {__version__}\n".encode())
    try:
        digest.update(f"torch {metadata.version('torch')}\n".encode())
    except metadata.PackageNotFoundError:
        pass
    models = Path(__file__).resolve().parents[1] / "models"
    for source in sorted(models.glob("*.py")) + [models.parent / "types.py"]:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def cache_path(key: str | None = None) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"
    return root / f"models-{key or code_key()}.json"


def zoo_rows() -> list[dict]:
    """One row per registered model, from the cache when the model code is unchanged, else counted and cached."""
    path = cache_path()
    try:
        rows = json.loads(path.read_text("utf-8"))
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and "macs" in r for r in rows):
            return rows
    except (OSError, ValueError):
        pass
    rows = count_zoo()
    try:
        from ..fileio import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
    except OSError:
        pass  # a read-only home: the figures are still right, only not kept
    return rows


def count_zoo(names: list[str] | None = None) -> list[dict]:
    """Parameters and MACs of every registered model (or of ``names``) at its default options, on the meta device
    (no weights are allocated or initialised, no arithmetic runs)."""
    import torch

    from ..models import get_spec, list_models
    from ..models.profile import MetaShapesOnly, profile_model
    from ..models.registry import build_model, resolve_config

    rows = []
    for name in names or list_models():
        spec = get_spec(name)
        with torch.device("meta"), MetaShapesOnly():
            model = build_model(resolve_config(name))
            prof = profile_model(model, spec.default_resolution, name)
        rows.append({"name": name, "family": spec.family, "params": prof.params, "macs": prof.macs,
                     "resolution": spec.default_resolution, "paper_resolution": spec.paper_resolution,
                     "imagenet_weights": spec.checkpoint is not None, "description": spec.description})
    return rows
