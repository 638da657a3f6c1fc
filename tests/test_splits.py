"""Splits that respect the data: by source, by spatial block without overlap, random otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.errors import DomainclustError
from domainclust.evaluation.data import store_split, tile_groups

SIDE = 32


def make_store(path: Path, *, source: np.ndarray, position: np.ndarray, modality: str,
               seed: int = 0) -> TileStore:
    n = len(source)
    rng = np.random.default_rng(seed)
    spec = StoreSpec(modality=modality, channels=("b1",), tile_size=SIDE, dtype="uint8",
                     scale=(1 / 255,), offset=(0.0,))
    writer = TileStoreWriter(path, spec, with_labels=True)
    writer.append(rng.integers(0, 255, (n, 1, SIDE, SIDE), dtype=np.uint8),
                  labels=rng.integers(0, 3, n), meta={"source": source.astype(np.int32),
                                                      "position": position})
    writer.finish()
    return TileStore(path)


def test_series_never_sit_on_both_sides(tmp_path: Path) -> None:
    source = np.repeat(np.arange(12), 25)  # 12 series of 25 slices
    position = np.column_stack([np.tile(np.arange(25), 12), np.zeros((300, 2), int)])
    store = make_store(tmp_path / "ct.zarr", source=source, position=position, modality="ct")
    for seed in range(5):
        split = store_split(store, store.labels, split_path=None, test_fraction=0.25, seed=seed)
        assert not set(source[split.train]) & set(source[split.test])
        assert len(split.train) + len(split.test) == 300
        assert 0.15 < len(split.test) / 300 < 0.4
        assert split.source.startswith("grouped by source")


def test_spatial_blocks_hold_no_pixel_on_both_sides(tmp_path: Path) -> None:
    # One scene, tiles every half tile: neighbours overlap, so blocks alone would leak pixels.
    rows, cols = np.meshgrid(np.arange(0, 40 * SIDE // 2, SIDE // 2),
                             np.arange(0, 40 * SIDE // 2, SIDE // 2), indexing="ij")
    position = np.column_stack([rows.ravel(), cols.ravel()]).astype(np.int64)
    source = np.zeros(len(position), np.int64)
    store = make_store(tmp_path / "scene.zarr", source=source, position=position,
                       modality="geotiff")
    split = store_split(store, store.labels, split_path=None, test_fraction=0.2, seed=3)
    assert split.source.startswith("grouped spatial blocks")
    assert len(split.test) > 100 and len(split.train) > 500
    train, test = position[split.train], position[split.test]
    delta = np.abs(train[:, None, :] - test[None, :, :])
    assert not ((delta < SIDE).all(axis=2)).any()  # no train tile overlaps a test tile
    assert len(split.train) + len(split.test) < len(position)  # the overlapping ones dropped


def test_nothing_recorded_means_a_random_stratified_split_that_says_so(tmp_path: Path) -> None:
    n = 200
    store = make_store(tmp_path / "digits.zarr", source=np.zeros(n, np.int64),
                       position=np.arange(n)[:, None], modality="mnist")
    assert tile_groups(store) is None
    split = store_split(store, store.labels, split_path=None, test_fraction=0.2, seed=0)
    assert split.source.startswith("random (no source recorded)")
    with pytest.raises(DomainclustError, match="fewer than two sources"):
        tile_groups(store, mode="source")
    with pytest.raises(DomainclustError, match="no \\(row, col\\) tile positions"):
        tile_groups(store, mode="blocks")
    with pytest.raises(DomainclustError, match="unknown split mode"):
        tile_groups(store, mode="diagonal")
