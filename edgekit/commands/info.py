"""`edgekit info NAME`: the per-stage table of one configuration and what depthwise separability saves."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="per-stage params and MACs of one model")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--width", type=float, help="width multiplier (MobileNets)")
    p.add_argument("--resolution", type=int, help="input size in pixels")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--weights", default="random",
                   help="random (default; enough for counting) | imagenet | FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=run, keep_background=False)


def run(args) -> int:
    from ..models.profile import profile_model
    from ..table import format_table, human_count
    from .common import model_from_args

    model = model_from_args(args)
    cfg = model.edgekit_config
    prof = profile_model(model, cfg.resolution, cfg.name)
    if args.json:
        data = prof.to_dict() | {"config": cfg.to_dict()}
        print(json.dumps(data, indent=2))
        return 0
    print(f"{cfg.name}  width {cfg.width:g}  resolution {cfg.resolution}  classes {cfg.num_classes}  "
          f"padding {cfg.padding}  weights {cfg.weights.source}")
    print(format_table(["block", "repeats", "channels", "stride", "output", "params", "MACs"],
                       [[r.block, r.repeats, r.channels, r.stride, f"{r.output_size}x{r.output_size}",
                         f"{r.params:,}", human_count(r.macs)] for r in prof.stages]
                       + [["total", "", "", "", "", f"{prof.params:,}", human_count(prof.macs)]]))
    sep = prof.separable
    if sep:
        print(f"\ndepthwise-separable layers: {human_count(sep.separable_macs)} MACs; as standard convolutions "
              f"they would cost {human_count(sep.standard_macs)} ({sep.ratio:.3f}x, i.e. "
              f"{1 / sep.ratio:.1f}x cheaper; the paper's 1/N + 1/Dk^2 = {sep.theory_ratio:.3f})")
    for note in prof.notes():  # Inception's 1x1 bottlenecks, ResNet's shortcuts
        print(f"\n{note}")
    return 0
