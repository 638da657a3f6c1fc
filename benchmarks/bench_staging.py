"""Epoch staging throughput: local folder vs HTTP, and a plain store vs a zarr v3 sharded one.

Builds two stores of the same synthetic tiles (smooth fields plus noise, so they compress
like imagery): one chunk per file, and the same chunks packed `--shard-chunks` to a shard.
The plain one is also served by `python -m http.server` on 127.0.0.1 (a real HTTP server,
no network); that server ignores Range requests, which shards need, so the sharded store is
staged locally only (over HTTP it would be refused; see tests/test_remote_store.py for S3).
Each configuration then stages the same epoch subsets with `stage_tiles` (each touched chunk
read once): the whole pool's proportional subset, and a chunk-aware subset
(`tiles_per_chunk`). The baseline is the local unsharded store, measured in the same run.

    .venv/bin/python benchmarks/bench_staging.py --tiles 100000 --subset 20000 --shard-chunks 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter  # noqa: E402
from domainclust.engine.sampling import sample_subset  # noqa: E402
from domainclust.engine.staging import stage_tiles  # noqa: E402


def build(path: Path, *, n: int, tile: int, channels: int, shard_chunks: int | None) -> float:
    spec = StoreSpec(modality="bench", channels=tuple(f"c{i}" for i in range(channels)),
                     tile_size=tile, dtype="uint8", scale=(1.0,) * channels,
                     offset=(0.0,) * channels)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:tile, 0:tile] / tile
    start = time.perf_counter()
    writer = TileStoreWriter(path, spec, shard_chunks=shard_chunks, overwrite=True)
    batch = 8192
    for s in range(0, n, batch):
        m = min(batch, n - s)
        phase = rng.uniform(0, 6, size=(m, channels, 1, 1))
        field = 120 + 80 * np.sin(4 * yy + phase) * np.cos(3 * xx + phase)
        tiles = np.clip(field + rng.normal(0, 6, size=field.shape), 0, 255).astype(np.uint8)
        writer.append(tiles)
    writer.finish()
    return time.perf_counter() - start


def files_in(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file())


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return server, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("http.server did not start")


def stage_rate(store: TileStore, subset: np.ndarray, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        stage_tiles(store, subset, cache="ram", progress=False)
        best = min(best, time.perf_counter() - start)
    return len(subset) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--shard-chunks", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many stagings")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_staging_"))
    server = None
    try:
        layouts = {"plain": None, "sharded": args.shard_chunks}
        built = {name: build(work / f"{name}.zarr", n=args.tiles, tile=args.tile,
                             channels=args.channels, shard_chunks=sc)
                 for name, sc in layouts.items()}
        server, url = serve(work)
        probe = TileStore(work / "plain.zarr")
        rng = np.random.default_rng(1)
        subsets = {
            "proportional": sample_subset(n_total=probe.n, subset_size=args.subset,
                                          chunk_len=probe.chunk_len, rng=rng),
            "chunk_aware": sample_subset(n_total=probe.n, subset_size=args.subset,
                                         chunk_len=probe.chunk_len, rng=rng,
                                         tiles_per_chunk=probe.chunk_len // 2),
        }
        rates: dict[str, float] = {}
        for name in layouts:
            places = [("local", work / f"{name}.zarr")]
            if name == "plain":
                places.append(("http", f"{url}/{name}.zarr"))
            for where, path in places:
                store = TileStore(path)
                for kind, subset in subsets.items():
                    rates[f"{name}/{where}/{kind}"] = stage_rate(store, subset, args.repeats)
        base = {kind: rates[f"plain/local/{kind}"] for kind in subsets}
        print(json.dumps({
            "tiles": args.tiles, "tile_shape": [args.channels, args.tile, args.tile],
            "chunk_tiles": probe.chunk_len, "shard_chunks": args.shard_chunks,
            "subset": args.subset,
            "files": {name: files_in(work / f"{name}.zarr") for name in layouts},
            "build_s": {k: round(v, 2) for k, v in built.items()},
            "tiles_per_s": {k: round(v) for k, v in rates.items()},
            "ratio_to_plain_local": {k: round(v / base[k.rsplit("/", 1)[1]], 2)
                                     for k, v in rates.items()},
            "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 1),
        }, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
