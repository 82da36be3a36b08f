"""The network side of a fine-tune: a new classifier head, which blocks train, and the schedule defaults.

The model is split in two at a block boundary: a frozen ``prefix`` (run once per picture view, its outputs
cached) and a trainable ``suffix`` that ends in the new head. ``--freeze backbone`` puts the boundary at the
head's input (only the head trains, on cached pooled features); ``--unfreeze-last N`` moves it N blocks of
``model.features`` back; ``--freeze none`` trains everything on fresh pictures each epoch.

Batch norm always stays in eval mode: its statistics are ImageNet's (or, for Google's .tflite weights, the
identity with the folded bias), and re-estimating them from batches of a few dozen pictures would wreck them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import EdgekitError

# Families whose output is not one score per class: no classifier head to replace
_NOT_CLASSIFIERS = {"unet": "it outputs a segmentation mask", "siamese": "it outputs an embedding, not classes"}
BACKBONE_LR_FACTOR = 0.1  # unfrozen blocks learn 10x slower than the new head: they start from trained weights


@dataclass(frozen=True)
class Schedule:
    """What trains and how long; ``reasons`` says why each default was chosen."""

    freeze: str  # backbone | none
    unfreeze_last: int
    epochs: int
    lr: float
    batch_size: int
    views: int  # augmented views per training picture whose prefix outputs are cached
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"freeze": self.freeze, "unfreeze_last": self.unfreeze_last, "epochs": self.epochs, "lr": self.lr,
                "backbone_lr": self.lr * BACKBONE_LR_FACTOR if self.freeze == "none" or self.unfreeze_last else None,
                "batch_size": self.batch_size, "views": self.views, "defaults": list(self.reasons)}


def default_schedule(per_class: int, *, has_blocks: bool, freeze: str | None, unfreeze_last: int | None,
                     epochs: int | None, lr: float | None, batch_size: int | None, views: int | None) -> Schedule:
    """Defaults from the smallest class's training pictures: a frozen backbone below 100 (a linear head on good
    features is what a few dozen pictures can fit), the last 2 blocks unfrozen from 100, the last 4 from 500
    (for networks built as a sequence of blocks; others train the head only unless --freeze none)."""
    reasons = []
    if freeze is None:
        freeze = "backbone"
        if unfreeze_last is None:
            unfreeze_last = 0 if per_class < 100 or not has_blocks else 2 if per_class < 500 else 4
            reasons.append(f"{'frozen backbone' if not unfreeze_last else f'last {unfreeze_last} blocks unfrozen'} "
                           f"({per_class} training pictures in the smallest class; "
                           f"{'< 100' if per_class < 100 else '100-499' if per_class < 500 else '>= 500'})")
    elif freeze == "none" and unfreeze_last:
        raise EdgekitError("--freeze none trains every block; --unfreeze-last applies to --freeze backbone: drop one")
    unfreeze_last = unfreeze_last or 0
    head_only = freeze == "backbone" and not unfreeze_last
    if epochs is None:
        epochs = 30 if head_only else 12
        reasons.append(f"{epochs} epochs ({'head on cached features: cheap' if head_only else 'blocks train'})")
    if lr is None:
        # head alone: 3e-3 gave a lower validation loss than 1e-3 (0.46 vs 0.64, mean of 3 folds) and wider
        # top-1 margins on benchmarks/finetune_groups.py's task; 1e-2 overshot (0.76)
        lr = 3e-3 if head_only else 1e-3
        reasons.append(f"lr {lr:g} (AdamW){'' if head_only else f'; unfrozen blocks {lr * BACKBONE_LR_FACTOR:g}'}")
    if batch_size is None:
        batch_size = 32
    if views is None:
        views = 4
    if views and freeze == "none":
        reasons.append("no cached views with --freeze none: every epoch draws fresh augmented views")
    return Schedule(freeze, unfreeze_last, epochs, lr, batch_size, views, tuple(reasons))


def check_family(spec) -> None:
    """A registered model finetune can retarget (a ``ModelSpec``): RGB pictures in, one score per class out."""
    reason = _NOT_CLASSIFIERS.get(spec.family)
    if reason is None and spec.in_channels != 3:
        reason = f"it reads {spec.in_channels}-channel pictures, not RGB photos"
    if reason:
        raise EdgekitError(f"{spec.name} has no classifier head to replace ({reason}); finetune takes an image "
                           "classifier such as mobilenet_v2, mobilenet_v1, efficientnet_b0 or resnet18")


def check_classifier(model: nn.Module) -> None:
    """The built model ends in a Linear classifier and carries trained weights."""
    config = model.edgekit_config
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise EdgekitError(f"{config.name} has no classifier head to replace (no Linear layer); finetune takes an "
                           "image classifier such as mobilenet_v2, mobilenet_v1, efficientnet_b0 or resnet18")
    if not config.weights.trained:
        raise EdgekitError(f"{config.name} would start from random weights ({config.weights.note or 'none given'}); "
                           "fine-tuning starts from trained weights: pass --weights imagenet or a weights file "
                           "(e.g. Google's mobilenet .tflite)")


def head_name(model: nn.Module) -> str:
    """Dotted name of the final Linear layer (the classifier to replace)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def replace_head(model: nn.Module, num_classes: int, seed: int) -> nn.Linear:
    """A new, seeded Linear(in_features, num_classes) in place of the final one."""
    name = head_name(model)
    old = model.get_submodule(name)
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(old.in_features, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    model.set_submodule(name, head)
    return head


class Split:
    """The model cut into a frozen prefix and a trainable suffix (see the module docstring)."""

    def __init__(self, model: nn.Module, freeze: str, unfreeze_last: int):
        self.model = model.eval()
        self.freeze, self.unfreeze_last = freeze, unfreeze_last
        self.head = model.get_submodule(head_name(model))
        features = getattr(model, "features", None)
        if unfreeze_last:
            if not isinstance(features, nn.Sequential):
                raise EdgekitError(f"--unfreeze-last counts blocks of a network built as a sequence of blocks "
                                   f"(MobileNet, EfficientNet, VGG); {model.edgekit_config.name} is not: use --freeze "
                                   "backbone (head only) or --freeze none")
            if unfreeze_last >= len(features):
                raise EdgekitError(f"--unfreeze-last {unfreeze_last}: {model.edgekit_config.name} has {len(features)} "
                                   f"blocks; use 1..{len(features) - 1}, or --freeze none to train them all")
            self.frozen_blocks = features[:len(features) - unfreeze_last]
            self.trained_blocks = features[len(features) - unfreeze_last:]
        for p in model.parameters():
            p.requires_grad_(freeze == "none")
        if freeze != "none":
            for module in ([self.trained_blocks] if unfreeze_last else []) + [self.head]:
                for p in module.parameters():
                    p.requires_grad_(True)

    @property
    def cached(self) -> bool:
        """Whether a prefix exists whose outputs can be computed once per view."""
        return self.freeze != "none"

    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def parameter_groups(self, lr: float) -> list[dict]:
        head = [p for p in self.head.parameters()]
        rest = [p for p in self.trainable().values() if all(p is not h for h in head)]
        groups = [{"params": head, "lr": lr}]
        if rest:
            groups.append({"params": rest, "lr": lr * BACKBONE_LR_FACTOR})
        return groups

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part's output: the head's input (head only), or the first trained block's input."""
        if self.freeze == "none":
            return x
        if self.unfreeze_last:
            return self.frozen_blocks(x)
        captured = []
        hook = self.head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            self.model(x)
        finally:
            hook.remove()
        return captured[-1]

    def suffix(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from a prefix output."""
        if self.freeze == "none":
            return self.model(x)
        if self.unfreeze_last:
            with _features_replaced(self.model, self.trained_blocks):
                return self.model(x)
        return self.head(x)


@contextmanager
def _features_replaced(model: nn.Module, blocks: nn.Module):
    """Run the model's own forward (pooling, flatten, classifier) with ``features`` cut to its last blocks."""
    features = model.features
    model.features = blocks
    try:
        yield
    finally:
        model.features = features
