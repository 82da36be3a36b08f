"""The training loop: the frozen prefix's outputs cached once, the trainable suffix trained on them, a
checkpoint after every epoch.

Cache of augmented views: with a frozen prefix, augmentation can only happen before it, so each training
picture gets ``views`` augmented views plus its plain evaluation crop, all run through the prefix once; every
epoch then draws one of them per picture. That keeps augmentation (the head never sees the same crop every
epoch) at a fixed cost of (views + 1) forward passes per picture, however many epochs run; a cache of
un-augmented features alone would be cheaper but lets a head on a few dozen pictures memorise them. When the
cache would not fit in memory (many pictures, an early boundary) fresh views go through the prefix each epoch.

The checkpoint holds the trainable tensors, the best epoch's copy, the optimizer state and every epoch's figures
(torch.save, read back with ``weights_only=True``); it is written atomically and keyed by the data's file-list hash
and the options, so a rerun of the same command resumes and a changed one starts over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..console import Progress, info, warn
from ..fileio import atomic_path
from ..images import normalize
from ..types import Preprocessing
from .data import DecodedSet, augmented_view
from .network import Schedule, Split

CACHE_LIMIT_BYTES = 2 << 30  # cached prefix outputs above this are recomputed each epoch instead
_DISK_CACHE_LIMIT_BYTES = 512 << 20  # larger caches are not saved for a resume (writing them costs more)
_FORWARD_BATCH = 32
WEIGHT_DECAY = 1e-4


@dataclass
class Examples:
    """What the training loop reads: per training picture its cached views (or None: drawn fresh), the validation
    inputs after the prefix, and the labels."""

    train_items: list[int]  # indices into the decoded set
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    val: torch.Tensor
    train_views: torch.Tensor | None  # [n_train, views + 1, ...] prefix outputs, or None (uncached)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"val": self.val}
        if self.train_views is not None:
            out["train_views"] = self.train_views
        return out


@dataclass
class Outcome:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    resumed_from: int = 0
    cache: str = ""


def view_pixels(decoded: DecodedSet, item: int, view: int, resolution: int, rng_key: tuple[int, ...]) -> np.ndarray:
    """View 0 is the evaluation crop; others are augmented, seeded by ``rng_key`` so a resume redraws the same."""
    picture = decoded.pictures[item]
    if view == 0:
        return picture.centre
    return augmented_view(picture, resolution, np.random.default_rng(rng_key))


def _run_prefix(split: Split, arrays: list[np.ndarray], preprocessing: Preprocessing) -> torch.Tensor:
    x = torch.from_numpy(normalize(np.stack(arrays), preprocessing))
    return split.prefix(x.contiguous(memory_format=torch.channels_last))  # faster convolutions (torch_predictor)


def build_examples(split: Split, decoded: DecodedSet, train_items: list[int], val_items: list[int],
                   labels: list[int], schedule: Schedule, resolution: int, preprocessing: Preprocessing, seed: int,
                   disk_cache: Path | None, key: str) -> tuple[Examples, str]:
    """Prefix outputs of the validation crops and (when they fit) of every training view."""
    train_labels = torch.tensor([labels[i] for i in train_items])
    val_labels = torch.tensor([labels[i] for i in val_items])
    if disk_cache is not None and disk_cache.is_file():
        stored = torch.load(disk_cache, map_location="cpu", weights_only=True)
        if stored.get("key") == key:
            views = stored.get("train_views")
            info(f"[edgekit] features of {len(val_items)} validation and {len(train_items)} training pictures read "
                 f"from the cache of the interrupted run")
            return (Examples(train_items, train_labels, val_labels, stored["val"], views),
                    stored.get("description", "cached"))
    probe = _run_prefix(split, [decoded.pictures[val_items[0]].centre], preprocessing)
    per_view = probe[0].numel() * probe.element_size()
    views = schedule.views + 1
    cache_train = split.cached and len(train_items) * views * per_view <= CACHE_LIMIT_BYTES
    what = ("pooled features" if split.cached and not split.unfreeze_last else
            f"inputs of the last {split.unfreeze_last} blocks" if split.cached else "pictures")
    if not split.cached:
        description = ("no cache (every layer trains): " + ("a fresh augmented view of each picture every epoch"
                                                             if schedule.views else "the plain crops, not augmented"))
    elif cache_train:
        description = (f"{what} of {views} views per training picture (the evaluation crop + {schedule.views} "
                       f"augmented) computed once")
    else:
        description = (f"{what} would need {len(train_items) * views * per_view / 2**30:.1f} GiB for {views} views per "
                       "picture: fresh augmented views through the frozen layers each epoch instead")
    total = len(val_items) + (len(train_items) * views if cache_train else 0)
    progress = Progress("frozen-layer features" if split.cached else "validation pictures", total)
    val = _in_batches([decoded.pictures[i].centre for i in val_items], split, preprocessing, progress)
    train_views = None
    if cache_train:
        pairs = [(item, view) for item in train_items for view in range(views)]
        arrays = (view_pixels(decoded, item, view, resolution, (seed, item, view))
                  for item, view in pairs)
        flat = _in_batches(arrays, split, preprocessing, progress, count=len(pairs))
        train_views = flat.reshape(len(train_items), views, *flat.shape[1:])
    examples = Examples(train_items, train_labels, val_labels, val, train_views)
    size = sum(t.numel() * t.element_size() for t in examples.tensors().values())
    if disk_cache is not None and split.cached and size <= _DISK_CACHE_LIMIT_BYTES:
        with atomic_path(disk_cache) as tmp:
            torch.save({"key": key, "description": description, **examples.tensors()}, tmp)
    return examples, description


def _resolution(decoded: DecodedSet, item: int) -> int:
    return decoded.pictures[item].centre.shape[0]


def _in_batches(arrays, split: Split, preprocessing: Preprocessing, progress: Progress,
                count: int | None = None) -> torch.Tensor:
    out, batch = [], []
    for array in arrays:
        batch.append(array)
        if len(batch) == _FORWARD_BATCH:
            out.append(_run_prefix(split, batch, preprocessing))
            progress.advance(len(batch))
            batch = []
    if batch:
        out.append(_run_prefix(split, batch, preprocessing))
        progress.advance(len(batch))
    return torch.cat(out)


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW computes it. Written out
    because constructing any torch.optim optimizer imports torch._dynamo, several seconds on a small CPU, longer
    than training a head takes; ``state_dict`` holds tensors and numbers only (checkpoint-safe)."""

    def __init__(self, groups: list[dict], weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.groups, self.weight_decay, self.betas, self.eps = groups, weight_decay, betas, eps
        self.step_count = 0
        self.moments = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in g["params"]] for g in groups]

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1 ** self.step_count, 1 - beta2 ** self.step_count
        for group, moments in zip(self.groups, self.moments):
            lr = group["lr"]
            for p, (m, v) in zip(group["params"], moments):
                if p.grad is None:
                    continue
                p.mul_(1 - lr * self.weight_decay)
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denominator = (v / correction2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denominator, value=-lr / correction1)

    def state_dict(self) -> dict:
        return {"step": self.step_count, "moments": [[(m.clone(), v.clone()) for m, v in g] for g in self.moments]}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        for mine, stored in zip(self.moments, state["moments"]):
            for (m, v), (m_stored, v_stored) in zip(mine, stored):
                m.copy_(m_stored)
                v.copy_(v_stored)


