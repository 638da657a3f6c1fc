"""Full fine-tuning on a few labelled tiles, with its learning rate and length chosen on them.

The same procedure for every initialisation: for each learning rate of the grid, train on part
of the shots and score the held-out shots at each training length of the grid (BatchNorm
statistics recomputed on the training part first); the pair with the best mean score over the
inner folds is then trained on all the shots. With one shot per class the defaults are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from domainclust.evaluation.lowshot.frozen import inner_folds
from domainclust.evaluation.training import augment, predict, recompute_batchnorm, sgd
from domainclust.networks.model import DeepClusterNet


@dataclass(frozen=True)
class FinetuneSettings:
    """The grid and budget of full fine-tuning (identical for every initialisation)."""

    lrs: tuple[float, ...] = (0.003, 0.01, 0.03)
    steps: tuple[int, ...] = (25, 50, 100)  # candidate lengths, scored along one run
    default_lr: float = 0.01
    default_steps: int = 50
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: float = 0.1  # random translation, as a fraction of the tile side
    flip: bool = False  # horizontal flips (off: they change the meaning of digits and text)
    folds: int = 2


def train_steps(
    net: DeepClusterNet, x: torch.Tensor, y: torch.Tensor, *, lr: float, steps: tuple[int, ...],
    settings: FinetuneSettings, seed: int,
    score: Callable[[DeepClusterNet], float] | None = None,
) -> dict[int, float]:
    """Train every layer of `net` for max(steps) SGD steps; `score(net)` after each length in
    `steps` (BatchNorm statistics recomputed on `x` before scoring)."""
    s = settings
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    optimizer = sgd(list(net.parameters()), lr=lr, momentum=s.momentum,
                    weight_decay=s.weight_decay)
    batch = min(s.batch_size, len(x))
    order, cursor = torch.randperm(len(x), generator=generator), 0
    scores: dict[int, float] = {}
    for step in range(1, max(steps) + 1):
        net.train()
        if cursor + batch > len(order):  # a fresh pass over the few shots
            order, cursor = torch.randperm(len(x), generator=generator), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        xb = augment(x[idx], shift=s.shift, flip=s.flip, generator=generator).to(device)
        loss = F.cross_entropy(net(xb), y[idx].to(device))
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        if step in steps:
            recompute_batchnorm(net, x)
            if score is not None:
                scores[step] = score(net)
    return scores


def select_and_finetune(
    make_net: Callable[[], DeepClusterNet], x: torch.Tensor, y: np.ndarray, *,
    settings: FinetuneSettings, seed: int,
) -> tuple[DeepClusterNet, dict[str, object]]:
    """Pick (lr, steps) by inner CV on (x, y), then fine-tune a fresh `make_net()` on all."""
    s = settings
    yt = torch.as_tensor(y)
    folds = inner_folds(y, seed=seed, max_folds=s.folds)
    lr, steps, validated = s.default_lr, s.default_steps, False
    if folds:
        table = np.zeros((len(s.lrs), len(s.steps)))
        for tr, va in folds:
            for i, candidate in enumerate(s.lrs):
                net = make_net()
                scores = train_steps(
                    net, x[tr], yt[tr], lr=candidate, steps=s.steps, settings=s, seed=seed,
                    score=lambda n, va=va: float((predict(n, x[va].split(256)) == y[va]).mean()))
                table[i] += [scores[n] for n in s.steps]
        i, j = np.unravel_index(int(np.argmax(table)), table.shape)
        lr, steps, validated = s.lrs[i], s.steps[j], True
    net = make_net()
    train_steps(net, x, yt, lr=lr, steps=(steps,), settings=s, seed=seed)
    return net, {"lr": lr, "steps": steps, "validated": validated}
