"""Choose the MR recipe by measurement: DeepCluster variants on a real labelled T1 volume,
selected on validation slices, scored once on held-out test slices.

The volume is the MNI ICBM152 2009a symmetric T1 template (1 mm, 197 x 233 x 189; an average
of 152 real T1 scans) that ships inside nilearn, with its grey- and white-matter probability
maps as labels. It is ingested by the `mri` adapter (robust z-score, background tiles dropped);
a tile's label is the tissue with the highest mean probability in its central quarter: grey
matter, white matter, or neither (CSF and tissue outside the brain). Axial slices are cut into
blocks of `--block` mm, each block drawn to be test, validation or training; training tiles
within `--gap` mm of a test or validation block are dropped. Pretraining sees only training
tiles (no labels).

    python benchmarks/lowshot_mri.py --out runs/mri --common 'model.width=0.5;epochs=8' \
        --variant 'recipe:' --variant 'none:frontend=none' --variant 'alex:arch=alexnet'

Every variant is pretrained on the training blocks and scored on the validation blocks; the
variant with the best mean pretrained top-1 over the shot counts of `--select-shots` is then
pretrained on training + validation blocks and scored once on the test blocks. Finished runs
are kept and not run again.

Other subjects as the pretraining pool: `--other colin27=/usr/share/mricron/templates/ch2.nii.gz`
(Debian `mricron-data`: Colin27, one person's T1 at 1 mm) ingests that volume with the same
options, every slice, into OUT/colin27.zarr, and a variant pretrains on it instead of the scored
brain's training blocks with `store=OUT/colin27.zarr`. Scoring, standardisation and the split
stay on the MNI152 template, so such a variant is tested across subjects:

    python benchmarks/lowshot_mri.py --out runs/mri \
        --other colin27=/usr/share/mricron/templates/ch2.nii.gz \
        --variant 'own:' --variant 'colin27:store=runs/mri/colin27.zarr;subset_size=4000'

Region labels instead of tissue: `--task lobes` scores Colin27 (Debian `mricron-data`) labelled
by its AAL atlas, whose 116 grey-matter regions are grouped into 7 lobes (`LOBES`); a tile's
label is the lobe with the most atlas voxels in its central quarter, when it covers at least a
quarter of it, and tiles centred off the atlas (white matter, CSF, outside the brain) stay
unlabelled: pretrained on, never scored. Split and pools are built as for tissue, and
`--other mni152` offers the MNI152 template as the other subject:

    python benchmarks/lowshot_mri.py --task lobes --out runs/mri-lobes --other mni152 \
        --variant 'own:' --variant 'mni152:store=runs/mri-lobes/mni152.zarr;subset_size=2000'

Continued pretraining: `--source NAME:overrides` pretrains a run on another pool (its `store=`)
into OUT/NAME without scoring it, and a variant continues from its trunk on the scored brain's
training blocks with `model.init=OUT/NAME`:

    python benchmarks/lowshot_mri.py --out runs/mri \
        --other colin27=/usr/share/mricron/templates/ch2.nii.gz \
        --source 'colin27:store=runs/mri/colin27.zarr;subset_size=2000;epochs=6' \
        --variant 'own:' --variant 'colin27-then-own:model.init=runs/mri/colin27;epochs=4'
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
from domainclust.modalities.medical.nifti import load_nifti
from lowshot import (
    add_driver_arguments,
    parse_variants,
    pretrain_sources,
    select_then_test,
    write_stages,
)

from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.evaluation.data import Split

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mri.yaml"
TISSUES = ("grey matter", "white matter", "neither")
MRICRON = Path("/usr/share/mricron/templates")  # Debian's mricron-data
# AAL region names (by prefix, hemisphere ignored) grouped into lobes.
LOBES = {
    "frontal": ("Precentral", "Frontal", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory",
                "Rectus", "Paracentral_Lobule"),
    "parietal": ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Temporal", "Heschl", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital"),
    "limbic": ("Insula", "Cingulum", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "subcortical": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "cerebellum": ("Cerebelum", "Vermis"),
}


def template(kind: str) -> Path:
    files = metadata.distribution("nilearn")
    name = f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    return Path(str(files.locate_file(f"nilearn/datasets/data/{name}")))


def subject(name: str) -> Path:
    """The T1 volume of a subject known by name: `mni152` (nilearn) or `colin27` (mricron)."""
    known = {"mni152": template("t1"), "colin27": MRICRON / "ch2.nii.gz"}
    if name not in known:
        raise SystemExit(f"unknown subject {name!r}: give NAME=PATH, or one of {sorted(known)}")
    if not known[name].is_file():
        raise SystemExit(f"{name}: {known[name]} is missing (Colin27 and its atlases come with "
                         "Debian's mricron-data: sudo apt-get install mricron-data)")
    return known[name]


def centre_windows(position: np.ndarray, *, tile: int) -> Iterator[tuple[int, slice, slice]]:
    """Per tile: the (z, y, x) index of its central quarter, the middle quarter of its side in y
    and in x.

    Maps are read by the same NIfTI loader as the T1 volume, so they share its axial
    orientation; at 1 mm the adapter does not resample, so tile origins index them."""
    lo, hi = tile * 3 // 8, tile * 5 // 8
    for z, y, x in position[:, :3].astype(np.int64):
        yield z, slice(y + lo, y + hi), slice(x + lo, x + hi)


def tissue_labels(position: np.ndarray, *, tile: int) -> np.ndarray:
    """Per tile: argmax of mean (GM, WM, rest) probability over its central quarter."""
    gm, wm = (load_nifti(template(k), max_volumes=1)[0].values / 255.0 for k in ("gm", "wm"))
    means = []
    for window in centre_windows(position, tile=tile):
        g, w = float(gm[window].mean()), float(wm[window].mean())
        means.append((g, w, max(0.0, 1.0 - g - w)))
    return np.asarray(means).argmax(axis=1)


def lobe_of_region(names_path: Path) -> np.ndarray:
    """AAL region value → lobe index (-1 for the background and any unnamed value)."""
    lookup = np.full(256, -1)
    for line in filter(str.strip, names_path.read_text().splitlines()):
        value, name = line.split()[:2]
        lobe = [i for i, prefixes in enumerate(LOBES.values()) if name.startswith(prefixes)]
        if len(lobe) != 1:
            raise SystemExit(f"{names_path.name}: region {name} is in {len(lobe)} lobes")
        lookup[int(value)] = lobe[0]
    return lookup


def lobe_labels(position: np.ndarray, *, tile: int, min_share: float = 0.25) -> np.ndarray:
    """Per tile: the lobe with the most AAL voxels in its central quarter, when it covers at
    least `min_share` of it; -1 (unlabelled) otherwise. AAL labels grey matter only, so tiles
    centred on white matter, CSF or outside the brain stay unlabelled."""
    atlas = load_nifti(MRICRON / "aal.nii.gz", max_volumes=1)[0].values.astype(np.int64)
    lobes = lobe_of_region(MRICRON / "aal.nii.txt")[atlas]
    labels = []
    for window in centre_windows(position, tile=tile):
        counts = np.bincount(lobes[window].ravel() + 1, minlength=len(LOBES) + 1)[1:]
        best = int(counts.argmax())
        labels.append(best if counts[best] >= min_share * lobes[window].size else -1)
    return np.asarray(labels)


TASKS = {  # the scored brain, its per-tile labels and the class names
    "tissue": ("mni152", tissue_labels, TISSUES),
    "lobes": ("colin27", lobe_labels, tuple(LOBES)),
}


def slice_roles(z: np.ndarray, *, block: int, fractions: tuple[float, float], seed: int
                ) -> np.ndarray:
    """Role per slice index (0 train, 1 val, 2 test): whole blocks of `block` slices, drawn."""
    blocks = np.unique(z // block)
    order = np.random.default_rng(seed).permutation(blocks)
    n_val, n_test = (max(1, round(f * len(blocks))) for f in fractions)
    role_of = {int(b): 0 for b in order}
    role_of.update({int(b): 1 for b in order[:n_val]})
    role_of.update({int(b): 2 for b in order[n_val:n_val + n_test]})
    return np.array([role_of[int(b)] for b in z // block])


def apart(z: np.ndarray, keep: np.ndarray, held: np.ndarray, *, gap: int) -> np.ndarray:
    """Indices of `keep` whose slice is more than `gap` slices from every slice of `held`."""
    held_z = np.unique(z[held])
    distance = np.abs(z[keep][:, None] - held_z[None, :]).min(axis=1)
    return keep[distance > gap]


def prepare(out: Path, *, task: str, tile: int, stride: int, slice_stride: int, block: int,
            gap: int, seed: int, shots: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "store.zarr"
    brain, label_tiles, classes = TASKS[task]
    get_modality("mri").ingest(
        [subject(brain)], store_path, progress=False, workers=1,
        options={"tile_size": tile, "stride": stride, "slice_stride": slice_stride})
    store = TileStore(store_path)
    position = np.asarray(store.meta("position"))
    labels = label_tiles(position, tile=tile)
    z = position[:, 0].astype(np.int64)
    role = slice_roles(z, block=block, fractions=(0.2, 0.2), seed=seed)
    train, val, test = (np.flatnonzero(role == r) for r in range(3))
    pools = {"select": apart(z, train, val, gap=gap),
             "test": apart(z, np.concatenate([train, val]), test, gap=gap)}
    scarce = [c for c in np.unique(labels[labels >= 0])
              if min((labels[pool] == c).sum() for pool in pools.values()) < shots]
    if scarce:  # a class the training side cannot give `shots` of is not scored
        print(f"unscored (fewer than {shots} training tiles): {[classes[c] for c in scarce]}")
        labels = np.where(np.isin(labels, scarce), -1, labels)
    labels_path = out / "labels.npy"
    np.save(labels_path, labels)
    labelled = (lambda idx: idx[labels[idx] >= 0])
    stages = {
        "select": Split(train=labelled(pools["select"]), test=labelled(val),
                        source=f"axial blocks of {block} mm, validation side"),
        "test": Split(train=labelled(pools["test"]), test=labelled(test),
                      source=f"axial blocks of {block} mm, test side"),
    }
    counts = {classes[c] if c >= 0 else "unlabelled": int(n)
              for c, n in zip(*np.unique(labels, return_counts=True))}
    print(f"{brain}: {store.n} tiles {counts}; slices per role "
          f"{[len(np.unique(z[role == r])) for r in range(3)]}")
    return {"store": store.path, "labels": labels_path,
            "stages": write_stages(store, stages, out, pools=pools)}


def ingest_other(out: Path, spec: str, *, tile: int, stride: int) -> Path:
    """`NAME=PATH` (or a known subject's NAME) → that volume ingested, every slice, into
    OUT/NAME.zarr (unlabelled)."""
    name, _, path = spec.partition("=")
    path = Path(path) if path else subject(name)
    store = out / f"{name}.zarr"
    get_modality("mri").ingest([path], store, progress=False, workers=1,  # or resume
                               options={"tile_size": tile, "stride": stride})
    print(f"pretraining pool {name}: {TileStore(store).n} tiles from {path.name}")
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_driver_arguments(ap, recipe="mri", out="runs/mri")
    ap.add_argument("--task", choices=sorted(TASKS), default="tissue",
                    help="tissue: MNI152's GM/WM maps; lobes: Colin27's AAL regions as 7 lobes")
    ap.add_argument("--max-test", type=int, default=600)
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--slice-stride", type=int, default=4)
    ap.add_argument("--block", type=int, default=16, help="mm of axial slices per split block")
    ap.add_argument("--gap", type=int, default=4, help="mm kept between training and held-out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--other", action="append", default=[],
                    help="NAME=PATH, or mni152 / colin27: a volume of another subject, "
                         "ingested as a pretraining pool")
    ap.add_argument("--source", action="append", default=[],
                    help="NAME:key=value;... a run pretrained on another pool (its store=), not "
                         "scored, that variants continue from with model.init=OUT/NAME")
    args = ap.parse_args()
    for other in args.other:
        ingest_other(args.out, other, tile=args.tile, stride=args.stride)
    prepared = prepare(args.out, task=args.task, tile=args.tile, stride=args.stride,
                       slice_stride=args.slice_stride, block=args.block, gap=args.gap,
                       seed=args.seed, shots=max(args.shots + args.select_shots))
    pretrain_sources(args.source, common=args.common, recipe=RECIPE, out=args.out)
    variants = parse_variants(args.variant, common=args.common)
    select_then_test(variants, stages=prepared["stages"], recipe=RECIPE, out=args.out,
                     store=prepared["store"], labels=prepared["labels"], repeats=args.repeats,
                     shots=args.shots, rank_shots=args.select_shots, max_test=args.max_test,
                     protocol=args.protocol)


if __name__ == "__main__":
    main()
