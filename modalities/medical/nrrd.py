"""NRRD for the CT/MR adapters: a `.nrrd` (or detached `.nhdr` + data file) → axial `Volume`s.

pynrrd reads the file (MONAI's `NrrdReader` wraps the same library). The header's `space
directions` and `space origin`, in its `space` (LPS as 3D Slicer writes, RAS or LAS), give a RAS+
mm affine, and from there the volume takes the NIfTI path (`axial_volume`): reoriented by axis
permutation and flips so that slices are axial and rows/columns run as in an axial DICOM image.
A header with `spacings` but no directions is taken as axis-aligned in its stored order. One
non-spatial axis (a `list`, `vector` or `time` kind) is read as volumes, like a 4-D NIfTI.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from domainclust.modalities.medical.nifti import axial_volume
from domainclust.modalities.medical.volume import Volume, scrub

from domainclust.data.ingest_item import Skip

SUFFIXES = (".nrrd", ".nhdr")
# Sign of each axis of a NRRD space in RAS+ (NRRD's "left-posterior-superior" is DICOM's LPS).
SPACE_TO_RAS = {
    "right-anterior-superior": (1.0, 1.0, 1.0), "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0), "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0), "lps": (-1.0, -1.0, 1.0),
    # No anatomical meaning given: the axes are taken as they are.
    "scanner-xyz": (1.0, 1.0, 1.0), "3d-right-handed": (1.0, 1.0, 1.0),
    "3d-left-handed": (1.0, 1.0, 1.0),
}
UNIT_TO_MM = {"mm": 1.0, "millimeter": 1.0, "m": 1000.0, "meter": 1000.0, "cm": 10.0,
              "um": 0.001, "micron": 0.001, "": 1.0}


def is_nrrd(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def detached_data_files(path: Path) -> list[Path]:
    """The data files a detached `.nhdr` header points to (not images in their own right);
    an unreadable header points to none (reading it will name the problem)."""
    if path.suffix.lower() != ".nhdr":
        return []
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except Exception:  # noqa: BLE001 - a damaged header is reported when the item is read
        return []
    names = header.get("data file") or header.get("datafile")
    if names is None:
        return []
    names = [names] if isinstance(names, str) else list(names)
    return [(path.parent / str(n).split()[0]).resolve() for n in names if str(n).strip()]


def load_nrrd(path: Path, *, max_volumes: int) -> list[Volume]:
    """The first `max_volumes` 3-D volumes of a NRRD file, axial, in the stored units."""
    import nrrd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:  # noqa: BLE001 - pynrrd raises many types for damaged files
        raise Skip(f"cannot be read as NRRD ({type(exc).__name__}: "
                   f"{scrub(str(exc), [path])})") from None
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.number) or data.ndim != len(header["sizes"]):
        raise Skip(f"a NRRD volume must hold numbers, header says {header.get('type')!r}")
    spatial, affine = nrrd_geometry(header)
    others = [a for a in range(data.ndim) if a not in spatial]
    if len(spatial) not in (2, 3) or len(others) > 1:
        raise Skip(f"a NRRD volume must have 2 or 3 spatial axes and at most one other "
                   f"(volumes), header says sizes {list(header['sizes'])}, kinds "
                   f"{header.get('kinds')}")
    data = np.moveaxis(data, spatial + others, range(data.ndim))
    if len(spatial) == 2:
        data = data[:, :, None]
    if not others:
        data = data[..., None]
    data = np.asarray(data[..., :max_volumes], dtype=np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return [axial_volume(data[..., t], affine, source="nrrd") for t in range(data.shape[3])]


def nrrd_geometry(header: dict[str, Any]) -> tuple[list[int], np.ndarray]:
    """The spatial axes of a NRRD header and the RAS+ mm affine of their voxel indices."""
    space = str(header.get("space", "")).strip().lower()
    if space and space not in SPACE_TO_RAS:
        raise Skip(f"NRRD space {header.get('space')!r} is not a 3-D patient space "
                   f"(known: {', '.join(sorted(k for k in SPACE_TO_RAS if '-' in k))})")
    sign = np.asarray(SPACE_TO_RAS.get(space, (1.0, 1.0, 1.0)))
    units = header.get("space units") or []
    scale = [UNIT_TO_MM.get(str(u).strip().lower()) for u in units] or [1.0]
    if any(s is None for s in scale):
        raise Skip(f"NRRD space units {list(units)} are not lengths (mm, m, cm, um)")
    directions = header.get("space directions")
    affine = np.eye(4)
    if directions is not None:
        rows = np.asarray(directions, dtype=np.float64)
        spatial = [a for a in range(len(rows)) if np.isfinite(rows[a]).all()]
        if rows.ndim != 2 or rows.shape[1] != 3 or len(spatial) > 3:
            raise Skip(f"NRRD space directions {directions!r} are not 3-D vectors")
        origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
        for column, axis in enumerate(spatial):
            affine[:3, column] = rows[axis] * sign * np.asarray(scale)
        affine[:3, 3] = np.nan_to_num(origin) * sign * np.asarray(scale)
    else:
        spacings = np.asarray(header.get("spacings", []), dtype=np.float64)
        spatial = [a for a in range(len(spacings)) if np.isfinite(spacings[a])]
        if not spatial:
            raise Skip("the NRRD header has neither space directions nor spacings, so the "
                       "voxel size is unknown")
        for column, axis in enumerate(spatial[:3]):
            affine[column, column] = spacings[axis]
    if len(spatial) == 2:  # one slice: the normal is the cross product, its length 1 mm
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] = normal / (np.linalg.norm(normal) or 1.0)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise Skip("the NRRD header's space directions are degenerate, so spacing and "
                   "orientation are unknown")
    return spatial, affine
