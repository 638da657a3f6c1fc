"""Low-shot MR tissue segmentation on a brain not used for pretraining: does a trunk pretrained
on one person's T1 (Colin27) segment grey matter, white matter and the rest of another brain (the
MNI152 template) better than per-pixel logistic regression, random init and the majority class?

Pretraining pool: Colin27 (Debian `mricron-data`, `/usr/share/mricron/templates/ch2.nii.gz`,
one person's T1 at 1 mm), every axial slice, ingested by the `mri` adapter without labels
(`lowshot_mri.ingest_other`). DeepCluster (the mri recipe plus `--set` overrides) sees only it.

Scored brain: the MNI ICBM152 2009a T1 template in nilearn (an average of 152 scans, 1 mm). Its
grey- and white-matter probability maps become a class per voxel, written as a NIfTI mask on the
T1's grid in the run's own folder and ingested beside the T1 with `masks=`: 0 other (CSF, skull,
scalp, air: 1 - GM - WM), 1 grey matter, 2 white matter, the class whose probability is at least
`--threshold`; voxels where none is (partial volume) are unlabelled (255, `ignore=255`). The split
is `lowshot_mri.py`'s test stage: whole 16 mm axial blocks drawn to training, validation or
test (seed 0), training + validation tiles within 4 mm of a test slice dropped. Shots are drawn
from the training side per repeat (every class shown); the lr and step count are chosen by inner
cross-validation on the shots (frozen protocol, no flips: anatomy has a side); mIoU is scored
once on the test blocks.

    python benchmarks/segment_mri.py --out runs/segment-mri --repeats 3 --shots 2,5,10

README's figures: `--lrs 0.03 --steps 30,60 --set model.width=0.25 --set epochs=6
--set subset_size=1500`, one shot count per run (`--eval-name`), and `--ceilings`, which prints
how far the labels follow the intensity (test mIoU of an intensity lookup and of pixel_logistic
fitted on every training tile).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from lowshot_mri import RECIPE, apart, ingest_other, slice_roles, template
from segment import add_segment_arguments, score

from domainclust.config import resolve
from domainclust.data.modality import get_modality, load_recipe
from domainclust.data.store import TileStore
from domainclust.engine.deepcluster import pretrain
from domainclust.evaluation.data import Split, save_split
from domainclust.evaluation.features import read_float_tiles
from domainclust.segmentation.baselines import DEFAULT_PENALTY, PixelLogistic
from domainclust.segmentation.metrics import confusion, scores
from domainclust.segmentation.protocol import class_masks

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
CLASSES = ("other", "grey matter", "white matter")
IGNORE = 255
# Pretraining at reduced scale (2 CPU cores): lowshot_mri.py's Colin27 variant, shorter.
PRETRAIN = ["model.width=0.5", "k=50", "epochs=6", "batch_size=64", "subset_size=2000"]


def write_tissue_mask(folder: Path, *, threshold: float) -> Path:
    """The MNI152 T1's tissue classes as a uint8 NIfTI on its grid, named to pair with it."""
    t1 = nib.load(template("t1"))
    gm, wm = (np.asarray(nib.load(template(k)).dataobj, dtype=np.float32) / 255.0
              for k in ("gm", "wm"))
    probability = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm])
    mask = np.where(probability.max(0) >= threshold, probability.argmax(0), IGNORE)
    folder.mkdir(parents=True, exist_ok=True)
    stem = template("t1").name[: -len(".nii.gz")]
    path = folder / f"{stem}_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), t1.affine), path)
    return path


def prepare(out: Path, *, tile: int, stride: int, slice_stride: int, block: int, gap: int,
            threshold: float, seed: int) -> tuple[Path, Path]:
    """The masked MNI152 store and the split file (lowshot_mri.py's test blocks)."""
    mask = write_tissue_mask(out / "masks", threshold=threshold)
    store_path = out / "store.zarr"
    get_modality("mri").ingest(
        [template("t1")], store_path, progress=False, workers=1,
        options={"tile_size": tile, "stride": stride, "slice_stride": slice_stride,
                 "masks": str(mask.parent), "ignore": IGNORE})
    store = TileStore(store_path)
    classes, masks = class_masks(store)
    z = np.asarray(store.meta("position"))[:, 0].astype(np.int64)
    role = slice_roles(z, block=block, fractions=(0.2, 0.2), seed=seed)
    train, test = np.flatnonzero(role < 2), np.flatnonzero(role == 2)
    split = Split(train=apart(z, train, test, gap=gap), test=test,
                  source=f"axial blocks of {block} mm, seed {seed}, training tiles more than "
                         f"{gap} mm from a test slice")
    path = out / "split.npz"
    save_split(path, split)
    names = [CLASSES[int(c)] for c in classes]
    share = {side: {n: round(float((masks[idx] == i).sum()) / masks[idx].size, 3)
                    for i, n in enumerate(names)}
             for side, idx in (("train", split.train), ("test", split.test))}
    print(f"{store.n} tiles; {split.describe()}; pixel share per class {share}, the rest "
          f"unlabelled")
    return store.path, path


