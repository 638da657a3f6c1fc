import json

import numpy as np
import pytest
import torch
import zarr

from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter, write_subset
from domainclust.errors import DomainclustError


def spec(**changes) -> StoreSpec:
    base = dict(modality="test", channels=("a", "b"), tile_size=8, dtype="uint16",
                scale=(0.5, 2.0), offset=(-1.0, 3.0), provenance={"made_by": "tests"})
    return StoreSpec(**{**base, **changes})


def tiles(start: int, n: int) -> np.ndarray:
    t = np.zeros((n, 2, 8, 8), dtype=np.uint16)
    t[:, 0] = np.arange(start, start + n)[:, None, None]
    return t


def test_a_subset_store_keeps_tiles_labels_and_records_and_redoes_an_unfinished_one(
    tmp_path
) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec(), with_labels=True, chunk_tiles=16)
    w.append(tiles(0, 40), labels=np.arange(40) % 3,
             meta={"position": np.arange(40)[:, None].repeat(2, 1)})
    w.finish()
    full = TileStore(tmp_path / "s.zarr")
    idx = np.array([2, 5, 31, 39])
    unfinished = TileStoreWriter(tmp_path / "sub.zarr", spec(), with_labels=True)
    unfinished.append(tiles(0, 1), labels=np.zeros(1, np.int64))
    unfinished.close()  # interrupted: never finished
    sub = write_subset(full, idx, tmp_path / "sub.zarr")
    assert sub.n == 4 and sub.attrs["scale"] == full.attrs["scale"]
    assert np.array_equal(sub.read(np.arange(4)), full.read(idx))
    assert np.array_equal(sub.labels, idx % 3)
    assert np.array_equal(sub.meta("position")[:, 0], idx)
    assert write_subset(full, np.array([0]), tmp_path / "sub.zarr").n == 4  # finished: reused


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
    w.close()  # the process dies
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


