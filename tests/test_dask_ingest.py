"""Ingest on a Dask LocalCluster gives the serial ingest's store, tile for tile, even when a
worker dies mid-ingest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from domainclust.modalities.geo.geotiff import MODALITY as GEOTIFF
from domainclust.modalities.geo.geotiff import GeoTiffAdapter
from domainclust.modalities.medical.ct import MODALITY as CT
from geotiff_data import make_scene
from medical_data import CT5N, copy_files, pydicom_file

from domainclust.data.ingest import run_ingest, store_key
from domainclust.data.ingest_item import SourceItem, TileBatch
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

GEO = {**GEOTIFF.defaults, "tile_size": 32}
CHUNK = 7  # tiles per chunk: items straddle chunk boundaries
CT_OPTIONS = {**CT.defaults, "spacing": None, "tile_size": 32, "max_background": 1.0}

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # worker processes lack tests/


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    for seed in range(4):
        make_scene(folder / f"s{seed}.tif", seed=seed, height=96, width=128 - 16 * seed)
    return folder


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = TileStore(a), TileStore(b)
    assert sa.n == sb.n > 0 and sa.chunk_len == sb.chunk_len
    np.testing.assert_array_equal(sa.read(np.arange(sa.n)), sb.read(np.arange(sb.n)))
    names = sorted(sa.group["meta"].array_keys())
    assert names == sorted(sb.group["meta"].array_keys()) and "source" in names
    for name in names:
        np.testing.assert_array_equal(sa.meta(name), sb.meta(name))
    if sa.has_labels or sb.has_labels:
        np.testing.assert_array_equal(sa.labels, sb.labels)
    assert sa.has_masks == sb.has_masks
    if sa.has_masks:
        np.testing.assert_array_equal(sa.read_masks(np.arange(sa.n)), sb.read_masks(np.arange(sb.n)))
    assert sa.attrs == sb.attrs
    assert (a / "commits.jsonl").read_text() == (b / "commits.jsonl").read_text()


def without_store(report: dict[str, Any]) -> dict[str, Any]:
    """An ingest report less the path of the store it describes."""
    return {k: v for k, v in report.items() if k != "store"}


def test_geotiff_scenes_on_dask_equal_the_serial_ingest(scenes, client, tmp_path) -> None:
    serial = run_ingest(GeoTiffAdapter(), [scenes], tmp_path / "serial.zarr", options=GEO,
                        progress=False, chunk_tiles=CHUNK)
    on_dask = run_ingest(GeoTiffAdapter(), [scenes], tmp_path / "dask.zarr", options=GEO,
                         progress=False, chunk_tiles=CHUNK, dask=client)
    assert without_store(serial) == without_store(on_dask) and serial["items_read"] == 4
    assert TileStore(tmp_path / "serial.zarr").n > 2 * TileStore(tmp_path / "serial.zarr").chunk_len
    assert_same_store(tmp_path / "serial.zarr", tmp_path / "dask.zarr")


def test_dicom_series_on_dask_equal_the_serial_ingest(client, tmp_path) -> None:
    folder = copy_files(sorted(CT5N.iterdir()) + [pydicom_file("CT_small.dcm"),
                                                 pydicom_file("MR_small.dcm")], tmp_path / "dcm")
    adapter = CT.ingest.args[0]
    serial = run_ingest(adapter, [folder], tmp_path / "serial.zarr", options=CT_OPTIONS,
                        progress=False, chunk_tiles=4)
    on_dask = run_ingest(adapter, [folder], tmp_path / "dask.zarr", options=CT_OPTIONS,
                         progress=False, chunk_tiles=4, dask=client)
    assert without_store(serial) == without_store(on_dask)
    assert serial["items_read"] == 2 and serial["skipped"]  # MR is reported
    assert_same_store(tmp_path / "serial.zarr", tmp_path / "dask.zarr")


def test_a_sharded_dask_ingest_equals_the_serial_one(scenes, client, tmp_path) -> None:
    for name, on in (("serial", None), ("dask", client)):
        run_ingest(GeoTiffAdapter(), [scenes], tmp_path / f"{name}.zarr", options=GEO,
                   progress=False, chunk_tiles=CHUNK, shard_chunks=3, dask=on)
    assert TileStore(tmp_path / "dask.zarr").tiles.shards[0] == 3 * CHUNK
    assert_same_store(tmp_path / "serial.zarr", tmp_path / "dask.zarr")


def test_masks_written_on_dask_equal_the_serial_ones(client, tmp_path) -> None:
    """Workers write each unit's masks with its tiles, sharded like them."""
    folder = tmp_path / "labelled"
    folder.mkdir()
    for seed in range(2):
        make_scene(folder / f"s{seed}.tif", seed=seed, height=96, width=128,
                   labels=folder / f"s{seed}_labels.tif")
    options = {**GEO, "labels": "./{stem}_labels.tif"}
    for name, on in (("serial", None), ("dask", client)):
        run_ingest(GeoTiffAdapter(), [folder], tmp_path / f"{name}.zarr", options=options,
                   progress=False, chunk_tiles=CHUNK, shard_chunks=2, dask=on)
    assert TileStore(tmp_path / "dask.zarr").has_masks
    assert_same_store(tmp_path / "serial.zarr", tmp_path / "dask.zarr")


