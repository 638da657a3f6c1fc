"""NIfTI for the CT/MR adapters: a file → axial `Volume`s through nibabel and its affine.

nibabel is used directly (not MONAI's `NibabelReader`) so that a 4-D series reads only the
volumes asked for. The affine gives spacing and orientation: each volume is reoriented, by
axis permutation and flips only, so that slices are axial and rows/columns run as in an axial
DICOM image (rows anterior→posterior, columns right→left, slices inferior→superior).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from domainclust.modalities.medical.volume import Volume, scrub
from nibabel import orientations

from domainclust.data.ingest_item import Skip

SUFFIXES = (".nii", ".nii.gz")
AXIAL_DICOM_LIKE = ("P", "L", "S")  # (row, column, slice) directions
UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def load_nifti(path: Path, *, max_volumes: int) -> list[Volume]:
    """The first `max_volumes` 3-D volumes of a NIfTI file, axial, in scanner units."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = nib.load(path)
            if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
                raise Skip(f"is not a NIfTI image ({type(image).__name__})")
            shape = tuple(int(s) for s in image.shape)
            while len(shape) > 4 and shape[-1] == 1:  # dim[0] may count trailing 1s
                shape = shape[:-1]
            if not 2 <= len(shape) <= 4 or min(shape) < 1:
                raise Skip(f"a NIfTI volume must be 2-D, 3-D or 4-D, header says {shape}")
            affine = np.asarray(image.affine, dtype=np.float64)
            n = 1 if len(shape) < 4 else min(shape[3], max_volumes)
            proxy = image.dataobj
            index = (slice(None),) * len(shape[:3]) + ((slice(0, n),) if len(shape) == 4 else ())
            index += (0,) * (len(image.shape) - len(index))
            _check_voxel_size(path, image, shape=shape)
            data = np.asarray(proxy[index], dtype=np.float32)
            unit = image.header.get_xyzt_units()[0]
    except Skip:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise Skip(f"cannot be read as NIfTI ({type(exc).__name__}: "
                   f"{scrub(str(exc), [path])})") from None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise Skip("the header's affine is degenerate, so spacing and orientation "
                   "are unknown")
    affine = np.diag([UNIT_TO_MM.get(unit, 1.0)] * 3 + [1.0]) @ affine
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        data = data[..., None]
    finite = np.isfinite(data)
    if not finite.all():
        # NaN/inf mark voxels outside the scan (a resampled CT's corners): they take the
        # volume's lowest value, its background (air in HU), not 0, which a CT calls tissue.
        low = float(data[finite].min()) if finite.any() else 0.0
        data = np.where(finite, data, np.float32(low))
    return [axial_volume(data[..., t], affine, source="nifti") for t in range(data.shape[3])]


def _check_voxel_size(path: Path, image: nib.Nifti1Image, *, shape: tuple[int, ...]) -> None:
    """Refuse a volume whose affine comes from a voxel size (pixdim) of 0 or not finite:
    nibabel quietly reads such a size as 1 mm, which would resample the volume to a made-up
    scale. An affine given by the sform does not use pixdim, so it is not checked."""
    if int(image.header["sform_code"]) != 0:
        return
    with nib.openers.ImageOpener(path) as f:  # the header as written, before nibabel's fixes
        raw = type(image.header).from_fileobj(f, check=False)
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if any(size > 1 and not (np.isfinite(step) and step > 0)
           for size, step in zip(shape[:3], pixdim)):
        raise Skip(f"its voxel size (pixdim) is {' x '.join(f'{p:g}' for p in pixdim)} and no "
                   "sform gives the affine, so its spacing is unknown (nibabel would assume "
                   "1 mm); write the true voxel size into the header (nibabel: "
                   "header.set_zooms) and ingest it again")


def axial_volume(data: np.ndarray, affine: np.ndarray, *, source: str) -> Volume:
    """(slice, row, column) volume with DICOM-like axial axes, and its geometry from a RAS+ mm
    affine (NIfTI's; NRRD's after LPS → RAS)."""
    current = orientations.io_orientation(affine)
    transform = orientations.ornt_transform(current, orientations.axcodes2ornt(AXIAL_DICOM_LIKE))
    oriented = orientations.apply_orientation(data, transform)
    new_affine = affine @ orientations.inv_ornt_aff(transform, data.shape)
    sizes = nib.affines.voxel_sizes(new_affine)
    normal = new_affine[:3, 2] / np.linalg.norm(new_affine[:3, 2])
    positions = (new_affine[:3, 3] @ normal) + np.arange(oriented.shape[2]) * sizes[2]
    values = np.ascontiguousarray(np.moveaxis(oriented, 2, 0), dtype=np.float32)
    return Volume(values=values, spacing=(float(sizes[2]), float(sizes[0]), float(sizes[1])),
                  slice_positions=positions.astype(np.float64), source=source,
                  affine=new_affine)
