"""Low-shot fine-tuning: n labelled tiles per class, pretrained vs the same network at random init.

Two protocols: `all` fine-tunes the whole network (new top layer, BatchNorm in training mode,
SGD with random translations) for a fixed number of steps; `head` keeps the backbone frozen and
fits a logistic regression on its ReLU'd clustering feature. Pretrained and random-init runs get
the same budget, the same shots and the same test split. Every draw is seeded by
(seed, repeat, shots), so a run is reproducible and each repeat draws fresh shots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from domainclust.evaluation.linear import fit_linear
from domainclust.model import DeepClusterNet

PROTOCOLS = ("all", "head")


@dataclass
class FinetuneSettings:
    """The budget of one fine-tuning run (identical for pretrained and random init)."""

    steps: int = 20  # a 10-repeat run over 1, 5, 10 shots takes minutes on 2 CPU cores at 32 px
    batch_size: int = 32
    lr: float = 0.005  # 0.01-0.02 made the pretrained AlexNet's 20-step runs unstable on MNIST
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: float = 0.1  # random translation, as a fraction of the tile side
    flip: bool = False  # horizontal flips (off: they change the meaning of digits and text)
    head_weight_decay: float = 1e-3


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % 2**31)


def augment(x: torch.Tensor, *, shift: float, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random per-tile translation (up to `shift` of the side, zero fill) and optional h-flip."""
    if shift <= 0 and not flip:
        return x
    n = len(x)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if flip:
        theta[:, 0, 0] = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * shift
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def predict(net: DeepClusterNet, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Class indices for batches of float tiles (eval mode)."""
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net(x.to(device)).argmax(1).cpu() for x in batches]).numpy()


def sgd(params: list[torch.nn.Parameter], *, lr: float, momentum: float,
        weight_decay: float) -> torch.optim.SGD:
    """SGD, fused where torch supports it: the unfused update of AlexNet's 57M weights costs
    more than the forward pass of a small batch of small tiles."""
    try:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def finetune_all(
    net: DeepClusterNet, x: torch.Tensor, y: torch.Tensor, *, settings: FinetuneSettings,
    seed: int,
) -> DeepClusterNet:
    """Train every layer of `net` (its top layer already sized to the classes) on (x, y)."""
    s = settings
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    optimizer = sgd(list(net.parameters()), lr=s.lr, momentum=s.momentum,
                    weight_decay=s.weight_decay)
    batch = min(s.batch_size, len(x))
    order = torch.randperm(len(x), generator=generator)
    cursor = 0
    net.train()
    for _ in range(s.steps):
        if cursor + batch > len(order):  # a fresh epoch over the few shots
            order, cursor = torch.randperm(len(x), generator=generator), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        xb = augment(x[idx], shift=s.shift, flip=s.flip, generator=generator).to(device)
        loss = F.cross_entropy(net(xb), y[idx].to(device))
        optimizer.zero_grad(set_to_none=False)  # reuse grad buffers: no page faults
        loss.backward()
        optimizer.step()
    return net


@torch.no_grad()
def head_features(net: DeepClusterNet, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """L2-normalised ReLU'd clustering features of frozen `net` (eval mode)."""
    net.eval()
    device = next(net.parameters()).device
    parts = [F.normalize(torch.relu(net.features(x.to(device))), dim=1).cpu() for x in batches]
    return torch.cat(parts).numpy()


def head_accuracy(
    train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, *,
    settings: FinetuneSettings, seed: int,
) -> float:
    """Top-1 of a logistic regression on frozen (already L2-normalised) features."""
    probe = fit_linear(train, y_train, weight_decay=settings.head_weight_decay, seed=seed,
                       standardise=False)
    return probe.accuracy(test, y_test)
