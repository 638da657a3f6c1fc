import numpy as np
import pytest
from sklearn.metrics import homogeneity_score, normalized_mutual_info_score

from domainclust.clustering.pic import knn_graph, pic


def unit_blobs(scale: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, 32))
    y = rng.integers(0, 6, 1500)
    x = centers[y] + 0.05 * rng.standard_normal((1500, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * scale).astype(np.float32), y


def test_finds_well_separated_groups_without_collapsing_to_singletons() -> None:
    x, y = unit_blobs()
    r = pic(x)
    assert homogeneity_score(y, r.labels) > 0.99  # no cluster mixes two groups
    assert 6 <= r.n_clusters <= 150  # not ~1500 singletons
    assert np.bincount(r.labels).min() >= 2  # singletons were merged
    assert normalized_mutual_info_score(y, r.labels) > 0.5


def test_bandwidth_adapts_to_the_scale_of_the_data() -> None:
    x, _ = unit_blobs()
    small, large = pic(x), pic(x * 1000)
    assert np.array_equal(small.labels, large.labels)
    assert large.sigma == pytest.approx(1000 * small.sigma, rel=1e-3)


def test_knn_graph_excludes_self_even_with_duplicates() -> None:
    x = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)
    idx, dist = knn_graph(x, neighbors=2)
    assert np.all(idx != np.arange(12)[:, None])
    assert np.allclose(dist, 0)