def ceilings(store_path: Path, split_path: Path, *, seed: int) -> None:
    """How far the labels follow the intensity: test mIoU of the class most frequent at each
    stored intensity on every training tile, and of pixel_logistic fitted on every training
    tile (its default penalty). Reference points only: nothing is chosen from them."""
    store = TileStore(store_path)
    classes, masks = class_masks(store)
    with np.load(split_path) as saved:
        split = Split(train=saved["train"], test=saved["test"], source=str(split_path))
    k = len(classes)
    raw = store.read(np.concatenate([split.train, split.test]))[:, 0].astype(np.int64)
    train, test = raw[:len(split.train)], raw[len(split.train):]
    y_train, y_test = masks[split.train], masks[split.test]
    keep = y_train >= 0
    table = np.zeros((256, k), dtype=np.int64)
    np.add.at(table, (train[keep], y_train[keep]), 1)
    lookup = table.argmax(1)
    by_intensity = scores(confusion(y_test, lookup[test], n_classes=k))
    x_train = read_float_tiles(store, split.train, tile_size=store.tile_size)
    x_test = read_float_tiles(store, split.test, tile_size=store.tile_size)
    fit = PixelLogistic.fit(x_train, y_train, n_classes=k, penalty=DEFAULT_PENALTY, seed=seed)
    every = scores(confusion(y_test, fit.predict(x_test), n_classes=k))
    print(f"ceilings on the {len(split.test)} test tiles, mIoU: the class most frequent at each "
          f"intensity (all {len(split.train)} training tiles) {100 * by_intensity['miou']:.1f}; "
          f"pixel_logistic on all of them {100 * every['miou']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/segment-mri"))
    ap.add_argument("--pool", type=Path, default=COLIN27,
                    help="the unlabelled pretraining volume (another person's T1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="mri recipe override for pretraining (key=value), after the defaults "
                         f"{';'.join(PRETRAIN)}")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="tissue probability a voxel's class needs; below it, unlabelled")
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--slice-stride", type=int, default=4)
    ap.add_argument("--block", type=int, default=16, help="mm of axial slices per split block")
    ap.add_argument("--gap", type=int, default=4, help="mm kept between training and test")
    ap.add_argument("--eval-name", default="eval",
                    help="folder under OUT/run for segment.json (runs of other --shots side by "
                         "side: a shot count's draws do not depend on the others)")
    ap.add_argument("--ceilings", action="store_true",
                    help="print how far the labels follow the intensity, then stop")
    add_segment_arguments(ap)
    args = ap.parse_args()
    start = time.time()
    if not args.pool.is_file():
        ap.error(f"{args.pool}: no such file (Colin27 comes with Debian's mricron-data)")
    store, split = prepare(args.out, tile=args.tile, stride=args.stride,
                           slice_stride=args.slice_stride, block=args.block, gap=args.gap,
                           threshold=args.threshold, seed=args.seed)
    if args.ceilings:
        ceilings(store, split, seed=args.seed)
        return
    pool = ingest_other(args.out, f"pool={args.pool}", tile=args.tile, stride=args.stride)
    run = args.out / "run"
    if not (run / "eval" / "pretrained.done").exists():
        config = resolve(recipe=load_recipe(str(RECIPE)),
                         overrides=[f"store={pool}", "report=false", *PRETRAIN, *args.overrides])
        pretrain(config, run, progress=False, log=lambda m: print(f"[pretrain] {m}", flush=True))
        (run / "eval").mkdir(parents=True, exist_ok=True)
        (run / "eval" / "pretrained.done").write_text("")
    print(f"prepared and pretrained in {time.time() - start:.0f} s", flush=True)
    score(args, run=run, store=store, split=split, out=run / args.eval_name, start=start, flip=False)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
