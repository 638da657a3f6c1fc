"""Matmul-based k-means and exact k-NN in torch: runs wherever torch runs (CUDA or CPU)."""

from __future__ import annotations

import numpy as np
import torch

from domainclust.clustering.backends.repair import repair_empty_

ASSIGN_BYTES = 1 << 30  # bound on the (batch × k) score matrix of one assignment step


def _rows_per_batch(k: int) -> int:
    return max(1024, ASSIGN_BYTES // (4 * max(k, 1)))


def nearest(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to each row's nearest centroid, batched to bound memory."""
    c_sq = (c * c).sum(1)
    labels, dists = [], []
    for xb in x.split(_rows_per_batch(len(c))):
        scores = torch.addmm(c_sq, xb, c.T, beta=-1, alpha=2)  # 2x·c - |c|² ↔ -|x - c|²
        best, idx = scores.max(1)
        labels.append(idx)
        dists.append(((xb * xb).sum(1) - best).clamp_min(0))
    return torch.cat(labels), torch.cat(dists)


def lloyd(
    x: torch.Tensor, *, k: int, iterations: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from k distinct random points; a cluster that empties during the
    iterations is re-seeded by splitting the largest one (as faiss does)."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    init = torch.randperm(len(x), generator=generator)[:k].to(x.device)
    centroids = x[init].clone()
    for _ in range(iterations):
        labels, _ = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        centroids = torch.where(counts[:, None] > 0,
                                sums / counts.clamp_min(1)[:, None].to(x.dtype), centroids)
        if bool((counts == 0).any()):
            repair_empty_(x, labels, centroids, rng=rng)
    labels, _ = nearest(x, centroids)
    return labels, centroids


class TorchBackend:
    name = "torch"

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def kmeans(
        self, x: torch.Tensor, *, k: int, iterations: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, torch.float32)
        return lloyd(x, k=k, iterations=iterations, seed=seed)

    def knn(
        self, database: torch.Tensor, queries: torch.Tensor, *, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        db = database.to(self.device, torch.float32)
        db_sq = (db * db).sum(1)
        dists, idx = [], []
        for q in queries.to(self.device, torch.float32).split(_rows_per_batch(len(db))):
            scores = torch.addmm(db_sq, q, db.T, beta=-1, alpha=2)
            best, i = scores.topk(k, dim=1)
            dists.append(((q * q).sum(1, keepdim=True) - best).clamp_min(0))
            idx.append(i)
        return torch.cat(dists), torch.cat(idx)