def test_a_dask_store_records_its_options_and_refuses_others(scenes, client, tmp_path) -> None:
    """A resume or --add on Dask with another option is refused as it is serially."""
    first = tmp_path / "first"
    first.mkdir()
    for name in ("s0.tif", "s1.tif"):
        (first / name).symlink_to(scenes / name)
    out, serial = tmp_path / "dask.zarr", tmp_path / "serial.zarr"
    run_ingest(GeoTiffAdapter(), [first], out, options=GEO, progress=False, dask=client)
    run_ingest(GeoTiffAdapter(), [first], serial, options=GEO, progress=False)
    recorded = TileStore(out).attrs["ingest_options"]
    assert recorded == TileStore(serial).attrs["ingest_options"] and recorded["tile_size"] == 32
    before = (out / "commits.jsonl").read_text()
    other = {**GEO, "stride": 16}
    for add, sources in ((False, [first]), (True, [scenes])):
        with pytest.raises(DomainclustError, match=r"ingested with stride=null; this run asks "
                                                   r"for stride=16"):
            run_ingest(GeoTiffAdapter(), sources, out, options=other, progress=False,
                       dask=client, add=add)
    assert (out / "commits.jsonl").read_text() == before
    run_ingest(GeoTiffAdapter(), [scenes], out, options=GEO, progress=False, dask=client,
               add=True)
    assert TileStore(out).n > TileStore(serial).n


class DyingAdapter(GeoTiffAdapter):
    """Kills the worker process that reads `victim`: every time, or once (flag file)."""

    def __init__(self, victim: str, once: Path | None) -> None:
        self.victim, self.once = victim, once

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch:
        if item.key == self.victim and not (self.once and self.once.exists()):
            if self.once:
                self.once.touch()
            os._exit(1)
        return super().read(item, options)


@pytest.fixture(scope="module")
def process_client():
    # One retry: a task whose worker dies once is re-run, one that kills two workers fails.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.mark.slow
def test_a_worker_killed_mid_ingest_then_a_rerun_gives_the_serial_store(
    scenes, process_client, tmp_path
) -> None:
    serial = tmp_path / "serial.zarr"
    run_ingest(GeoTiffAdapter(), [scenes], serial, options=GEO, progress=False,
               chunk_tiles=CHUNK)
    # The engine hands adapters the digest of each key (keys may hold names).
    keys = [store_key(item.key) for item in GeoTiffAdapter().discover([scenes], GEO)]

    # A worker dies once: Dask re-runs its task elsewhere and the ingest completes.
    once = tmp_path / "died"
    run_ingest(DyingAdapter(keys[1], once), [scenes], tmp_path / "once.zarr", options=GEO,
               progress=False, chunk_tiles=CHUNK, dask=process_client)
    assert once.exists()
    assert_same_store(serial, tmp_path / "once.zarr")

    # Every worker that reads item 3 dies: the ingest fails with an in-order prefix of items
    # 0-2 committed (reads held only by a dead worker's memory are not; a re-run redoes them) ...
    out = tmp_path / "killed.zarr"
    with pytest.raises(Exception, match="KilledWorker|worker"):
        run_ingest(DyingAdapter(keys[3], None), [scenes], out, options=GEO, progress=False,
                   chunk_tiles=CHUNK, dask=process_client)
    log_path = out / "commits.jsonl"
    log = [json.loads(x) for x in log_path.read_text().splitlines()] if log_path.exists() else []
    committed = [e["record"]["key"] for e in log]
    assert len(committed) <= 3 and committed == keys[:len(committed)]
    with pytest.raises(DomainclustError, match="incomplete"):
        TileStore(out)
    # ... and a re-run finishes it: the same store as the serial ingest, no duplicates.
    run_ingest(GeoTiffAdapter(), [scenes], out, options=GEO, progress=False, chunk_tiles=CHUNK,
               dask=process_client)
    assert_same_store(serial, out)
    assert zarr.open_group(str(out), mode="r")["tiles"].shape[0] == TileStore(serial).n


def test_the_dask_engine_does_not_import_the_serial_one() -> None:
    """The two engines share `ingest_item`; the serial one dispatches to Dask, not back."""
    code = ("import sys, domainclust.data.dask_ingest; "
            "sys.exit('domainclust.data.ingest' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
