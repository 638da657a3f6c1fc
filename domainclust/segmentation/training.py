"""Training a segmentation network on a few masked tiles, its learning rate and length chosen
on them by inner cross-validation over the shot tiles (the classification protocol's rule).

`frozen` trains the decoder only, the trunk in eval mode; `finetune` trains every layer and
recomputes the trunk's BatchNorm statistics on the shots before each score. With a single shot
tile nothing can be held out and the defaults are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from domainclust.evaluation.training import recompute_batchnorm, sgd
from domainclust.segmentation.decoder import SegmentationNet
from domainclust.segmentation.metrics import confusion, scores

PROTOCOLS = ("frozen", "finetune")


@dataclass(frozen=True)
class SegmentSettings:
    """The grid and budget of decoder / full training (identical for every initialisation)."""

    lrs: tuple[float, ...] = (0.003, 0.01, 0.03)
    steps: tuple[int, ...] = (50, 100, 200)  # candidate lengths, scored along one run
    default_lr: float = 0.01
    default_steps: int = 100
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 5e-4
    flip: bool = False  # flips and quarter turns (tile and mask together): off for anatomy
    folds: int = 2
    decoder_width: int = 32
    # Weight every class by the inverse of its share of the shots' labelled pixels (sklearn's
    # "balanced"), networks and pixel baseline alike: a rare class such as a small tumour is
    # otherwise learnt as never present.
    balance_classes: bool = False


def balanced_weights(y: torch.Tensor, *, n_classes: int) -> torch.Tensor:
    """(n_classes,) labelled pixels / (classes present x pixels of each class); 1 for a class
    absent from `y` (no pixel of it is weighted)."""
    counts = torch.bincount(y[y >= 0].ravel(), minlength=n_classes).double()
    present = counts > 0
    weights = torch.ones(n_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def tile_folds(n: int, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `folds` (train, held-out) splits of `n` shot tiles; none below two tiles."""
    k = min(folds, n)
    if k < 2:
        return []
    fold_of = np.random.default_rng(seed).permutation(n) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def dihedral(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each tile and its mask under the same random flip and quarter turn."""
    xs, ys = [], []
    for xi, yi in zip(x, y):
        turns = int(torch.randint(4, (1,), generator=generator))
        flip = bool(torch.randint(2, (1,), generator=generator))
        xi, yi = torch.rot90(xi, turns, (-2, -1)), torch.rot90(yi, turns, (-2, -1))
        if flip:
            xi, yi = xi.flip(-1), yi.flip(-1)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


@torch.no_grad()
def predict_masks(net: SegmentationNet, x: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
    """(N, H, W) class indices for float tiles `x` (eval mode)."""
    net.eval()
    device = next(net.parameters()).device
    out = [net(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x),
                                                                               batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, *x.shape[-2:]), np.int64)


def train_segmenter(
    net: SegmentationNet, x: torch.Tensor, y: torch.Tensor, *, lr: float, steps: tuple[int, ...],
    frozen: bool, settings: SegmentSettings, seed: int,
    score: Callable[[SegmentationNet], float] | None = None,
) -> dict[int, float]:
    """Train for max(steps) SGD steps (the decoder only when `frozen`); `score(net)` after each
    length in `steps`."""
    s = settings
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    params = net.decoder_parameters() if frozen else list(net.parameters())
    optimizer = sgd(params, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)
    batch = min(s.batch_size, len(x))
    n_classes = net.classify.out_channels
    weight = (balanced_weights(y, n_classes=n_classes).to(device) if s.balance_classes
              else None)
    order, cursor = torch.randperm(len(x), generator=generator), 0
    results: dict[int, float] = {}
    for step in range(1, max(steps) + 1):
        net.train()
        if frozen:
            net.trunk.eval()
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(x), generator=generator), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        xb, yb = x[idx], y[idx]
        if s.flip:
            xb, yb = dihedral(xb, yb, generator=generator)
        xb, yb = xb.to(device), yb.to(device)
        if frozen:
            with torch.no_grad():
                maps = net.encode(xb)
            logits = net.decode(maps, size=tuple(xb.shape[-2:]))
        else:
            logits = net(xb)
        loss = F.cross_entropy(logits, yb, weight=weight, ignore_index=-1)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        if step in steps:
            if not frozen:
                recompute_batchnorm(net, x)
            if score is not None:
                results[step] = score(net)
    return results


def select_and_train(
    make_net: Callable[[], SegmentationNet], x: torch.Tensor, y: np.ndarray, *, n_classes: int,
    frozen: bool, settings: SegmentSettings, seed: int,
) -> tuple[SegmentationNet, dict[str, object]]:
    """Pick (lr, steps) by mean inner-CV mIoU over the shot tiles, then train a fresh
    `make_net()` on every shot. A grid of one (lr, steps) is used as it is: nothing to pick."""
    s = settings
    yt = torch.as_tensor(y, dtype=torch.int64)
    folds = tile_folds(len(x), folds=s.folds, seed=seed)
    lr, steps, validated = s.default_lr, s.default_steps, False
    if len(s.lrs) == len(s.steps) == 1:
        lr, steps = s.lrs[0], s.steps[0]
    elif folds:
        table = np.zeros((len(s.lrs), len(s.steps)))
        for tr, va in folds:
            def held_out(net: SegmentationNet, va: np.ndarray = va) -> float:
                pred = predict_masks(net, x[va])
                return scores(confusion(y[va], pred, n_classes=n_classes))["miou"]

            for i, candidate in enumerate(s.lrs):
                found = train_segmenter(make_net(), x[tr], yt[tr], lr=candidate, steps=s.steps,
                                        frozen=frozen, settings=s, seed=seed, score=held_out)
                table[i] += [found[n] for n in s.steps]
        i, j = np.unravel_index(int(np.argmax(table)), table.shape)
        lr, steps, validated = s.lrs[i], s.steps[j], True
    net = make_net()
    train_segmenter(net, x, yt, lr=lr, steps=(steps,), frozen=frozen, settings=s, seed=seed)
    return net, {"lr": lr, "steps": steps, "validated": validated}