def test_commits_append_to_the_log_and_leave_the_attributes_alone(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    attrs_before = (path / "zarr.json").read_bytes()
    for i in range(50):
        w.append(tiles(i, 1), record={"key": f"f{i}", "n": 1})
    assert (path / "zarr.json").read_bytes() == attrs_before  # no per-commit rewrite
    lines = (path / "commits.jsonl").read_text().splitlines()
    assert len(lines) == 50 and json.loads(lines[-1]) == {"count": 50,
                                                         "record": {"key": "f49", "n": 1}}
    w.close()
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    assert w.count == 50 and [r["key"] for r in w.records] == [f"f{i}" for i in range(50)]


def test_a_commit_line_torn_by_a_crash_is_not_a_commit(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    w.append(tiles(0, 10), record={"key": "a"})
    w.append(tiles(10, 5), record={"key": "b"})
    # A crash while writing the third commit: its tiles are there, its line is half written.
    zarr.open_group(str(path), mode="r+")["tiles"].append(tiles(15, 7), axis=0)
    with open(path / "commits.jsonl", "ab") as f:
        f.write(b'{"count":22,"rec')
    w.close()
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    assert w.count == 15 and [r["key"] for r in w.records] == ["a", "b"]
    w.append(tiles(15, 3), record={"key": "c"})
    w.finish()
    s = TileStore(path)
    assert len(s) == 18 and np.array_equal(s.read(np.arange(18))[:, 0, 0, 0], np.arange(18))
    assert [json.loads(x)["count"] for x in (path / "commits.jsonl").read_text().splitlines()] \
        == [10, 15, 18]


def test_rows_reserved_for_parallel_writers_count_only_once_committed(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    w.append(tiles(0, 4))
    w.reserve(32)
    zarr.open_array(str(path / "tiles"), mode="r+")[16:32] = tiles(16, 16)  # a whole chunk
    zarr.open_array(str(path / "tiles"), mode="r+")[4:16] = tiles(4, 12)
    with pytest.raises(DomainclustError, match="reserved"):
        w.commit_written(40)
    w.commit_written(20, record={"key": "x"})
    w.close()  # a crash here loses the 8 rows reserved past the commit
    assert TileStoreWriter(path, spec(), chunk_tiles=16).count == 24
    w = TileStoreWriter(path, spec(), chunk_tiles=16)
    w.finish()
    s = TileStore(path)
    assert len(s) == 24 and s.tiles.shape[0] == 24
    assert np.array_equal(s.read(np.arange(24))[:, 0, 0, 0], np.arange(24))


def test_a_sharded_store_is_few_files_and_reads_by_inner_chunk(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    w = TileStoreWriter(path, spec(), chunk_tiles=8, shard_chunks=4)
    assert w.write_unit == 32
    for start in range(0, 100, 7):
        w.append(tiles(start, min(7, 100 - start)))
    w.finish()
    s = TileStore(path)
    assert s.chunk_len == 8 and s.tiles.shards[0] == 32
    chunk_files = [p for p in (path / "tiles").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunk_files) == 4  # 100 tiles: 13 chunks in 4 shards
    idx = np.array([99, 0, 31, 32, 64, 65])
    assert np.array_equal(s.read(idx)[:, 0, 0, 0], idx)


def masks(start: int, n: int, *, classes: int = 5) -> np.ndarray:
    """(n, 8, 8) class ids that differ per tile and per pixel, -1 (unlabelled) on one row."""
    m = (np.arange(start, start + n)[:, None, None] + np.arange(64).reshape(8, 8)) % classes
    m = m.astype(np.int64)
    m[:, 0] = -1
    return m


def stored(m: np.ndarray, ignore: int) -> np.ndarray:
    return np.where(m < 0, ignore, m)


def test_masks_round_trip_pixel_for_pixel_chunked_like_the_tiles(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec(), with_masks=True,
                        mask_classes=["water", "forest", "crop", "soil", "urban"], chunk_tiles=16)
    for start in range(0, 50, 20):
        n = min(20, 50 - start)
        w.append(tiles(start, n), masks=masks(start, n))
    w.finish()
    s = TileStore(tmp_path / "s.zarr")
    assert s.has_masks and s.mask_ignore == 255 and s.group["masks"].dtype == np.uint8
    assert s.mask_classes == ["water", "forest", "crop", "soil", "urban"]
    assert s.group["masks"].chunks == (16, 8, 8)
    idx = np.array([49, 0, 17, 16, 33])
    assert np.array_equal(s.read_masks(idx), stored(masks(0, 50), 255)[idx])
    plain = TileStoreWriter(tmp_path / "p.zarr", spec())
    plain.append(tiles(0, 2))
    plain.finish()
    assert not TileStore(tmp_path / "p.zarr").has_masks
    with pytest.raises(DomainclustError, match="has no masks"):
        TileStore(tmp_path / "p.zarr").read_masks(np.array([0]))


def test_many_classes_take_int16_masks_and_out_of_range_ids_are_refused(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec(), with_masks=True, mask_dtype="int16")
    big = np.full((1, 8, 8), 1000)
    big[0, 0, 0] = -3
    w.append(tiles(0, 1), masks=big)
    w.finish()
    s = TileStore(tmp_path / "s.zarr")
    assert s.mask_ignore == -1 and s.mask_classes is None
    assert s.read_masks(np.array([0]))[0, 0, 0] == -1 and s.read_masks(np.array([0]))[0, 1, 1] == 1000
    small = TileStoreWriter(tmp_path / "u.zarr", spec(), with_masks=True, mask_dtype="uint8")
    with pytest.raises(DomainclustError, match="does not fit uint8"):
        small.append(tiles(0, 1), masks=np.full((1, 8, 8), 255))
    with pytest.raises(DomainclustError, match="masks must be"):
        small.append(tiles(0, 2), masks=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DomainclustError, match="needs masks"):
        small.append(tiles(0, 1))
    small.close()


def test_masks_survive_a_crash_and_resume_pixel_for_pixel(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    w = TileStoreWriter(path, spec(), with_masks=True, mask_dtype="uint8", chunk_tiles=16)
    w.append(tiles(0, 40), masks=masks(0, 40))
    # A crash after the next batch's tiles and masks were written, before their commit:
    group = zarr.open_group(str(path), mode="r+")
    group["tiles"].append(tiles(40, 25), axis=0)
    group["masks"].append(np.full((25, 8, 8), 7, np.uint8), axis=0)
    w.close()
    with pytest.raises(DomainclustError, match="different mask settings"):
        TileStoreWriter(path, spec(), chunk_tiles=16)
    w = TileStoreWriter(path, spec(), with_masks=True, mask_dtype="uint8", chunk_tiles=16)
    assert w.count == 40 and w.group["masks"].shape[0] == 40  # the torn batch is cut away
    w.append(tiles(40, 25), masks=masks(40, 25))
    w.finish()
    s = TileStore(path)
    assert np.array_equal(s.read_masks(np.arange(65)), stored(masks(0, 65), 255))


def test_masks_written_by_a_parallel_writer_count_once_committed(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec(), with_masks=True, mask_dtype="uint8",
                        chunk_tiles=8)
    w.reserve(24)
    assert w.group["masks"].shape[0] == 24
    zarr.open_array(str(tmp_path / "s.zarr" / "masks"), mode="r+")[0:16] = stored(masks(0, 16), 255)
    zarr.open_array(str(tmp_path / "s.zarr" / "tiles"), mode="r+")[0:16] = tiles(0, 16)
    w.commit_written(16)
    w.finish()  # the reserved rows past the commit are cut away
    s = TileStore(tmp_path / "s.zarr")
    assert s.n == 16 and s.group["masks"].shape[0] == 16
    assert np.array_equal(s.read_masks(np.arange(16)), stored(masks(0, 16), 255))


def test_a_subset_store_carries_masks_and_their_classes(tmp_path) -> None:
    w = TileStoreWriter(tmp_path / "s.zarr", spec(), with_masks=True, mask_classes=list("abcde"))
    w.append(tiles(0, 10), masks=masks(0, 10))
    w.finish()
    full = TileStore(tmp_path / "s.zarr")
    idx = np.array([1, 7, 8])
    sub = write_subset(full, idx, tmp_path / "sub.zarr")
    assert sub.mask_classes == list("abcde") and sub.mask_ignore == full.mask_ignore
    assert np.array_equal(sub.read_masks(np.arange(3)), full.read_masks(idx))
