"""A TileStore read over HTTP (a real local server) and S3 (moto's server) reads as a local one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from domainclust import deepcluster
from domainclust.config import resolve
from domainclust.errors import DomainclustError
from domainclust.staging import stage_tiles
from domainclust.store import TileStore

SMALL = ["subset_size=256", "data.tiles_per_chunk=128", "k=8", "epochs=1", "batch_size=64",
         "pca_dim=16", "device=cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start")


@pytest.fixture(scope="module")
def served(mnist_store, tmp_path_factory):
    """(local store, its URL on a `python -m http.server` on 127.0.0.1, the server's log)."""
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(mnist_store, root / "store.zarr")
    port = free_port()
    log = root.parent / "http.log"
    with open(log, "wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/store.zarr/zarr.json")
        yield mnist_store, url + "/store.zarr", log
    finally:
        server.terminate()
        server.wait()


def chunk_gets(log: Path) -> list[str]:
    return [line.split('"GET ')[1].split()[0] for line in log.read_text().splitlines()
            if '"GET /store.zarr/tiles/c/' in line]


def test_a_store_over_http_reads_like_the_local_one(served) -> None:
    local, url, _ = served
    here, there = TileStore(local), TileStore(url)
    assert there.remote and there.n == here.n and there.channels == here.channels
    idx = np.random.default_rng(0).choice(here.n, size=300, replace=False)
    np.testing.assert_array_equal(there.read(idx), here.read(idx))
    np.testing.assert_array_equal(there.labels, here.labels)
    np.testing.assert_array_equal(there.meta("source"), here.meta("source"))


def test_staging_reads_each_needed_chunk_once(served) -> None:
    local, url, log = served
    store = TileStore(url)
    before = len(chunk_gets(log))
    chunks = [0, 2]
    idx = np.concatenate([c * store.chunk_len + np.arange(0, store.chunk_len, 7) for c in chunks])
    idx = idx[idx < store.n]
    tiles = stage_tiles(store, np.random.default_rng(1).permutation(idx), progress=False)
    assert len(tiles) == len(idx)
    got = chunk_gets(log)[before:]
    assert sorted(got) == [f"/store.zarr/tiles/c/{c}/0/0/0" for c in chunks]


@pytest.mark.slow
def test_pretraining_from_http_equals_the_local_run(served, tmp_path) -> None:
    local, url, _ = served
    runs = {}
    for name, store in (("local", str(local)), ("http", url)):
        history = deepcluster.pretrain(resolve(overrides=[f"store={store}", *SMALL]),
                                       tmp_path / name, progress=False, log=lambda _: None)
        runs[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert runs["local"] == runs["http"] and runs["local"][0]["n_tiles"] == 256
    a = torch.load(tmp_path / "local" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "http" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_url_without_a_store_is_a_clear_error(served) -> None:
    _, url, _ = served
    with pytest.raises(DomainclustError, match="not a domainclust TileStore"):
        TileStore(url.replace("store.zarr", "nothing.zarr"))
    with pytest.raises(DomainclustError, match=r"127\.0\.0\.1:1/"):
        TileStore("http://127.0.0.1:1/store.zarr")


def test_a_store_on_s3_reads_like_the_local_one(mnist_store) -> None:
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "test", "secret": "test",
                   "client_kwargs": {"region_name": "us-east-1"}}
        boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test",
                     ).create_bucket(Bucket="tiles-bucket")
        fs = s3fs.S3FileSystem(**options)
        fs.put(str(mnist_store), "tiles-bucket/store.zarr", recursive=True)
        there = TileStore("s3://tiles-bucket/store.zarr", storage_options=options)
        here = TileStore(mnist_store)
        idx = np.arange(0, here.n, 13)
        np.testing.assert_array_equal(there.read(idx), here.read(idx))
        np.testing.assert_array_equal(there.labels, here.labels)
    finally:
        server.stop()
