import numpy as np
import pytest

from domainclust.engine.sampling import cluster_uniform_indices, sample_subset, training_draw
from domainclust.errors import DomainclustError


def unbalanced_labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([5000, 2000, 800, 300, 100, 20])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return labels[rng.permutation(len(labels))], sizes


def test_draws_are_uniform_over_very_unbalanced_clusters() -> None:
    rng = np.random.default_rng(0)
    labels, sizes = unbalanced_labels(rng)
    n_draws = len(labels)
    positions = cluster_uniform_indices(labels, n_draws=n_draws, rng=rng)
    assert len(positions) == n_draws
    counts = np.bincount(labels[positions], minlength=len(sizes))
    expected = n_draws / len(sizes)
    # Multinomial noise would be ~sqrt(expected) ≈ 38; proportional-to-size sampling (the
    # reference code's bug) would give 3021 draws to the largest cluster and 12 to the smallest.
    assert np.all(np.abs(counts - expected) <= 3 * np.sqrt(expected))


def test_draws_within_a_cluster_cover_its_members() -> None:
    rng = np.random.default_rng(1)
    labels, _ = unbalanced_labels(rng)
    positions = cluster_uniform_indices(labels, n_draws=len(labels), rng=rng)
    small = np.flatnonzero(labels == 5)  # 20 members, ~1370 draws: every member is drawn
    assert set(positions[labels[positions] == 5]) == set(small)
    large = np.flatnonzero(labels == 0)  # 5000 members, ~1370 draws: no repeats needed
    drawn = positions[labels[positions] == 0]
    assert len(np.unique(drawn)) == len(drawn)
    assert set(drawn) <= set(large)


@pytest.mark.parametrize("sampler", ["uniform", "plain"])
def test_draw_is_seeded_and_shuffled(sampler: str) -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])

    def draw(seed: int) -> list[int]:
        return training_draw(labels, n_draws=100, rng=np.random.default_rng(seed),
                             sampler=sampler).tolist()

    a, b, c = draw(3), draw(3), draw(4)
    assert a == b and a != c
    assert len(a) == 100
    assert not np.all(np.diff(labels[a]) >= 0)  # not ordered by cluster


def test_plain_draw_follows_cluster_sizes_and_uniform_does_not() -> None:
    labels = np.repeat(np.arange(2), [10, 90])
    rng = np.random.default_rng(0)
    plain = training_draw(labels, n_draws=200, rng=rng, sampler="plain")
    uniform = training_draw(labels, n_draws=200, rng=rng, sampler="uniform")
    assert np.bincount(labels[plain]).tolist() == [20, 180]  # every tile twice
    assert np.bincount(plain, minlength=100).tolist() == [2] * 100
    assert np.bincount(labels[uniform]).tolist() == [100, 100]


def test_unknown_sampler_is_refused() -> None:
    with pytest.raises(DomainclustError, match="unknown sampler 'balanced'"):
        training_draw(np.zeros(4, np.int64), n_draws=4, rng=np.random.default_rng(0),
                      sampler="balanced")


def test_subset_is_unique_sorted_and_seeded() -> None:
    def draw(seed: int) -> np.ndarray:
        return sample_subset(n_total=10_000, subset_size=1234, chunk_len=100,
                             rng=np.random.default_rng(seed))

    s = draw(0)
    assert len(s) == 1234 and len(np.unique(s)) == 1234
    assert np.all(np.diff(s) > 0) and s.min() >= 0 and s.max() < 10_000
    assert np.array_equal(s, draw(0)) and not np.array_equal(s, draw(1))


def test_stratified_subset_spreads_over_all_chunks() -> None:
    s = sample_subset(n_total=10_050, subset_size=2010, chunk_len=100,
                      rng=np.random.default_rng(0))
    per_chunk = np.bincount(s // 100, minlength=101)
    assert per_chunk[:100].min() >= 19 and per_chunk[:100].max() <= 21  # 20 ± remainder


def test_tiles_per_chunk_bounds_the_chunks_read() -> None:
    s = sample_subset(n_total=100_000, subset_size=1000, chunk_len=256, tiles_per_chunk=100,
                      rng=np.random.default_rng(0))
    assert len(s) == 1000 and len(np.unique(s)) == 1000
    assert len(np.unique(s // 256)) == 10  # instead of ~1000 chunks for uniform sampling


def test_whole_pool_when_subset_not_smaller() -> None:
    s = sample_subset(n_total=50, subset_size=None, chunk_len=8, rng=np.random.default_rng(0))
    assert np.array_equal(s, np.arange(50))
    with pytest.raises(DomainclustError):
        sample_subset(n_total=50, subset_size=0, chunk_len=8, rng=np.random.default_rng(0))
