"""The k-means / k-NN backends: same quality on the same data and seed, probing, fallback."""

import numpy as np
import pytest
import torch

from domainclust.clustering.backends import available, select_backend
from domainclust.clustering.kmeans import kmeans
from domainclust.errors import DomainclustError


def descriptor_like(n: int, d: int, *, seed: int) -> np.ndarray:
    """Unit-norm points around 40 overlapping centres: like whitened DeepCluster descriptors,
    where k-means has many local optima of nearly equal cost."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    x = centres[rng.integers(0, 40, n)] + rng.standard_normal((n, d)) * 1.5
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k", [10, 100])
def test_faiss_and_torch_reach_the_same_objective(k: int) -> None:
    x = descriptor_like(4000, 64, seed=k)
    a = kmeans(x, k=k, seed=3, backend="faiss")
    b = kmeans(x, k=k, seed=3, backend="torch")
    assert (a.backend, b.backend) == ("faiss", "torch")
    assert b.objective == pytest.approx(a.objective, rel=0.01)
    for r in (a, b):
        assert np.bincount(r.labels, minlength=k).min() >= 1
    # Both beat what an unconverged clustering gives: every point on its nearest random centre.
    rng = np.random.default_rng(0)
    start = x[rng.choice(len(x), k, replace=False)]
    naive = ((x[:, None] - start[None]) ** 2).sum(-1).min(1).sum()
    assert a.objective < 0.97 * naive and b.objective < 0.97 * naive


def test_torch_backend_accepts_a_tensor_and_keeps_empty_cluster_repair() -> None:
    x = torch.from_numpy(np.repeat(np.eye(3, 6, dtype=np.float32), 50, axis=0))
    r = kmeans(x, k=12, seed=0, backend="torch")
    # Three distinct points fill at most 3 of the 12 clusters: the other 9 were empty, repaired.
    assert r.n_empty == 9
    assert np.bincount(r.labels, minlength=12).min() >= 1
    assert r.objective == pytest.approx(float(((x.numpy() - r.centroids[r.labels]) ** 2).sum()),
                                        abs=1e-4)


def test_knn_backends_agree() -> None:
    x = torch.from_numpy(descriptor_like(1500, 32, seed=1))
    df, i_f = select_backend("faiss").knn(x, x[:200], k=6)
    dt, i_t = select_backend("torch").knn(x, x[:200], k=6)
    assert torch.allclose(df, dt, atol=1e-4)
    # Indices can differ only where distances tie.
    same = (i_f == i_t).float().mean()
    assert same > 0.99
    assert torch.equal(i_t[:, 0], torch.arange(200))  # each point is its own nearest


def test_auto_on_cpu_takes_faiss_and_reports_cuvs_as_unusable() -> None:
    assert select_backend("auto", device=torch.device("cpu")).name == "faiss"
    status = available(torch.device("cpu"))
    assert status["faiss"] == "ok" and status["torch"] == "ok"
    assert "CUDA" in status["cuvs"] or "ModuleNotFound" in status["cuvs"]


def test_an_explicit_backend_that_does_not_work_here_is_an_error() -> None:
    with pytest.raises(DomainclustError, match="backend 'cuvs' does not work on cpu"):
        select_backend("cuvs", device=torch.device("cpu"))
    with pytest.raises(DomainclustError, match="unknown k-means"):
        kmeans(np.zeros((10, 2), np.float32), k=2, backend="sklearn")
