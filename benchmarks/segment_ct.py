"""Low-shot tumour segmentation on real lung CTs, leave one volume out: does the pretrained CT
trunk segment the tumour better than per-pixel logistic regression, random init and the
majority class?

The store is `lowshot_ct.py`'s (pyradiomics' two lung CTs with their tumour masks, 32 px tiles
at 0.5 mm, stride 16, 3 HU-window channels, masks 0 background / 1 tumour), and the pretrained
trunk its finished run (`--checkpoint`: ResNet-18 width 0.5, no front-end, k 50, 5 epochs,
pretrained on every tile of lung2, without labels); both are made with the same settings when
missing. Leave one volume out: shots are drawn from lung2's labelled tiles, so with a rare
tumour class a draw holds one or two tumour tiles and the rest background, as a practitioner's
few labelled tiles would. The test side is every lung1 tile that holds tumour plus as many
tumour-free lung1 tiles (seeded): Dice over all of lung1's tiles would be dominated by the
thousands of tumour-free tiles, where any false positive counts and no tumour can be found.
The frozen protocol (`--protocol`) trains the decoder with the grid chosen by inner
cross-validation on the shots, no flips (anatomy has a side), and scores Dice once on lung1.
`--balance-classes` weights each class by the inverse of its pixel share in the shots, for
every method: tumour is a few percent of the shots' pixels, and unweighted fits learn it as
never present.

    python benchmarks/segment_ct.py --out runs/segment-ct --repeats 5 --shots 2,5,10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from lowshot_ct import RECIPE, TEST, TRAIN, balanced, prepare, volumes
from segment import add_segment_arguments, score

from domainclust.config import resolve
from domainclust.data.modality import load_recipe
from domainclust.data.store import TileStore
from domainclust.engine.deepcluster import pretrain
from domainclust.evaluation.data import Split, save_split
from domainclust.segmentation.protocol import class_masks, presence, tile_majority

# README "Real lung CTs with tumour masks": the chosen variant, as lowshot_ct.py pretrained it.
PRETRAIN = ["model.width=0.5", "k=50", "epochs=5", "batch_size=64", "subset_size=2000",
            "frontend=none"]


def make_split(store_path: Path, out: Path, *, seed: int) -> Path:
    """The leave-one-volume-out split file: lung2's labelled tiles / lung1's tumour tiles and
    as many of its tumour-free tiles."""
    store = TileStore(store_path)
    classes, masks = class_masks(store)
    labelled = tile_majority(masks, n_classes=len(classes)) >= 0
    tumour = np.where(labelled, presence(masks, n_classes=len(classes))[:, 1], -1)
    del masks
    train, test, _ = volumes(store, tumour)
    split = Split(train=train[labelled[train]],
                  test=balanced(test[labelled[test]], tumour, rng=np.random.default_rng(seed)),
                  source=f"leave one volume out: {TRAIN} labelled / {TEST} tumour tiles and as "
                         f"many tumour-free, seed {seed}")
    path = out / "split.npz"
    save_split(path, split)
    print(f"split: {split.describe()}")
    print(f"{TRAIN}: {int((tumour[split.train] == 1).sum())} of {len(split.train)} tiles hold "
          f"tumour; {TEST}: {int((tumour[test] == 1).sum())} of {len(test)} tiles hold tumour, "
          f"test side {int((tumour[split.test] == 1).sum())} tumour + "
          f"{int((tumour[split.test] == 0).sum())} tumour-free tiles")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/segment-ct"))
    ap.add_argument("--ct", type=Path, default=Path("runs/ct"),
                    help="lowshot_ct.py's output folder (store.zarr, test-pretrain.zarr)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="pretrained run (default: CT/test/none, pretrained there when missing)")
    ap.add_argument("--balance-classes", action="store_true",
                    help="weight each class by the inverse of its pixel share in the shots")
    add_segment_arguments(ap)
    args = ap.parse_args()
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.ct / "store.zarr"
    if not store.exists():
        prepare(args.ct, tile=32, stride=16, spacing=0.5, lesion=0.1, gap=1, seed=args.seed)
    run = args.checkpoint or args.ct / "test" / "none"
    if args.checkpoint is None and not (run / "checkpoints" / "last.pt").is_file():
        config = resolve(recipe=load_recipe(str(RECIPE)),
                         overrides=[f"store={args.ct / 'test-pretrain.zarr'}", "report=false",
                                    *PRETRAIN])
        pretrain(config, run, progress=False, log=lambda m: print(f"[pretrain] {m}", flush=True))
    split = make_split(store, args.out, seed=args.seed)
    score(args, run=run, store=store, split=split, out=args.out, start=start, flip=False,
          balance_classes=args.balance_classes)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
