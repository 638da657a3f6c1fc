"""Empty-cluster repair shared by the k-means backends and the final result."""

from __future__ import annotations

import numpy as np
import torch

from domainclust.errors import DomainclustError


def repair_empty_(
    x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, *, rng: np.random.Generator
) -> int:
    """Re-seed every empty cluster by splitting the largest one, in place; returns how many.

    The donor's points are ordered along a random direction and split in two halves, so the
    split works even when all the donor's points are identical. Runs on the tensors' device.
    """
    k = len(centroids)
    counts = torch.bincount(labels, minlength=k)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    for e in empty:
        donor = int(torch.argmax(counts))
        if int(counts[donor]) < 2:
            raise DomainclustError(f"cannot fill {k} clusters from {len(x)} points")
        members = torch.nonzero(labels == donor).flatten()
        direction = torch.from_numpy(rng.standard_normal(x.shape[1]).astype(np.float32))
        direction = (direction / (direction.norm() + 1e-12)).to(x.device)
        order = members[torch.argsort(x[members] @ direction, stable=True)]
        half = len(order) // 2
        moved, kept = order[half:], order[:half]
        labels[moved] = e
        centroids[e] = x[moved].mean(0)
        centroids[donor] = x[kept].mean(0)
        counts[e], counts[donor] = len(moved), len(kept)
    return len(empty)
