"""Segmentation scores from a pixel confusion matrix: IoU per class, mIoU, Dice, accuracy.

Unlabelled pixels (class -1) are left out. IoU and mIoU count the classes present in the true
masks scored; a class only ever predicted still lowers the IoU of the classes it was taken from.
Dice is reported for binary masks (the foreground class, id 1), as tumour masks are scored.
"""

from __future__ import annotations

import numpy as np


def confusion(true: np.ndarray, pred: np.ndarray, *, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) pixel counts, rows true and columns predicted; true -1 ignored."""
    t, p = np.asarray(true).ravel(), np.asarray(pred).ravel()
    keep = t >= 0
    return np.bincount(t[keep] * n_classes + p[keep],
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(matrix: np.ndarray, *, names: list[str] | None = None) -> dict[str, float]:
    """`miou`, `pixel_accuracy`, `iou/<class>` per class present (named by `names`, else by
    index), and `dice` when binary."""
    m = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(m)
    truth, predicted = m.sum(1), m.sum(0)
    present = np.flatnonzero(truth > 0)
    iou = hits[present] / (truth[present] + predicted[present] - hits[present])
    out = {"miou": float(iou.mean()) if len(iou) else 0.0,
           "pixel_accuracy": float(hits.sum() / max(m.sum(), 1.0))}
    out.update({f"iou/{names[c] if names else int(c)}": float(v) for c, v in zip(present, iou)})
    if len(m) == 2:
        denominator = truth[1] + predicted[1]
        out["dice"] = float(2 * hits[1] / denominator) if denominator else 1.0
    return out
