"""Which tiles an epoch sees: the epoch subset (thesis Algorithm 2) and the training draw."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from domainclust.config import SAMPLERS, one_of
from domainclust.errors import DomainclustError


def sample_subset(
    *,
    n_total: int,
    subset_size: int | None,
    chunk_len: int,
    rng: np.random.Generator,
    tiles_per_chunk: int | None = None,
) -> np.ndarray:
    """Sorted indices of this epoch's subset X~ of the pool X.

    With `tiles_per_chunk=None` every chunk contributes its proportional share (stratified,
    so the subset is spread over the whole pool and every chunk is read once, sequentially).
    A number bounds the tiles taken from each chunk: fewer, randomly chosen chunks are read,
    which is what makes a small subset of a huge pool cheap to stage.
    """
    if subset_size is None or subset_size >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if subset_size <= 0:
        raise DomainclustError(f"subset_size must be positive, got {subset_size}")
    n_chunks = -(-n_total // chunk_len)
    sizes = np.full(n_chunks, chunk_len)
    sizes[-1] = n_total - chunk_len * (n_chunks - 1)
    if tiles_per_chunk is None:
        # Stratified: each chunk gets floor(share) tiles, the remainder goes to random chunks.
        share = sizes * subset_size / n_total
        take = np.floor(share).astype(np.int64)
        extra = subset_size - take.sum()
        if extra:
            weights = share - take
            chosen = rng.choice(n_chunks, size=extra, replace=False, p=weights / weights.sum())
            take[chosen] += 1
    else:
        take = np.zeros(n_chunks, dtype=np.int64)
        per = np.minimum(sizes, tiles_per_chunk)
        for chunk in rng.permutation(n_chunks):
            take[chunk] = min(per[chunk], subset_size - take.sum())
            if take.sum() == subset_size:
                break
    picks = [
        chunk * chunk_len + rng.choice(sizes[chunk], size=int(t), replace=False)
        for chunk, t in enumerate(take)
        if t
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def cluster_uniform_indices(
    labels: np.ndarray, *, n_draws: int, rng: np.random.Generator
) -> np.ndarray:
    """`n_draws` positions into `labels`, equally many from every non-empty cluster.

    Each cluster gets n_draws // k draws (the remainder goes to random clusters), drawn without
    replacement while the cluster is large enough and with replacement beyond. The order is
    shuffled. Unlike the reference code, the returned positions index `labels` itself.
    """
    labels = np.asarray(labels)
    clusters = np.unique(labels)
    k = len(clusters)
    if k == 0 or n_draws <= 0:
        return np.zeros(0, dtype=np.int64)
    per = np.full(k, n_draws // k)
    per[rng.choice(k, size=n_draws % k, replace=False)] += 1
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], clusters)
    ends = np.searchsorted(labels[order], clusters, side="right")
    out = []
    for start, end, count in zip(starts, ends, per):
        members = order[start:end]
        out.append(rng.choice(members, size=int(count), replace=count > len(members)))
    positions = np.concatenate(out)
    return positions[rng.permutation(len(positions))].astype(np.int64)


def rank_share(positions: np.ndarray, *, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s part of one global draw: every `world`-th position.

    The parts are disjoint and together are the global draw, so the draws stay uniform over
    clusters across ranks; with per-rank batches of B / world, global step i of the ranks is
    exactly the global draw's i-th batch of B.
    """
    return positions[rank::world]


def training_draw(
    labels: np.ndarray, *, n_draws: int, rng: np.random.Generator, sampler: str = "uniform"
) -> np.ndarray:
    """An epoch's training positions into `labels`: `uniform` over clusters (the paper's, so
    no large cluster dominates the updates) or `plain`, uniform over tiles (its ablation)."""
    if sampler == "uniform":
        return cluster_uniform_indices(labels, n_draws=n_draws, rng=rng)
    if sampler == "plain":
        n = len(labels)
        if n == 0 or n_draws <= 0:
            return np.zeros(0, dtype=np.int64)
        passes = [rng.permutation(n) for _ in range(-(-n_draws // n))]
        return np.concatenate(passes)[:n_draws].astype(np.int64)
    raise DomainclustError(f"unknown sampler '{sampler}'; choose {one_of(SAMPLERS)}")


class EpochSampler(torch.utils.data.Sampler[int]):
    """A torch Sampler over fixed positions (this rank's share of one epoch's draw)."""

    def __init__(self, positions: np.ndarray) -> None:
        self.indices = np.asarray(positions, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices.tolist())

    def __len__(self) -> int:
        return len(self.indices)
