"""k-means into exactly k non-empty clusters, on the backend that works here (faiss, cuVS, torch).

Every backend's result ends with `repair_empty`, so no cluster is ever empty: DeepCluster's
head has one output per cluster and an empty one would be a class with no examples. Input may
be a host array or a tensor on the GPU; a GPU tensor stays there (no host round trip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from domainclust.clustering.backends import select_backend
from domainclust.clustering.backends.repair import repair_empty_
from domainclust.errors import DomainclustError


@dataclass
class KMeansResult:
    labels: np.ndarray  # (N,) int64
    centroids: np.ndarray  # (k, d) float32
    objective: float  # sum of squared distances to the assigned centroid
    n_empty: int  # empty clusters found (and repaired) after the final assignment
    backend: str = "torch"


def repair_empty(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, *, rng: np.random.Generator
) -> int:
    """`repair_empty_` on host arrays (modified in place)."""
    return repair_empty_(torch.from_numpy(x), torch.from_numpy(labels),
                         torch.from_numpy(centroids), rng=rng)


def kmeans(
    x: np.ndarray | torch.Tensor,
    *,
    k: int,
    iterations: int = 20,
    seed: int = 0,
    backend: str = "auto",
    device: torch.device | None = None,
) -> KMeansResult:
    """Cluster the rows of `x` into exactly `k` non-empty clusters.

    `device` defaults to where `x` lives; `backend="auto"` takes the first backend that
    works on that device (see `domainclust.clustering.backends`).
    """
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32) if isinstance(x, np.ndarray)
                         else x).float()
    if k < 1 or k > len(xt):
        raise DomainclustError(
            f"k={k} clusters cannot be formed from {len(xt)} tiles; lower k (--set k=...) "
            "or raise subset_size"
        )
    device = torch.device(device) if device is not None else xt.device
    impl = select_backend(backend, device=device)
    xt = xt.to(device)
    labels, centroids = impl.kmeans(xt, k=k, iterations=iterations, seed=seed)
    labels, centroids = labels.to(device).long().clone(), centroids.to(device).float().clone()
    n_empty = repair_empty_(xt, labels, centroids, rng=np.random.default_rng(seed + 1))
    objective = float(((xt - centroids[labels]) ** 2).sum(dtype=torch.float64))
    return KMeansResult(labels=labels.cpu().numpy(), centroids=centroids.cpu().numpy(),
                        objective=objective, n_empty=n_empty, backend=impl.name)
