"""Choose the CT recipe by measurement: DeepCluster variants on real lung CTs with tumour masks,
leave one volume out, selected on a slab of the training volume, scored once on the other.

The volumes are pyradiomics' two lung CTs (`lung1`, 512x512x48 at 0.57 mm, and `lung2`,
512x512x61 at 0.63 mm, 5 mm slices; PyPI sdist pyradiomics 3.0.1, see .ci/run for the fetch),
ingested by the `ct` adapter with their masks (`masks=`): 32 px tiles at 0.5 mm (16 mm, so
that lung1's small tumour fills a tile), stride 16, air tiles dropped. A tile is a lesion tile
when at least `--lesion` of it is tumour, a background tile when none of it is; tiles in between
are left out of every labelled set.

Leave one volume out: lung2, whose tumour is large (55 x 41 mm over 11 slices), is the labelled
training volume; lung1 (a 14 mm tumour over 3 slices) is the held-out test volume. Selection
never sees lung1: lung2 is cut at the median slice of its tumour into a lower slab (shots and
pretraining) and an upper slab (validation), with `--gap` slices between them. Every variant is
pretrained on the lower slab's tiles (unlabelled, every tile) and scored on the upper slab; the
one with the best mean pretrained top-1 there is pretrained on all of lung2 and scored once on
lung1. Lesion tiles are rare (about 1 %), so every validation and test set is balanced: all its
lesion tiles and as many background tiles drawn from the same part (seeded); top-1 on a
balanced set is the balanced accuracy.

`--task candidate` keeps only nodule candidates in both classes (see `candidates`), so that the
background is what a lesion is confused with, not muscle or fat that the HU level tells apart.
`--train lung1` is the other fold: lung1's slabs select, lung2 is scored (use `--gap 0`: its
tumour spans 3 slices). A variant with `store=OUT/{stage}-all.zarr` pretrains on its stage's
pool together with the tiles that stage scores, unlabelled (see `link_scored_pools`).

    python benchmarks/lowshot_ct.py --out runs/ct --repeats 5 \\
        --common 'model.width=0.5;k=50;epochs=5;batch_size=64;subset_size=2000' \\
        --variant 'per-channel:frontend=sobel-per-channel' \\
        --variant 'level:frontend=sobel-level' --variant 'none:frontend=none'
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from domainclust.modalities.medical.ct import DEFAULT_WINDOWS
from lowshot import add_driver_arguments, parse_variants, select_then_test, write_stages

from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.evaluation.data import Split

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ct.yaml"
DATA = Path(os.environ.get("DOMAINCLUST_TEST_DATA") or "~/.cache/domainclust-test-data"
            ).expanduser() / "pyradiomics" / "data"
VOLUMES = ("lung2", "lung1")  # lung2, the larger tumour, is the default training volume
AERATED, DENSE = 0.2, 0.1  # shares of a candidate tile: aerated lung, tissue denser than it


def candidates(tiles: np.ndarray, *, channels: tuple[str, ...]) -> np.ndarray:
    """Whether each tile is a nodule candidate: at least `AERATED` of it aerated lung (-950 to
    -500 HU) and at least `DENSE` of it denser than -500 HU, read from the ingest's lung window.
    A nodule detector's candidates look like this, and so do vessels, airway walls and the
    lung's borders: telling which of them is tumour takes shape, not the tile's HU level."""
    width, level = DEFAULT_WINDOWS["lung"]
    hu = tiles[:, channels.index("lung")].astype(np.float32) * (width / 255) + level - width / 2
    aerated = ((hu >= -950) & (hu < -500)).mean(axis=(1, 2))
    return (aerated >= AERATED) & ((hu >= -500).mean(axis=(1, 2)) >= DENSE)


def lesion_labels(store: TileStore, *, lesion: float, task: str) -> np.ndarray:
    """1 for a tile with at least `lesion` tumour, 0 for one with none, -1 in between; with
    task `candidate`, -1 too for every tile that is not a candidate (see `candidates`)."""
    share = np.empty(store.n)
    keep = np.ones(store.n, dtype=bool)
    for start in range(0, store.n, 4096):
        rows = np.arange(start, min(start + 4096, store.n))
        share[rows] = (store.read_masks(rows) > 0).mean(axis=(1, 2))
        if task == "candidate":
            keep[rows] = candidates(store.read(rows), channels=store.channels)
    labels = np.where(share >= lesion, 1, np.where(share == 0, 0, -1))
    return np.where(keep, labels, -1)


def balanced(indices: np.ndarray, labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """All lesion tiles of `indices` and as many of its background tiles, drawn."""
    lesion = indices[labels[indices] == 1]
    background = indices[labels[indices] == 0]
    drawn = rng.choice(background, size=min(len(lesion), len(background)), replace=False)
    return np.sort(np.concatenate([lesion, drawn]))


def volumes(store: TileStore, labels: np.ndarray, *, train: str
            ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(the `train` volume's tiles, the other's, lesion tiles per source). Sources are recorded
    in item-key order, so each volume is found by its tumour size instead: lung2's is the
    larger one."""
    source = np.asarray(store.meta("source"))
    lesions = {int(s): int((labels[source == s] == 1).sum()) for s in np.unique(source)}
    train_source = (max if train == "lung2" else min)(lesions, key=lesions.get)
    return np.flatnonzero(source == train_source), np.flatnonzero(source != train_source), lesions


