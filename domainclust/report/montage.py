"""Which tiles each cluster holds: the largest clusters and a seeded random set, with purity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from domainclust.report.figures import Figure, grid, png_bytes, pyplot


@dataclass(frozen=True)
class ClusterSample:
    """A cluster of the last epoch and the tiles shown for it."""

    cluster: int
    size: int
    group: str  # "largest" | "random"
    members: np.ndarray  # positions into the epoch's assignment arrays
    purity: float | None  # share of the majority label among labelled members
    majority: int | None


def choose_clusters(
    labels: np.ndarray,
    *,
    truth: np.ndarray | None,
    n_largest: int,
    n_random: int,
    per_cluster: int,
    seed: int,
) -> list[ClusterSample]:
    """The `n_largest` biggest clusters, then `n_random` other non-empty ones, drawn with `seed`.

    `truth` holds the tiles' labels aligned with `labels` (-1: unlabelled), or None.
    """
    rng = np.random.default_rng(seed)
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    largest = [int(c) for c in order[:n_largest] if sizes[c] > 0]
    others = np.setdiff1d(np.flatnonzero(sizes), largest)
    chosen = rng.choice(others, size=min(n_random, len(others)), replace=False) if len(others) else []
    out = []
    for group, clusters in (("largest", largest), ("random", sorted(int(c) for c in chosen))):
        for c in clusters:
            where = np.flatnonzero(labels == c)
            members = np.sort(rng.choice(where, size=min(per_cluster, len(where)), replace=False))
            purity, majority = _purity(truth[where]) if truth is not None else (None, None)
            out.append(ClusterSample(cluster=c, size=int(sizes[c]), group=group, members=members,
                                     purity=purity, majority=majority))
    return out


def _purity(truth: np.ndarray) -> tuple[float | None, int | None]:
    known = truth[truth >= 0]
    if not len(known):
        return None, None
    counts = np.bincount(known)
    return float(counts.max() / len(known)), int(counts.argmax())


def mean_purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Size-weighted purity of the whole clustering (labelled tiles only)."""
    known = truth >= 0
    if not known.any():
        return float("nan")
    table = np.zeros((int(labels.max()) + 1, int(truth.max()) + 1), np.int64)
    np.add.at(table, (labels[known], truth[known]), 1)
    return float(table.max(axis=1).sum() / known.sum())


def montage_figure(
    samples: list[ClusterSample],
    images: dict[int, np.ndarray],
    *,
    positions: np.ndarray,
    class_names: Sequence[str] | None,
    caption: str,
) -> Figure:
    """One row per cluster. `images` maps a store index to its rendered (H, W, 3) tile and
    `positions` maps assignment positions to store indices."""
    plt = pyplot()
    per_row = max(len(s.members) for s in samples)
    first = next(iter(images.values()))
    blank = np.full_like(first, 255)
    row_h = 0.75 * first.shape[0] / 32 if first.shape[0] > 32 else 0.75
    fig, axes = plt.subplots(len(samples), 1, figsize=(11, row_h * len(samples) + 0.4),
                             squeeze=False)
    for ax, s in zip(axes[:, 0], samples):
        tiles = [images[int(positions[m])] for m in s.members]
        ax.imshow(grid(tiles + [blank] * (per_row - len(tiles)), columns=per_row),
                  interpolation="nearest")
        ax.set_axis_off()
        ax.text(-0.01, 0.5, _row_label(s, class_names), ha="right", va="center", fontsize=8,
                transform=ax.transAxes)
    fig.subplots_adjust(left=0.28, right=0.99, top=0.99, bottom=0.01, hspace=0.15)
    return Figure("clusters", "Tiles per cluster", caption, png_bytes(fig))


def _row_label(s: ClusterSample, class_names: Sequence[str] | None) -> str:
    text = f"{s.group}: cluster {s.cluster}, {s.size} tiles"
    if s.purity is not None:
        name = (class_names[s.majority] if class_names and s.majority is not None
                and s.majority < len(class_names) else str(s.majority))
        text += f"\npurity {s.purity:.2f} (label {name})"
    return text
