"""`edgekit models`: the zoo at a glance."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the registered models with params and MACs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..models import create_model, get_spec, list_models
    from ..models.profile import profile_model
    from ..table import format_table, human_count

    rows = []
    for name in list_models():
        spec = get_spec(name)
        model = create_model(name)
        prof = profile_model(model, spec.default_resolution, name)
        rows.append({"name": name, "family": spec.family, "params": prof.params, "macs": prof.macs,
                     "resolution": spec.default_resolution, "paper_resolution": spec.paper_resolution,
                     "imagenet_weights": spec.checkpoint is not None, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(["model", "params", "MACs", "resolution", "imagenet"],
                       [[r["name"], human_count(r["params"]), human_count(r["macs"]), r["resolution"],
                         "yes" if r["imagenet_weights"] else "-"] for r in rows]))
    print("\nnext: edgekit info NAME   or   edgekit export NAME --int8")
    return 0
