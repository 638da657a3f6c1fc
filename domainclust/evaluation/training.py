"""Helpers shared by everything that trains a network on labelled tiles.

SGD (fused where torch has it), random translations, prediction in eval mode, and BatchNorm
statistics recomputed on the training tiles: a network trained on a few shots has running
statistics from a handful of noisy batches, which penalises a fresh network most of all.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sgd(params: list[nn.Parameter], *, lr: float, momentum: float,
        weight_decay: float) -> torch.optim.SGD:
    """SGD, fused where torch supports it: the unfused update of AlexNet's 57M weights costs
    more than the forward pass of a small batch of small tiles."""
    try:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def augment(x: torch.Tensor, *, shift: float, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random per-tile translation (up to `shift` of the side, border replicated) and h-flip."""
    if shift <= 0 and not flip:
        return x
    n = len(x)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if flip:
        theta[:, 0, 0] = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * shift
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def predict(net: nn.Module, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Class indices for batches of float tiles (eval mode)."""
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net(x.to(device)).argmax(1).cpu() for x in batches]).numpy()


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> None:
    """Replace every BatchNorm's running statistics by those of `x` (exact in one batch, the
    average of per-batch statistics otherwise)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training, momenta = net.training, [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    device = next(net.parameters()).device
    for start in range(0, len(x), batch_size):
        net(x[start : start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)
