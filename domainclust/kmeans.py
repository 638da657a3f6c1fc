"""k-means with faiss (CPU, or GPU when faiss has GPUs) or torch (matmul-based, CUDA when present).

Both backends end with `repair_empty`, so no cluster is ever empty: DeepCluster's head has one
output per cluster and an empty one would be a class with no examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from domainclust.errors import DomainclustError

BACKENDS = ("auto", "faiss", "torch")


@dataclass
class KMeansResult:
    labels: np.ndarray  # (N,) int64
    centroids: np.ndarray  # (k, d) float32
    objective: float  # sum of squared distances to the assigned centroid
    n_empty: int  # empty clusters found (and repaired) after the final assignment


def repair_empty(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, *, rng: np.random.Generator
) -> int:
    """Re-seed every empty cluster by splitting a non-empty one, in place; returns how many.

    The empty centroid takes the donor's centroid plus a small random perturbation; the donor's
    points are ordered along that perturbation and split in two halves, so the split works
    even when all the donor's points are identical.
    """
    k = len(centroids)
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    for e in empty:
        donor = int(np.argmax(counts))
        if counts[donor] < 2:
            raise DomainclustError(f"cannot fill {k} clusters from {len(x)} points")
        members = np.flatnonzero(labels == donor)
        direction = rng.standard_normal(x.shape[1]).astype(np.float32)
        direction /= np.linalg.norm(direction) + 1e-12
        order = members[np.argsort(x[members] @ direction, kind="stable")]
        moved = order[len(order) // 2 :]
        labels[moved] = e
        centroids[e] = x[moved].mean(0)
        centroids[donor] = x[order[: len(order) // 2]].mean(0)
        counts[e], counts[donor] = len(moved), len(order) - len(moved)
    return len(empty)


def faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _faiss_kmeans(
    x: np.ndarray, *, k: int, iterations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    use_gpu = faiss_has_gpu()
    # max_points_per_centroid large: no subsampling of points (the paper's setting).
    km = faiss.Kmeans(
        x.shape[1], k, niter=iterations, seed=seed, gpu=use_gpu,
        max_points_per_centroid=len(x) + 1, min_points_per_centroid=1, verbose=False,
    )
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64), km.centroids.copy()


def _assign(x: torch.Tensor, c: torch.Tensor, batch: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance, batched to bound memory."""
    c_sq = (c * c).sum(1)
    labels, dists = [], []
    for xb in x.split(batch):
        scores = xb @ c.T * 2 - c_sq  # argmax of 2x·c - |c|² = argmin |x - c|²
        best, idx = scores.max(1)
        labels.append(idx)
        dists.append(((xb * xb).sum(1) - best).clamp_min(0))
    return torch.cat(labels), torch.cat(dists)


def _torch_kmeans(
    x: np.ndarray, *, k: int, iterations: int, seed: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(x).to(device)
    centroids = xt[torch.from_numpy(rng.choice(len(x), size=k, replace=False)).to(device)].clone()
    for _ in range(iterations):
        labels, _ = _assign(xt, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xt)
        counts = torch.bincount(labels, minlength=k).to(xt.dtype)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
        if not bool(nonempty.all()):
            lab, cen = labels.cpu().numpy(), centroids.cpu().numpy()
            repair_empty(x, lab, cen, rng=rng)
            centroids = torch.from_numpy(cen).to(device)
    labels, _ = _assign(xt, centroids)
    return labels.cpu().numpy().astype(np.int64), centroids.cpu().numpy()


def kmeans(
    x: np.ndarray,
    *,
    k: int,
    iterations: int = 20,
    seed: int = 0,
    backend: str = "auto",
    device: torch.device | None = None,
) -> KMeansResult:
    """Cluster the rows of `x` into exactly `k` non-empty clusters."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if k < 1 or k > len(x):
        raise DomainclustError(
            f"k={k} clusters cannot be formed from {len(x)} tiles; lower k (--set k=...) "
            "or raise subset_size"
        )
    if backend not in BACKENDS:
        raise DomainclustError(f"unknown k-means backend '{backend}'; choose {', '.join(BACKENDS)}")
    device = device or torch.device("cpu")
    if backend == "auto":
        backend = "torch" if device.type == "cuda" and not faiss_has_gpu() else "faiss"
    if backend == "faiss":
        labels, centroids = _faiss_kmeans(x, k=k, iterations=iterations, seed=seed)
    else:
        labels, centroids = _torch_kmeans(x, k=k, iterations=iterations, seed=seed, device=device)
    n_empty = repair_empty(x, labels, centroids, rng=np.random.default_rng(seed + 1))
    objective = float(((x - centroids[labels]) ** 2).sum())
    return KMeansResult(labels=labels, centroids=centroids, objective=objective, n_empty=n_empty)
