"""Per-pixel masks beside CT/MR volumes: pairing, grid check, resampling and the tile label.

`--set masks=PATH` names a folder of mask volumes (NIfTI or NRRD) and DICOM SEGs (it may be the
images' own folder), one DICOM SEG file, or a CSV of `image,mask` pairs (paths relative to the
CSV; for a DICOM series, `image` is one of its files or a folder above them). By name, an image
`X_image.nrrd` (or `X.nrrd`, `X_img.nii.gz`, ...) pairs with `X_label`, `X_labels`, `X_mask` or
`X_seg` in the masks folder, in any of the volume formats; in a folder other than the image's,
a file named as the image also pairs. A DICOM series pairs with the DICOM SEG that references
it (`dicom_seg.py`). Mask files are never ingested as images.

A mask must lie on its image's voxel grid (same size and the same voxel → mm affine after both
are reoriented axial): one that does not is refused, naming both files. It is reoriented and
resampled in-plane with its image, by nearest neighbour, and cut into the same tiles. Values
are class ids (integers >= 0, 0 the background); voxels equal to `ignore`, and the padding
around a slice smaller than a tile, are unlabelled.

Every tile also gets a label from its mask: 1 when at least `label_fraction` of its labelled
pixels are foreground (class > 0, e.g. a lesion), else 0; -1 when none of its pixels is labelled.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from domainclust.modalities.medical.dicom_seg import (
    find_segs,
    is_seg,
    number_classes,
    pair_series,
)
from domainclust.modalities.medical.volume import Volume, hashed

from domainclust.data.ingest_item import Skip, SourceItem
from domainclust.errors import DomainclustError

MASK_SUFFIXES = ("_label", "_labels", "_mask", "_seg", "-label", "-labels", "-mask", "-seg")
IMAGE_SUFFIXES = ("_image", "-image", "_img", "-img")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr")
UNLABELLED = -1  # an unlabelled pixel in the masks handed to the store
MAX_CLASS = 32766  # the store's int16 masks (its ignore value is -1)
GRID_TOLERANCE = 0.01  # of the smallest voxel size: how far mask and image geometry may differ


def volume_stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def looks_like_mask(path: Path) -> bool:
    return volume_stem(path).lower().endswith(MASK_SUFFIXES)


def _base(stem: str) -> str:
    return re.sub("(" + "|".join(map(re.escape, IMAGE_SUFFIXES)) + ")$", "", stem,
                  flags=re.IGNORECASE)


def read_pairs_csv(path: Path) -> dict[Path, Path]:
    """{image: mask} from a CSV with `image` and `mask` columns (paths relative to the CSV)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DomainclustError(f"--set masks={path}: cannot read the CSV ({exc})") from None
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise DomainclustError(f"--set masks={path}: the CSV needs a header with columns "
                               "image,mask and one row per image")
    pairs = {}
    for row in rows:
        image, mask = (path.parent / (row[k] or "").strip() for k in ("image", "mask"))
        pairs[image.resolve()] = mask.resolve()
    return pairs


def find_masks(masks: Path, images: list[Path], *,
               pairs: dict[Path, Path] | None = None) -> dict[Path, list[Path]]:
    """{image: candidate masks} by name in the folder `masks`, or from the CSV's `pairs`
    (none when `masks` is a DICOM SEG file)."""
    if masks.is_file():
        pairs = pairs or {}
        return {image: [pairs[image.resolve()]] if image.resolve() in pairs else []
                for image in images}
    files = [p for p in masks.rglob("*") if p.is_file() and p.name.lower().endswith(
        VOLUME_SUFFIXES)]
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(volume_stem(path).lower(), []).append(path)
    found = {}
    for image in images:
        base = _base(volume_stem(image)).lower()
        wanted = [base + s for s in MASK_SUFFIXES]
        candidates = [p for stem in wanted for p in by_stem.get(stem, [])]
        if not candidates:  # the image's own name, in another folder than the image
            candidates = [p for p in by_stem.get(volume_stem(image).lower(), [])
                          if p.resolve() != image.resolve()]
        found[image] = sorted(set(candidates))
    return found


