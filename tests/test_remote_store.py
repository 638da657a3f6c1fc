"""A TileStore read over HTTP (a real local server) and S3 (moto's server) reads as a local one."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from domainclust.config import resolve
from domainclust.data import remote
from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.engine import deepcluster
from domainclust.engine.staging import stage_tiles
from domainclust.errors import DomainclustError

SMALL = ["subset_size=256", "data.tiles_per_chunk=128", "k=8", "epochs=1", "batch_size=64",
         "pca_dim=16", "device=cpu", "model.width=0.25", "report=false"]


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


@contextlib.contextmanager
def http_server(root: Path, *, log: Path, module: str = "http.server"):
    """A real HTTP server (`python -m MODULE`) serving `root` on 127.0.0.1; yields its URL."""
    port = free_port()
    with open(log, "wb") as err:
        server = subprocess.Popen([sys.executable, "-m", module, str(port), "--bind",
                                   "127.0.0.1"], cwd=root, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/")
        yield url
    finally:
        server.terminate()
        server.wait()


@pytest.fixture(scope="module")
def served(mnist_store, tmp_path_factory):
    """(local store, its URL on a `python -m http.server` on 127.0.0.1, the server's log)."""
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(mnist_store, root / "store.zarr")
    log = root.parent / "http.log"
    with http_server(root, log=log) as url:
        yield mnist_store, url + "/store.zarr", log


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


def sharded_copy(store: TileStore, path: Path) -> Path:
    w = TileStoreWriter(path, StoreSpec(
        modality=store.modality, channels=store.channels, tile_size=store.tile_size,
        dtype="uint8", scale=tuple(store.attrs["scale"]), offset=tuple(store.attrs["offset"])),
        chunk_tiles=256, shard_chunks=8)
    w.append(store.read(np.arange(store.n)))
    w.finish()
    return path


def test_a_sharded_store_over_a_server_without_range_requests_is_refused(
    mnist_store, tmp_path
) -> None:
    sharded_copy(TileStore(mnist_store), tmp_path / "www" / "s.zarr")
    with http_server(tmp_path / "www", log=tmp_path / "plain.log") as url, \
         pytest.raises(DomainclustError, match="ignores HTTP Range requests"):
        TileStore(f"{url}/s.zarr")


def test_a_store_on_s3_reads_like_the_local_one(mnist_store, tmp_path) -> None:
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
        here = TileStore(mnist_store)
        fs.put(str(mnist_store), "tiles-bucket/store.zarr", recursive=True)
        fs.put(str(sharded_copy(here, tmp_path / "sharded.zarr")), "tiles-bucket/sharded.zarr",
               recursive=True)
        idx = np.random.default_rng(3).choice(here.n, size=500, replace=False)
        for name in ("store", "sharded"):  # sharded: reads inner chunks by byte range
            there = TileStore(f"s3://tiles-bucket/{name}.zarr", storage_options=options)
            np.testing.assert_array_equal(there.read(idx), here.read(idx))
            if name == "store":
                np.testing.assert_array_equal(there.labels, here.labels)
        assert there.tiles.shards[0] == 8 * there.chunk_len
    finally:
        server.stop()


class Server:
    """A `ThreadingHTTPServer` serving `root` on 127.0.0.1 in this process, that can be stopped
    and started again on the same port, or made to die after `serve_chunks` chunk requests."""

    def __init__(self, root: Path, *, serve_chunks: int | None = None) -> None:
        self.root, self.port, self.serve_chunks = root, free_port(), serve_chunks
        self.chunk_gets = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.stopping = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(server.root), **kwargs)

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if "/tiles/c/" in self.path:
                    server.chunk_gets += 1
                    if server.serve_chunks is not None and server.chunk_gets > server.serve_chunks:
                        threading.Thread(target=server.stop).start()  # dies mid-read
                        self.close_connection = True
                        return
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        with self.stopping:  # several handler threads may stop it at once: one takes it
            httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()


def test_a_server_that_dies_mid_read_ends_pretraining_in_one_line_naming_the_url(
        mnist_store, tmp_path) -> None:
    shutil.copytree(mnist_store, tmp_path / "www" / "store.zarr")
    server = Server(tmp_path / "www", serve_chunks=1)
    server.start()
    url = f"{server.url}/store.zarr"
    settings = ["subset_size=1000", "k=8", "epochs=1", "batch_size=50", "pca_dim=8",
                "model.width=0.25", "device=cpu", "report=false"]  # tiles from every chunk
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "domainclust", "pretrain", "--store", url, "--run-dir",
             str(tmp_path / "run"), "--quiet", *[a for s in settings for a in ("--set", s)]],
            capture_output=True, text=True, check=False, timeout=120)
    finally:
        server.stop()
    assert server.chunk_gets > 1  # it died while the epoch's tiles were being read
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"store {url} cannot be reached" in proc.stderr and "tried 4 times" in proc.stderr


def test_a_server_down_for_a_moment_is_retried_and_the_read_completes(
        mnist_store, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(remote, "RETRY_DELAYS_S", (0.5, 1.0, 2.0))
    shutil.copytree(mnist_store, tmp_path / "www" / "store.zarr")
    server = Server(tmp_path / "www")
    server.start()
    try:
        there = TileStore(f"{server.url}/store.zarr")
        server.stop()  # down: the first tries of the read below fail
        restart = threading.Timer(0.3, server.start)
        restart.start()
        tiles = there.read(np.arange(there.n))
        restart.join()
    finally:
        server.stop()
    np.testing.assert_array_equal(tiles, TileStore(mnist_store).read(np.arange(there.n)))
    assert server.chunk_gets == there.n_chunks  # every chunk served once, after the restart
