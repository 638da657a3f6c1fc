"""GeoTIFF ingest throughput: tiles/s with 1 reader process, --workers 2 and --dask local:2.

Writes synthetic Sentinel-2-like scenes (13 uint16 bands, tiled deflate GeoTIFF, a nodata
edge) block by block, then ingests them three times through `domainclust ingest --modality
geotiff`'s Python API in one run: workers=1, workers=2, and a Dask LocalCluster of 2 workers
(its start-up included). It reports the statistics pass (serial, part
of both) and the spawn start-up of a worker pool (torch is imported in every worker). Then it
times the parallel part alone: `read` of every item in this process versus in a warm pool of
2 spawned workers (no store writes), which is the steady-state speed-up on large inputs.

    .venv/bin/python benchmarks/bench_ingest_geotiff.py --scenes 4 --size 2048 --tile 64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
SIGNATURES = np.array([  # water, forest, crop, soil, urban: reflectance x 10000
    [1200, 1000, 900, 700, 600, 500, 450, 400, 350, 200, 10, 150, 100],
    [1300, 1000, 900, 700, 1100, 2500, 3000, 3200, 3300, 1000, 15, 1500, 700],
    [1400, 1200, 1300, 1100, 1800, 3000, 3600, 3900, 4000, 1200, 20, 2400, 1300],
    [1500, 1500, 1800, 2200, 2400, 2600, 2700, 2800, 2900, 900, 25, 3300, 2800],
    [1700, 1800, 1900, 2000, 2100, 2200, 2300, 2400, 2450, 800, 30, 2600, 2300],
], dtype=np.float32)
BLOCK = 512


def write_scene(path: Path, *, size: int, seed: int) -> None:
    """A size x size scene written window by window (bounded memory), 20 % nodata edge."""
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": len(BANDS),
               "dtype": "uint16", "crs": f"EPSG:{32631 + seed % 4}", "nodata": 0,
               "transform": from_origin(300000.0, 5300000.0, 10.0, 10.0),
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(BANDS, 1):
            dst.set_band_description(i, name)
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                coarse = rng.integers(0, len(SIGNATURES), size=(h // 32 + 1, w // 32 + 1))
                classes = np.kron(coarse, np.ones((32, 32), int))[:h, :w]
                noise = rng.normal(1.0, 0.03, size=(len(BANDS), h, w)).astype(np.float32)
                data = np.clip(SIGNATURES[classes].transpose(2, 0, 1) * noise, 1, 65535)
                rows, cols = np.mgrid[row:row + h, col:col + w]
                data[:, cols < 0.4 * size * (1.0 - rows / size)] = 0
                dst.write(data.astype(np.uint16), window=Window(col, row, w, h))


def _import_adapter(_: int) -> int:
    import domainclust.modalities.geo.geotiff  # noqa: F401

    return os.getpid()


def _read_count(adapter: Any, item: Any, options: dict[str, Any]) -> int:
    from domainclust.data.ingest_item import Skip

    try:
        return len(adapter.read(item, options).tiles)
    except Skip:
        return 0


def warm_reads(items: list[Any], options: dict[str, Any], *, workers: int) -> dict[str, float]:
    """Pool start-up, then the seconds to `read` every item in that warm pool (no writes)."""
    from domainclust.modalities.geo.geotiff import GeoTiffAdapter

    adapter = GeoTiffAdapter()
    start = time.perf_counter()
    if workers == 1:
        tiles = sum(_read_count(adapter, item, options) for item in items)
        return {"startup_s": 0.0, "read_s": time.perf_counter() - start, "tiles": tiles}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        list(pool.map(_import_adapter, range(workers)))
        startup = time.perf_counter() - start
        start = time.perf_counter()
        tiles = sum(pool.map(_read_count, [adapter] * len(items), items,
                             [options] * len(items)))
        return {"startup_s": startup, "read_s": time.perf_counter() - start, "tiles": tiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048, help="scene side in pixels")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()

    from domainclust.modalities.geo.geotiff import GeoTiffAdapter

    from domainclust.data.modality import get_modality

    modality = get_modality("geotiff")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_geotiff_"))
    scenes = work / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(args.scenes):
        path = scenes / f"scene_{i}.tif"
        if not path.exists():
            write_scene(path, size=args.size, seed=i)
    written = time.perf_counter() - start
    options = {**modality.defaults, "tile_size": args.tile}

    start = time.perf_counter()
    items = GeoTiffAdapter().discover([scenes], options)
    discover_s = time.perf_counter() - start
    warm = {w: warm_reads(items, options, workers=w) for w in (1, 2)}

    results = {}
    for name, engine in (("1", {"workers": 1}), ("2", {"workers": 2}),
                         ("dask", {"workers": 1, "dask": "local:2"})):
        out = work / f"store_{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        report = modality.ingest([scenes], out, options=options, progress=False, **engine)
        seconds = time.perf_counter() - start
        results[name] = {"seconds": round(seconds, 2), "tiles": report["tiles_written"],
                         "tiles_dropped": report["tiles_dropped"]}
    t1, t2, td = (results[k]["seconds"] for k in ("1", "2", "dask"))
    tiles = results["1"]["tiles"]
    summary = {
        "scenes": args.scenes, "scene_px": args.size, "tile_px": args.tile, "bands": len(BANDS),
        "cpu_count": os.cpu_count(), "scene_write_s": round(written, 1),
        "discover_and_statistics_s": round(discover_s, 2),
        "ingest_workers_1": {**results["1"], "tiles_per_s": round(tiles / t1, 1)},
        "ingest_workers_2": {**results["2"], "tiles_per_s": round(tiles / t2, 1)},
        "ingest_dask_local_2": {**results["dask"], "tiles_per_s": round(tiles / td, 1)},
        "ingest_tiles_per_s_per_core": round(tiles / t1, 1),
        "ingest_speedup_2_workers": round(t1 / t2, 2),
        "ingest_speedup_dask_local_2": round(t1 / td, 2),
        "pool_startup_s_2_workers": round(warm[2]["startup_s"], 2),
        "read_only_tiles_per_s_1_worker": round(warm[1]["tiles"] / warm[1]["read_s"], 1),
        "read_only_tiles_per_s_2_workers_warm": round(warm[2]["tiles"] / warm[2]["read_s"], 1),
        "read_only_speedup_2_workers_warm": round(warm[1]["read_s"] / warm[2]["read_s"], 2),
    }
    print(json.dumps(summary, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