def pair_items(items: list[SourceItem], *, masks: Path, salt: str) -> list[SourceItem]:
    """Items with their mask as a last path (key from both): volumes by name or CSV, DICOM
    series with the DICOM SEG that references them (see `dicom_seg.py`); mask files taken out
    of the images, and every image without exactly one mask skipped with the reason."""
    if not masks.exists():
        raise DomainclustError(f"--set masks={masks}: no such folder, CSV or DICOM SEG file")
    rows = read_pairs_csv(masks) if masks.is_file() and not is_seg(masks) else None
    segs = find_segs(masks, csv_masks=None if rows is None else list(rows.values()))
    seg_paths = {seg.path.resolve() for seg in segs}
    items = pair_series(items, segs=segs, rows=rows, salt=salt)
    volumes = [item for item in items if item.info.get("kind") in ("nifti", "nrrd")]
    found = find_masks(masks, [item.paths[0] for item in volumes], pairs=rows)
    used = {m.resolve() for candidates in found.values() if len(candidates) == 1
            for m in candidates}
    out = []
    for item in items:
        kind = item.info.get("kind")
        if "skip" in item.info or kind not in ("nifti", "nrrd"):
            out.append(item)
        elif item.paths[0].resolve() in used:
            continue  # a mask, not an image
        elif looks_like_mask(item.paths[0]):
            out.append(replace(item, info={"skip": "named as a mask (_label, _mask, _seg), but "
                                           "no image pairs with it"}))
        elif len(found[item.paths[0]]) != 1:
            candidates = found[item.paths[0]]
            reason = ("no mask pairs with it (by name: X_image ↔ X_label, X_mask, X_seg, or "
                      "a CSV of image,mask)" if not candidates else
                      f"{len(candidates)} masks pair with it by name "
                      f"({', '.join(p.name for p in candidates)}); pair them in a CSV")
            out.append(replace(item, info={"skip": reason}))
        elif found[item.paths[0]][0].resolve() in seg_paths:
            out.append(replace(item, info={"skip": "mask: a DICOM SEG pairs with the DICOM "
                                           "series it was drawn on, not with a volume file"}))
        else:
            mask = found[item.paths[0]][0]
            digest = hashed(salt, str(item.paths[0].resolve()), str(mask))
            key = f"{item.key.split('-')[0]}-{digest}"
            out.append(SourceItem(key=key, paths=[item.paths[0], mask],
                                  info={**item.info, "mask": True}))
    if any("segments" in i.info for i in out) and any(
            i.info.get("mask") and "segments" not in i.info for i in out):
        out = [replace(i, info={"skip": "mask: DICOM SEGs and label volumes cannot share a "
                                "store (segment labels number the classes of one, voxel values "
                                "those of the other); ingest them into separate stores"})
               if "segments" in i.info else i for i in out]
    return number_classes(out)


def check_grid(image: Volume, mask: Volume) -> None:
    """Refuse a mask whose voxels are not its image's (after both were reoriented axial)."""
    size = "x".join(str(s) for s in image.values.shape[::-1])
    if mask.values.shape != image.values.shape:
        raise Skip(f"mask: its grid of {'x'.join(str(s) for s in mask.values.shape[::-1])} "
                   f"voxels (after reorientation) does not match the image's {size}; a mask "
                   "must be drawn on its image's grid")
    if image.affine is None or mask.affine is None:
        return
    tolerance = GRID_TOLERANCE * min(image.spacing)
    axes = float(np.abs(mask.affine[:3, :3] - image.affine[:3, :3]).max())
    shift = float(np.linalg.norm(mask.affine[:3, 3] - image.affine[:3, 3]))
    differences = ([f"voxel axes differ by up to {axes:.3g} mm"] if axes > tolerance else []) + (
        [f"origins are {shift:.3g} mm apart"] if shift > tolerance else [])
    if differences:
        raise Skip(f"mask: its grid does not match the image's ({size} voxels either way, but "
                   f"{' and '.join(differences)}); a mask must be drawn on its image's grid")


def class_ids(mask: Volume, *, ignore: int | None) -> np.ndarray:
    """(Z, Y, X) float32 class ids with unlabelled voxels at -1; refused unless every value is
    an integer class id >= 0 (or `ignore`) that fits the store's masks."""
    values = mask.values
    if not np.array_equal(values, np.rint(values)):
        raise Skip("mask: holds values that are not integers (a probability map?); masks are "
                   "class ids")
    out = values.copy()
    if ignore is not None:
        out[values == ignore] = UNLABELLED
    labelled = out[out != UNLABELLED]
    if labelled.size and (labelled.min() < 0 or labelled.max() > MAX_CLASS):
        raise Skip(f"mask: class ids must lie in 0..{MAX_CLASS}, found {labelled.min():g}.."
                   f"{labelled.max():g} (set ignore= to the value of unlabelled voxels)")
    return out


def resample_mask(mask: np.ndarray, *, shape: tuple[int, int]) -> np.ndarray:
    """(Z, Y, X) class ids → (Z, *shape) by nearest neighbour (the image's in-plane grid)."""
    if mask.shape[1:] == tuple(shape):
        return mask
    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(mask))[None], size=shape,
                            mode="nearest-exact")
    return out[0].numpy()


def tile_labels(masks: np.ndarray, *, fraction: float) -> np.ndarray:
    """Per (n, H, W) mask tile: 1 when at least `fraction` of its labelled pixels are
    foreground (> 0), 0 otherwise, -1 with no labelled pixel."""
    labelled = (masks >= 0).sum(axis=(1, 2))
    foreground = (masks > 0).sum(axis=(1, 2))
    share = foreground / np.maximum(labelled, 1)
    return np.where(labelled == 0, -1, (share >= fraction) & (foreground > 0)).astype(np.int64)