def train(split: Split, examples: Examples, decoded: DecodedSet, schedule: Schedule, preprocessing: Preprocessing,
          seed: int, checkpoint: Path, key: str) -> Outcome:
    """``schedule.epochs`` epochs of AdamW (weight decay WEIGHT_DECAY) on cross-entropy; the best validation
    epoch (top-1, then loss) is kept. Resumes from ``checkpoint`` when its key matches."""
    params = split.trainable()
    optimizer = AdamW(split.parameter_groups(schedule.lr), WEIGHT_DECAY)
    outcome = Outcome()
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            with torch.no_grad():
                for name, value in state["trainable"].items():
                    params[name].copy_(value)
            optimizer.load_state_dict(state["optimizer"])
            outcome.history = list(state["history"])
            outcome.best_epoch = int(state["best_epoch"])
            outcome.best_state = dict(state["best"])
            outcome.resumed_from = len(outcome.history)
            info(f"[edgekit] resuming the interrupted run after epoch {outcome.resumed_from}/{schedule.epochs}")
        else:
            warn(f"{checkpoint} belongs to a run with other data or options; starting over")
    n_train = len(examples.train_items)
    resolution = _resolution(decoded, examples.train_items[0])
    for epoch in range(outcome.resumed_from, schedule.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng((seed, 1_000_000 + epoch))
        order = rng.permutation(n_train)
        chosen_views = rng.integers(0, schedule.views + 1, n_train)
        loss_sum, correct = 0.0, 0
        split.model.eval()  # batch norm and dropout stay in inference mode (see network.py)
        for start in range(0, n_train, schedule.batch_size):
            batch = order[start:start + schedule.batch_size]
            x = _train_inputs(split, examples, decoded, batch, chosen_views, epoch, seed, resolution, preprocessing,
                              augment=schedule.views > 0)
            y = examples.train_labels[batch]
            logits = split.suffix(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
            correct += int((logits.detach().argmax(1) == y).sum())
        val_loss, val_correct = _validate(split, examples, schedule.batch_size)
        n_val = len(examples.val_labels)
        record = {"epoch": epoch + 1, "train_loss": round(loss_sum / n_train, 6), "train_top1": round(correct / n_train, 6),
                  "val_loss": round(val_loss, 6), "val_top1": round(val_correct / n_val, 6),
                  "val_correct": val_correct, "seconds": round(time.perf_counter() - started, 3)}
        outcome.history.append(record)
        best = outcome.history[outcome.best_epoch - 1] if outcome.best_epoch else None
        if best is None or (record["val_top1"], -record["val_loss"]) > (best["val_top1"], -best["val_loss"]):
            outcome.best_epoch = epoch + 1
            outcome.best_state = {name: p.detach().clone() for name, p in params.items()}
        info(f"  epoch {epoch + 1:>{len(str(schedule.epochs))}}/{schedule.epochs}  train loss {record['train_loss']:.4f} "
             f"top-1 {100 * record['train_top1']:5.1f}%  |  val loss {record['val_loss']:.4f} top-1 "
             f"{100 * record['val_top1']:5.1f}% ({val_correct}/{n_val})  {record['seconds']:.1f}s"
             + ("  best" if outcome.best_epoch == epoch + 1 else ""))
        with atomic_path(checkpoint) as tmp:
            torch.save({"key": key, "trainable": {n: p.detach().clone() for n, p in params.items()},
                        "optimizer": optimizer.state_dict(), "history": outcome.history,
                        "best_epoch": outcome.best_epoch, "best": outcome.best_state}, tmp)
    return outcome


def _train_inputs(split: Split, examples: Examples, decoded: DecodedSet, batch: np.ndarray, views: np.ndarray,
                  epoch: int, seed: int, resolution: int, preprocessing: Preprocessing, augment: bool) -> torch.Tensor:
    if examples.train_views is not None:
        return examples.train_views[torch.from_numpy(batch), torch.from_numpy(views[batch])]
    # uncached: a fresh augmented view of each picture (the plain crop with --views 0), through the frozen layers
    # (if any) without gradients
    arrays = [view_pixels(decoded, examples.train_items[i], int(augment), resolution,
                          (seed, examples.train_items[i], 1_000 + epoch)) for i in batch]
    return _run_prefix(split, arrays, preprocessing)


@torch.no_grad()
def _validate(split: Split, examples: Examples, batch_size: int) -> tuple[float, int]:
    loss_sum, correct = 0.0, 0
    n = len(examples.val_labels)
    for start in range(0, n, max(batch_size, 64)):
        logits = split.suffix(examples.val[start:start + max(batch_size, 64)])
        y = examples.val_labels[start:start + len(logits)]
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / n, correct
