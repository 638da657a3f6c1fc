"""Labelled evaluation sets: a TileStore's labels, checked against its tiles, and seeded splits.

A label below 0 marks a tile without a label; such tiles take part in no evaluation. Splits hold
tile indices (into the store), are stratified by class and drawn from a seed, or read from an
explicit `.npz` file with `train` and `test` arrays so a protocol can be repeated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domainclust.errors import DomainclustError
from domainclust.store import TileStore


@dataclass(frozen=True)
class Split:
    """Tile indices of the training and the held-out test part of a labelled set."""

    train: np.ndarray
    test: np.ndarray
    source: str  # "seed=0, test_fraction=0.2" or the split file

    def describe(self) -> str:
        return f"{len(self.train)} train / {len(self.test)} test tiles ({self.source})"


def read_labels_file(path: Path | str, *, n_tiles: int) -> np.ndarray:
    """Integer labels from a `.npy` file or a text file with one label per line."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            labels = np.load(path, allow_pickle=False)
        else:
            labels = np.loadtxt(path, dtype=np.int64, ndmin=1, delimiter=",")
    except (OSError, ValueError) as exc:
        raise DomainclustError(f"cannot read labels from {path}: {exc}") from None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DomainclustError(f"{path} must hold one integer label per tile, got {labels.shape} "
                               f"{labels.dtype}")
    if len(labels) != n_tiles:
        raise DomainclustError(f"{path} holds {len(labels)} labels but the store has {n_tiles} "
                               "tiles; give exactly one label per tile (-1 for unlabelled)")
    return labels.astype(np.int64)


def store_labels(store: TileStore, *, labels_path: Path | str | None = None) -> np.ndarray:
    """(N,) labels of every tile of `store` (-1: unlabelled), from the store or `labels_path`."""
    if labels_path is not None:
        return read_labels_file(labels_path, n_tiles=store.n)
    if not store.has_labels:
        raise DomainclustError(
            f"store {store.path} has no labels; evaluation needs a labelled store (ingest one with "
            "labels) or a --labels file with one label per tile"
        )
    labels = np.asarray(store.labels)
    if len(labels) != store.n:
        raise DomainclustError(
            f"store {store.path} holds {len(labels)} labels for {store.n} tiles; its labels do not "
            "match its tiles, re-ingest it"
        )
    if not (labels >= 0).any():
        raise DomainclustError(f"store {store.path} has no labelled tile (all labels are < 0)")
    return labels


def class_counts(labels: np.ndarray) -> dict[int, int]:
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts)}


def split_indices(n: int, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (unstratified) train/test split of range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int) -> Split:
    """Per class, `test_fraction` of its labelled tiles (at least one) held out; seeded."""
    if not 0.0 < test_fraction < 1.0:
        raise DomainclustError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c, count in class_counts(labels).items():
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(1, round(count * test_fraction)), count - 1) if count > 1 else 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    return Split(train=np.sort(np.concatenate(train)), test=np.sort(np.concatenate(test)),
                 source=f"stratified, seed={seed}, test_fraction={test_fraction}")


def load_split(path: Path | str, *, labels: np.ndarray) -> Split:
    """An explicit split: a `.npz` file with integer arrays `train` and `test` of tile indices."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            train, test = np.asarray(data["train"]), np.asarray(data["test"])
    except (OSError, ValueError, KeyError) as exc:
        raise DomainclustError(
            f"cannot read split {path} ({exc}); it must be a .npz with arrays 'train' and 'test'"
        ) from None
    for name, idx in (("train", train), ("test", test)):
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DomainclustError(f"split {path}: '{name}' must be a 1-D integer array")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(labels)):
            raise DomainclustError(f"split {path}: '{name}' has indices outside 0..{len(labels) - 1}")
        if (labels[idx] < 0).any():
            raise DomainclustError(f"split {path}: '{name}' includes unlabelled tiles")
    if np.intersect1d(train, test).size:
        raise DomainclustError(f"split {path}: train and test share tiles")
    return Split(train=np.sort(train), test=np.sort(test), source=str(path))


def save_split(path: Path | str, split: Split) -> None:
    np.savez(path, train=split.train, test=split.test)


def make_split(
    labels: np.ndarray, *, split_path: Path | str | None, test_fraction: float, seed: int
) -> Split:
    """The explicit split when given, else a seeded stratified one."""
    if split_path is not None:
        return load_split(split_path, labels=labels)
    return stratified_split(labels, test_fraction=test_fraction, seed=seed)


def sample_shots(
    labels: np.ndarray, pool: np.ndarray, *, shots: int, rng: np.random.Generator
) -> np.ndarray:
    """`shots` tile indices per class drawn from `pool` without replacement."""
    pool_labels = labels[pool]
    chosen = []
    for c in np.unique(labels[labels >= 0]):
        members = pool[pool_labels == c]
        if len(members) < shots:
            raise DomainclustError(
                f"class {int(c)} has only {len(members)} training example(s), fewer than the "
                f"{shots} shots requested; lower --shots or use a smaller --test-fraction"
            )
        chosen.append(rng.choice(members, size=shots, replace=False))
    return np.sort(np.concatenate(chosen))


def check_shots(labels: np.ndarray, pool: np.ndarray, *, shots: list[int]) -> None:
    """Refuse, before any training, shot counts some class cannot provide."""
    counts = class_counts(np.where(np.isin(np.arange(len(labels)), pool), labels, -1))
    for c in class_counts(labels):
        have = counts.get(c, 0)
        if have < max(shots):
            raise DomainclustError(
                f"class {c} has only {have} training example(s), fewer than the {max(shots)} "
                "shots requested; lower --shots or use a smaller --test-fraction"
            )
