"""Frozen features + logistic regression for a few labelled tiles, tuned only on those tiles.

Every method (raw pixels, channel statistics, a network at random init or pretrained) goes
through the same path: its features are standardised with statistics of *unlabelled* tiles of
the training pool, then the layer (for networks) and the L2 penalty are chosen by stratified
cross-validation on the training shots alone, and the classifier is refit on all of them. With
one shot per class nothing can be validated, so the documented defaults are used for every
method alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from domainclust.evaluation.grids import (
    LOW_SHOT_DEFAULT_WEIGHT_DECAY,
    LOW_SHOT_WEIGHT_DECAYS,
    SWEEP_ITER,
)
from domainclust.evaluation.probes.linear import LinearClassifier, fit_linear, floor_spread

MAX_FOLDS = 3


@dataclass(frozen=True)
class Standardiser:
    """Per-dimension z-score with statistics of unlabelled tiles (spreads floored as in
    `linear.floor_spread`)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        return cls(mean=x.mean(0), std=floor_spread(torch.from_numpy(x.std(0))).numpy())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class Choice:
    """What inner cross-validation picked (or the defaults, `validated=False`)."""

    layer: str
    weight_decay: float
    validated: bool
    score: float | None = None


def inner_folds(y: np.ndarray, *, seed: int, max_folds: int = MAX_FOLDS
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over the shots; empty when a class has a single shot."""
    classes, counts = np.unique(y, return_counts=True)
    k = min(max_folds, int(counts.min()))
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), np.int64)
    for c in classes:
        members = rng.permutation(np.flatnonzero(y == c))
        fold_of[members] = np.arange(len(members)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def choose(
    features: dict[str, np.ndarray], y: np.ndarray, *, default_layer: str, seed: int,
    weight_decays: tuple[float, ...] = LOW_SHOT_WEIGHT_DECAYS,
) -> Choice:
    """Layer and L2 penalty with the best mean inner-CV accuracy (first one on ties)."""
    folds = inner_folds(y, seed=seed)
    if not folds:
        return Choice(layer=default_layer, weight_decay=LOW_SHOT_DEFAULT_WEIGHT_DECAY, validated=False)
    best: Choice | None = None
    for layer, x in features.items():
        for wd in weight_decays:
            score = float(np.mean([
                fit_linear(x[tr], y[tr], weight_decay=wd, max_iter=SWEEP_ITER, seed=seed,
                           standardise=False).accuracy(x[va], y[va])
                for tr, va in folds]))
            if best is None or score > best.score:
                best = Choice(layer=layer, weight_decay=wd, validated=True, score=score)
    assert best is not None
    return best


def fit_frozen(x: np.ndarray, y: np.ndarray, *, choice: Choice, seed: int) -> LinearClassifier:
    return fit_linear(x, y, weight_decay=choice.weight_decay, seed=seed, standardise=False)