def prepare(out: Path, *, task: str, train_volume: str, tile: int, stride: int, spacing: float,
            lesion: float, gap: int, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "store.zarr"
    images = [DATA / f"{name}_image.nrrd" for name in VOLUMES]
    if not all(p.is_file() for p in images):
        raise SystemExit(f"pyradiomics' lung CTs are not under {DATA}: run the pyradiomics step "
                         "of .ci/run (or set DOMAINCLUST_TEST_DATA)")
    get_modality("ct").ingest(images, store_path, progress=False, workers=1,  # or resume
                              options={"tile_size": tile, "stride": stride, "spacing": spacing,
                                       "masks": str(DATA)})
    store = TileStore(store_path)
    labels = lesion_labels(store, lesion=lesion, task=task)
    labels_path = out / "labels.npy"
    np.save(labels_path, labels)
    z = np.asarray(store.meta("position"))[:, 0].astype(np.int64)
    train, test, lesions = volumes(store, labels, train=train_volume)
    test_volume = next(v for v in VOLUMES if v != train_volume)
    cut = int(np.median(z[train][labels[train] == 1]))
    lower, upper = train[z[train] < cut - gap], train[z[train] >= cut]
    rng = np.random.default_rng(seed)
    labelled = (lambda idx: idx[labels[idx] >= 0])
    splits = {
        "select": Split(train=labelled(lower), test=balanced(upper, labels, rng=rng),
                        source=f"{train_volume} slices < {cut - gap} / >= {cut}, balanced"),
        "test": Split(train=labelled(train), test=balanced(test, labels, rng=rng),
                      source=f"leave one volume out: {train_volume} / {test_volume}, "
                      "balanced"),
    }
    shots_from = {stage: int((labels[s.train] == 1).sum()) for stage, s in splits.items()}
    print(f"{store.n} tiles; lesion tiles per volume (source: n) {lesions}; lesion tiles to "
          f"draw shots from, per stage {shots_from}")
    stages = write_stages(store, splits, out, pools={"select": lower, "test": train})
    link_scored_pools(out)
    return {"store": store.path, "labels": labels_path, "stages": stages}


def link_scored_pools(out: Path) -> None:
    """`{stage}-all.zarr`: each stage's pool with the tiles it is scored on, unlabelled, for a
    variant that names `store=OUT/{stage}-all.zarr`: the whole training volume for `select`
    (both slabs: its `test` pool), both volumes for `test` (the ingested store). A user pools
    every scan, the ones they will label too; these pools measure what that is worth."""
    for stage, target in (("select", "test-pretrain.zarr"), ("test", "store.zarr")):
        link = out / f"{stage}-all.zarr"
        if not link.is_symlink():
            link.symlink_to(target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_driver_arguments(ap, recipe="ct", out="runs/ct")
    ap.add_argument("--task", choices=("lesion", "candidate"), default="lesion",
                    help="lesion: background tiles from anywhere; candidate: both classes only "
                         "among nodule candidates (aerated lung beside denser tissue)")
    ap.add_argument("--train", choices=VOLUMES, default="lung2",
                    help="the labelled training volume; the other one is the test volume")
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--spacing", type=float, default=0.5, help="in-plane mm per pixel")
    ap.add_argument("--lesion", type=float, default=0.1,
                    help="tumour fraction of a lesion tile (background tiles have none)")
    ap.add_argument("--gap", type=int, default=1, help="slices between training and validation")
    ap.add_argument("--seed", type=int, default=0,
                    help="draws the balanced sets, pretraining and the shots")
    args = ap.parse_args()
    prepared = prepare(args.out, task=args.task, train_volume=args.train, tile=args.tile,
                       stride=args.stride, spacing=args.spacing, lesion=args.lesion, gap=args.gap,
                       seed=args.seed)
    variants = parse_variants(args.variant, common=f"seed={args.seed};{args.common}")
    select_then_test(variants, stages=prepared["stages"], recipe=RECIPE, out=args.out,
                     store=prepared["store"], labels=prepared["labels"], repeats=args.repeats,
                     shots=args.shots, rank_shots=args.select_shots, seed=args.seed,
                     protocol=args.protocol)


if __name__ == "__main__":
    main()
