import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from domainclust.clustering.kmeans import kmeans, repair_empty
from domainclust.errors import DomainclustError

BACKENDS = ["faiss", "torch"]  # cuvs: tests/test_gpu.py


def blobs(n: int = 2000, k: int = 8, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 6
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovers_separated_blobs(backend: str) -> None:
    x, y = blobs()
    r = kmeans(x, k=8, backend=backend, seed=0)
    assert normalized_mutual_info_score(y, r.labels) > 0.8  # one init may merge two blobs
    assert r.centroids.shape == (8, 16)
    expected = float(((x - r.centroids[r.labels]) ** 2).sum())
    assert r.objective == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_empty_cluster_on_duplicated_points(backend: str) -> None:
    # 5 distinct points repeated 200 times, k = 50: plain k-means leaves most clusters empty.
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((5, 8)).astype(np.float32), 200, axis=0)
    r = kmeans(x, k=50, backend=backend, seed=0)
    assert np.bincount(r.labels, minlength=50).min() >= 1
    assert r.n_empty > 0  # the repair did run


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_empty_cluster_with_outliers_and_k_equal_n(backend: str) -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((95, 4)), rng.standard_normal((5, 4)) * 1e4])
    r = kmeans(x.astype(np.float32), k=100, backend=backend, seed=0)
    assert np.array_equal(np.sort(r.labels), np.arange(100))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_seed_gives_the_same_labels(backend: str) -> None:
    x, _ = blobs(seed=2)
    a, b = kmeans(x, k=20, backend=backend, seed=5), kmeans(x, k=20, backend=backend, seed=5)
    assert np.array_equal(a.labels, b.labels)


def test_repair_splits_the_largest_cluster() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    labels = np.zeros(10, dtype=np.int64)
    centroids = np.zeros((3, 1), dtype=np.float32)
    assert repair_empty(x, labels, centroids, rng=np.random.default_rng(0)) == 2
    sizes = np.bincount(labels, minlength=3)
    assert sizes.min() >= 2 and sizes.sum() == 10
    for c in range(3):
        assert centroids[c, 0] == pytest.approx(x[labels == c].mean())


def test_k_larger_than_points_is_refused() -> None:
    with pytest.raises(DomainclustError, match="k=11"):
        kmeans(np.zeros((10, 2), np.float32), k=11)
