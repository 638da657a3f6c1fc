"""Labelled evaluation sets: a TileStore's labels, checked against its tiles, and seeded splits.

A label below 0 marks a tile without a label; such tiles take part in no evaluation. Splits hold
tile indices (into the store). They respect the data where the store records where tiles came
from: tiles of one source (a series, an image) never sit on both sides, and a scene is split in
spatial blocks with no test tile overlapping a training tile. Only when nothing is recorded is a
split stratified at random. An explicit `.npz` file with `train` and `test` arrays repeats a
protocol exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError


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


SPLIT_MODES = ("auto", "random", "source", "blocks")
BLOCK_TILES = 4  # spatial blocks of 4x4 tile sides


@dataclass(frozen=True)
class Groups:
    """Which tiles must stay together, and the footprint of each tile to keep sides apart."""

    ids: np.ndarray  # (N,) group of every tile
    kind: str  # "source" | "blocks"
    source: np.ndarray | None = None  # (N,) scene of every tile (blocks only)
    origin: np.ndarray | None = None  # (N, 2) row, col of every tile's corner (blocks only)
    side: int = 0  # tile side in source pixels (blocks only)


def tile_groups(store: TileStore, *, mode: str = "auto") -> Groups | None:
    """How a split must group this store's tiles; None when nothing is recorded (or `random`).

    `blocks`: tiles with a (row, col) position in a scene are grouped by scene and by spatial
    block of `BLOCK_TILES` tile sides. `source`: tiles grouped by the item they came from
    (a series, a volume, an image).
    """
    if mode not in SPLIT_MODES:
        raise DomainclustError(f"unknown split mode '{mode}'; choose {', '.join(SPLIT_MODES)}")
    if mode == "random":
        return None
    source = store.meta("source").astype(np.int64) if store.has_meta("source") else None
    position = store.meta("position") if store.has_meta("position") else None
    is_scene = position is not None and position.ndim == 2 and position.shape[1] == 2
    if mode == "blocks" or (mode == "auto" and is_scene):
        if not is_scene:
            raise DomainclustError(f"store {store.path} records no (row, col) tile positions; "
                                   "a spatial-block split needs them (use --split-by source)")
        source = np.zeros(store.n, np.int64) if source is None else source
        origin = np.asarray(position, dtype=np.int64)
        block = origin // (BLOCK_TILES * store.tile_size)
        _, ids = np.unique(np.column_stack([source, block]), axis=0, return_inverse=True)
        return Groups(ids=ids.ravel(), kind="blocks", source=source, origin=origin,
                      side=store.tile_size)
    if source is None or len(np.unique(source)) < 2:
        if mode == "source":
            raise DomainclustError(f"store {store.path} records fewer than two sources; a split "
                                   "by source is impossible (use --split-by random)")
        return None
    return Groups(ids=source, kind="source")


def grouped_split(labels: np.ndarray, groups: Groups, *, test_fraction: float, seed: int) -> Split:
    """Whole groups held out until `test_fraction` of the labelled tiles is reached (seeded).

    For spatial blocks, training tiles whose footprint overlaps a test tile are dropped, so no
    pixel is seen on both sides.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DomainclustError(f"test fraction must be between 0 and 1, got {test_fraction}")
    labelled = labels >= 0
    ids = groups.ids
    order = np.random.default_rng(seed).permutation(np.unique(ids[labelled]))
    if len(order) < 2:
        raise DomainclustError("the labelled tiles come from a single group; a grouped split is "
                               "impossible (use --split-by random)")
    sizes = np.bincount(ids[labelled], minlength=int(ids.max()) + 1)
    target = test_fraction * labelled.sum()
    taken, total = [], 0
    for g in order[:-1]:  # at least one group stays for training
        if total >= target:
            break
        taken.append(g)
        total += sizes[g]
    in_test = np.isin(ids, taken) & labelled
    in_train = ~np.isin(ids, taken) & labelled
    if groups.kind == "blocks":
        in_train &= ~_overlaps(groups, candidates=in_train, against=in_test)
    how = ("spatial blocks of "
           f"{BLOCK_TILES}x{BLOCK_TILES} tiles, overlapping training tiles dropped"
           if groups.kind == "blocks" else "by source (series / volume / image)")
    return Split(train=np.flatnonzero(in_train), test=np.flatnonzero(in_test),
                 source=f"grouped {how}, {len(order)} groups, seed={seed}, "
                        f"test_fraction={test_fraction}")


def _overlaps(groups: Groups, *, candidates: np.ndarray, against: np.ndarray) -> np.ndarray:
    """(N,) True where a candidate tile's footprint intersects a tile of `against`.

    Test tiles are binned in cells of one tile side, so each candidate is compared only with
    the test tiles of its 3x3 neighbouring cells.
    """
    side = groups.side
    cells: dict[tuple[int, int, int], list[np.ndarray]] = {}
    for i in np.flatnonzero(against):
        r, c = groups.origin[i]
        cells.setdefault((int(groups.source[i]), int(r // side), int(c // side)), []).append(
            groups.origin[i])
    out = np.zeros(len(groups.ids), bool)
    for i in np.flatnonzero(candidates):
        r, c = groups.origin[i]
        scene, cr, cc = int(groups.source[i]), int(r // side), int(c // side)
        near = [o for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                for o in cells.get((scene, cr + dr, cc + dc), ())]
        out[i] = any(abs(int(o[0]) - r) < side and abs(int(o[1]) - c) < side for o in near)
    return out


def make_split(
    labels: np.ndarray, *, split_path: Path | str | None, test_fraction: float, seed: int,
    groups: Groups | None = None,
) -> Split:
    """The explicit split when given, else grouped when `groups` says so, else stratified."""
    if split_path is not None:
        return load_split(split_path, labels=labels)
    if groups is not None:
        return grouped_split(labels, groups, test_fraction=test_fraction, seed=seed)
    split = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    return Split(train=split.train, test=split.test,
                 source=f"random (no source recorded), {split.source}")


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


def labels_within(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`labels` with every tile outside `idx` unlabelled (-1)."""
    return np.where(np.isin(np.arange(len(labels)), idx), labels, -1)


def check_shots(labels: np.ndarray, pool: np.ndarray, *, shots: list[int]) -> None:
    """Refuse, before any training, shot counts some class cannot provide."""
    counts = class_counts(labels_within(labels, pool))
    for c in class_counts(labels):
        have = counts.get(c, 0)
        if have < max(shots):
            raise DomainclustError(
                f"class {c} has only {have} training example(s), fewer than the {max(shots)} "
                "shots requested; lower --shots or use a smaller --test-fraction"
            )


def store_split(
    store: TileStore, labels: np.ndarray, *, split_path: Path | str | None, test_fraction: float,
    seed: int, split_by: str = "auto",
) -> Split:
    """The split every evaluation of `store` uses: explicit, grouped as the store's records
    allow (`tile_groups`), or stratified at random when nothing is recorded."""
    groups = None if split_path is not None else tile_groups(store, mode=split_by)
    return make_split(labels, split_path=split_path, test_fraction=test_fraction, seed=seed,
                      groups=groups)
