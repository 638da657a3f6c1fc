"""What a practitioner tries before a network: the most frequent class, and a per-pixel
logistic regression on the channels of a small neighbourhood.

Both are fitted on the shots' labelled pixels only. The logistic regression's L2 penalty is
chosen by inner cross-validation over the shot tiles (mIoU on the held-out tiles), the default
when there are too few tiles to hold any out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from domainclust.segmentation.metrics import confusion, scores

BASELINES = ("majority", "pixel_logistic")
NEIGHBOURHOOD = 3  # pixels per side: a pixel and its 8 neighbours
MAX_PIXELS = 20000  # labelled pixels a fit uses at most (a seeded sample)
PENALTIES = (0.01, 0.1, 1.0)  # sklearn's C: inverse L2 strength
DEFAULT_PENALTY = 0.1


def neighbourhood_features(x: torch.Tensor, *, size: int = NEIGHBOURHOOD) -> np.ndarray:
    """(N*H*W, C*size*size) the channels of every pixel's `size` x `size` neighbourhood
    (borders replicated), pixels in (tile, row, col) order."""
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    patches = F.unfold(padded, kernel_size=size)  # (N, C*size*size, H*W)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1]).numpy().astype(np.float32)


@dataclass
class PixelLogistic:
    """Per-pixel logistic regression on standardised neighbourhood channels."""

    model: LogisticRegression
    mean: np.ndarray
    std: np.ndarray
    n_classes: int
    fallback: int  # the one class seen, when the shots hold a single class

    @classmethod
    def fit(cls, x: torch.Tensor, y: np.ndarray, *, n_classes: int, penalty: float,
            seed: int, balanced: bool = False) -> PixelLogistic:
        f, t = neighbourhood_features(x), y.ravel()
        keep = np.flatnonzero(t >= 0)
        rng = np.random.default_rng(seed)
        if len(keep) > MAX_PIXELS:
            keep = np.sort(rng.choice(keep, size=MAX_PIXELS, replace=False))
        f, t = f[keep], t[keep]
        mean, std = f.mean(0), f.std(0) + 1e-6
        model = LogisticRegression(C=penalty, max_iter=300,
                                   class_weight="balanced" if balanced else None)
        seen = np.unique(t)
        if len(seen) > 1:
            model.fit((f - mean) / std, t)
        return cls(model=model, mean=mean, std=std, n_classes=n_classes, fallback=int(seen[0]))

    def predict(self, x: torch.Tensor) -> np.ndarray:
        n, _, h, w = x.shape
        if not hasattr(self.model, "classes_"):
            return np.full((n, h, w), self.fallback, dtype=np.int64)
        out = []
        for start in range(0, n, 64):
            f = neighbourhood_features(x[start:start + 64])
            out.append(self.model.classes_[self.model.predict_proba((f - self.mean) / self.std)
                                           .argmax(1)])
        return np.concatenate(out).reshape(n, h, w).astype(np.int64)


def fit_pixel_logistic(x: torch.Tensor, y: np.ndarray, *, n_classes: int, folds: list,
                       seed: int, balanced: bool = False
                       ) -> tuple[PixelLogistic, dict[str, object]]:
    """The penalty with the best mean inner-CV mIoU over `folds` (tile index pairs), refitted
    on every shot; the default penalty when `folds` is empty. `balanced`: classes weighted by
    the inverse of their pixel share."""
    penalty, validated = DEFAULT_PENALTY, False
    if folds:
        means = []
        for c in PENALTIES:
            fold_scores = []
            for tr, va in folds:
                fit = PixelLogistic.fit(x[tr], y[tr], n_classes=n_classes, penalty=c, seed=seed,
                                        balanced=balanced)
                matrix = confusion(y[va], fit.predict(x[va]), n_classes=n_classes)
                fold_scores.append(scores(matrix)["miou"])
            means.append(np.mean(fold_scores))
        penalty, validated = PENALTIES[int(np.argmax(means))], True
    model = PixelLogistic.fit(x, y, n_classes=n_classes, penalty=penalty, seed=seed,
                              balanced=balanced)
    return model, {"C": penalty, "validated": validated, "neighbourhood": NEIGHBOURHOOD,
                   "balanced": balanced}


def majority_class(y: np.ndarray) -> int:
    """The most frequent labelled class of the shots' pixels (ties: the smaller id)."""
    t = y[y >= 0]
    return int(np.bincount(t).argmax())
