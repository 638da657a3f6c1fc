"""Power iteration clustering (PIC) on a k-NN graph (faiss, cuVS or torch), as DeepCluster's second clusterer.

The graph's Gaussian kernel uses a bandwidth scaled to the data (the mean squared k-NN
distance): the reference's fixed σ=0.2 on unit-norm descriptors underflows every edge weight
and every point becomes its own cluster. Clusters are the basins of the stationary vector of a
lazy random walk; singletons join the cluster of their nearest non-singleton neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from domainclust.clustering.backends import select_backend
from domainclust.errors import DomainclustError

ALPHA = 0.001  # teleport weight of the random walk (reference value)
ITERATIONS = 200


@dataclass
class PICResult:
    labels: np.ndarray  # (N,) int64, clusters numbered 0..n_clusters-1
    n_clusters: int
    sigma: float
    n_singletons: int  # singletons before they were merged


def knn_graph(
    x: np.ndarray, *, neighbors: int, backend: str = "auto", device: torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared L2 distances of each row's `neighbors` nearest other rows."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    dist_t, idx_t = select_backend(backend, device=device).knn(xt, xt, k=neighbors + 1)
    dist, idx = dist_t.cpu().numpy(), idx_t.cpu().numpy()
    # Drop each point's self-match (it is not always in column 0 when points are duplicated).
    keep = idx != np.arange(len(x))[:, None]
    first = np.argsort(~keep, axis=1, kind="stable")[:, :neighbors]
    return np.take_along_axis(idx, first, 1), np.take_along_axis(dist, first, 1)


def pic(
    x: np.ndarray,
    *,
    neighbors: int = 5,
    seed: int = 0,
    backend: str = "auto",
    device: torch.device | None = None,
) -> PICResult:
    """Cluster the rows of `x`; the number of clusters is found from the data."""
    n = len(x)
    if n <= neighbors:
        raise DomainclustError(f"PIC needs more than {neighbors} tiles, got {n}")
    del seed  # PIC is deterministic; the argument keeps the clusterers interchangeable
    x = x.cpu().numpy() if isinstance(x, torch.Tensor) else x
    idx, dist = knn_graph(x, neighbors=neighbors, backend=backend, device=device)
    sigma2 = float(dist.mean()) or 1.0
    weights = np.exp(-dist / sigma2)
    rows = np.repeat(np.arange(n), neighbors)
    graph = scipy.sparse.csr_matrix((weights.ravel(), (rows, idx.ravel())), shape=(n, n))
    graph = (graph + graph.T).tocsr()  # symmetric affinity

    v = np.full(n, 1.0 / n)
    graph_t = graph.T.tocsr()
    for _ in range(ITERATIONS):
        v = ALPHA * graph_t @ v + (1 - ALPHA) / n
        v /= v.sum()
    labels = _basins(graph, v)
    labels, n_singletons = _merge_singletons(labels, idx)
    _, labels = np.unique(labels, return_inverse=True)
    return PICResult(
        labels=labels.astype(np.int64), n_clusters=int(labels.max()) + 1,
        sigma=float(np.sqrt(sigma2)), n_singletons=n_singletons,
    )


def _basins(graph: scipy.sparse.csr_matrix, v: np.ndarray) -> np.ndarray:
    """Each node points to the neighbour that most increases v; roots are local maxima."""
    n = len(v)
    parent = np.arange(n)
    best = np.zeros(n)
    coo = graph.tocoo()
    gain = coo.data * (v[coo.col] - v[coo.row])
    order = np.argsort(gain, kind="stable")  # later (larger) gains overwrite earlier ones
    rows, cols, gains = coo.row[order], coo.col[order], gain[order]
    positive = gains > best[rows]
    parent[rows[positive]] = cols[positive]
    # Follow pointers to the roots (pointer jumping: log-depth).
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def _merge_singletons(labels: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, int]:
    sizes = np.bincount(labels, minlength=len(labels))
    single = np.flatnonzero(sizes[labels] == 1)
    labels = labels.copy()
    for i in single:
        for j in idx[i]:
            if sizes[labels[j]] > 1:
                labels[i] = labels[j]
                break
    return labels, len(single)
