"""Per-epoch clustering diagnostics (thesis): NMI between assignments, cluster size statistics."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    return float(normalized_mutual_info_score(a, b))


def nmi_on_common(
    prev_indices: np.ndarray, prev_labels: np.ndarray, indices: np.ndarray, labels: np.ndarray
) -> float | None:
    """NMI between two assignments on the tiles both epochs saw (subsets differ per epoch)."""
    common, ia, ib = np.intersect1d(prev_indices, indices, return_indices=True)
    if len(common) < 2:
        return None
    return nmi(prev_labels[ia], labels[ib])


def cluster_size_stats(labels: np.ndarray, *, k: int) -> dict[str, float]:
    sizes = np.bincount(labels, minlength=k)
    return {
        "cluster_size_min": int(sizes.min()),
        "cluster_size_median": float(np.median(sizes)),
        "cluster_size_max": int(sizes.max()),
    }
