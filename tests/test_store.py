import json

import numpy as np
import pytest
import torch
import zarr

from domainclust.errors import DomainclustError
from domainclust.store import StoreSpec, TileStore, TileStoreWriter


def spec(**changes) -> StoreSpec:
    base = dict(modality="test", channels=("a", "b"), tile_size=8, dtype="uint16",
                scale=(0.5, 2.0), offset=(-1.0, 3.0), provenance={"made_by": "tests"})
    return StoreSpec(**{**base, **changes})


def tiles(start: int, n: int) -> np.ndarray:
    t = np.zeros((n, 2, 8, 8), dtype=np.uint16)
    t[:, 0] = np.arange(start, start + n)[:, None, None]
    return t


def test_roundtrip_with_labels_meta_and_float_conversion(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec(), with_labels=True, chunk_tiles=16)
    for start in range(0, 100, 30):
        n = min(30, 100 - start)
        w.append(tiles(start, n), labels=np.arange(start, start + n) % 7,
                 meta={"position": np.arange(start, start + n)[:, None].repeat(2, 1)})
    w.finish()
    s = TileStore(tmp_path / "s.zarr")
    assert len(s) == 100 and s.channels == ("a", "b") and s.tile_size == 8 and s.chunk_len == 16
    idx = np.array([99, 3, 50, 17, 16])
    got = s.read(idx)
    assert np.array_equal(got[:, 0, 0, 0], idx)
    assert np.array_equal(s.labels, np.arange(100) % 7)
    assert np.array_equal(s.meta("position")[:, 1], np.arange(100))
    f = s.to_float(torch.from_numpy(got.astype(np.int32)))
    assert torch.allclose(f[:, 0, 0, 0], torch.tensor(idx * 0.5 - 1.0, dtype=torch.float32))
    assert torch.allclose(f[:, 1], torch.tensor(3.0))


def test_crash_before_commit_loses_nothing_committed_and_resumes(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    w.append(tiles(0, 40), state={"done": ["f0"]})
    # A crash after the tiles of the next batch were written but before their commit:
    zarr.open_group(str(path), mode="r+")["tiles"].append(tiles(40, 25), axis=0)
    with pytest.raises(DomainclustError, match="incomplete"):
        TileStore(path)
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    assert w.count == 40 and w.state == {"done": ["f0"]}
    w.append(tiles(40, 25))
    w.finish()
    s = TileStore(path)
    assert len(s) == 65 and np.array_equal(s.read(np.arange(65))[:, 0, 0, 0], np.arange(65))


def test_reopening_with_other_settings_is_refused(tmp_path) -> None:
    TileStoreWriter(tmp_path / "s.zarr", spec())
    with pytest.raises(DomainclustError, match="tile_size"):
        TileStoreWriter(tmp_path / "s.zarr", spec(tile_size=16))


def test_batches_of_the_wrong_shape_or_dtype_are_refused(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec())
    with pytest.raises(DomainclustError, match="uint16"):
        w.append(tiles(0, 2).astype(np.uint8))
    with pytest.raises(DomainclustError, match="tiles must be"):
        w.append(np.zeros((2, 3, 8, 8), np.uint16))


def test_missing_and_foreign_stores_are_refused_by_name(tmp_path) -> None:
    with pytest.raises(DomainclustError, match="nope.zarr does not exist"):
        TileStore(tmp_path / "nope.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DomainclustError, match="not a domainclust TileStore"):
        TileStore(tmp_path / "folder")
    g = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    g.create_array("tiles", shape=(1,), dtype="uint8")
    with pytest.raises(DomainclustError, match="format"):
        TileStore(tmp_path / "other.zarr")


def test_attributes_hold_the_declared_spec(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec())
    w.append(tiles(0, 3))
    w.finish()
    attrs = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["channels"] == ["a", "b"] and attrs["scale"] == [0.5, 2.0]
    assert attrs["provenance"] == {"made_by": "tests"} and attrs["format_version"] == 1


def test_a_batch_missing_a_meta_array_is_refused(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec())
    w.append(tiles(0, 2), meta={"position": np.zeros((2, 2), np.int64)})
    with pytest.raises(DomainclustError, match="same meta arrays"):
        w.append(tiles(2, 2))
