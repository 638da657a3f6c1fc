"""Siemens MOSAIC images: one picture holding a grid of slices (how Siemens stores EPI, DWI and
fMRI volumes), unpacked into its slices before they are tiled.

nibabel.nicom reads what the picture alone does not say, from the Siemens CSA header: how many
slices the grid holds (NumberOfImagesInMosaic), the slice normal and the position of the first
slice (`MosaicWrapper` corrects the position the DICOM header gives for the whole picture).
Slice k lies k slice steps (SpacingBetweenSlices, else SliceThickness) along that normal. The
slices are then stacked as the files of a classic series are (`stack_slices`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from domainclust.modalities.medical.slices import (
    Slice,
    SliceGeometry,
    fallback_step,
    geometry,
    read_full,
    shape_of,
    stack_slices,
)
from domainclust.modalities.medical.volume import Volume, scrub
from pydicom.dataset import Dataset

from domainclust.data.ingest_item import Skip

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are young
    from nibabel.nicom.dicomwrappers import MosaicWrapper


def is_mosaic(header: Dataset) -> bool:
    """Whether ImageType marks the file as a Siemens MOSAIC."""
    image_type = header.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(v).strip().upper() == "MOSAIC" for v in values)


def _quietly(what: str, read: Any) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for odd headers
        raise Skip(f"is a Siemens MOSAIC whose {what} ({type(exc).__name__}: "
                   f"{scrub(str(exc), [])})") from None


def mosaic_slices(ds: Dataset) -> list[Slice]:
    """The slices of a MOSAIC dataset, in the order the picture holds them."""
    wrapper = _quietly("CSA header gives no number of slices", lambda: MosaicWrapper(ds))
    n, grid = int(wrapper.n_mosaic), int(wrapper.mosaic_size)
    rows, cols = shape_of(ds)
    if rows % grid or cols % grid or rows < grid or cols < grid:
        raise Skip(f"is a Siemens MOSAIC of {n} slices whose {rows}x{cols} pixels do not divide "
                   f"into a {grid}x{grid} grid of slices: it cannot be unpacked")
    step = fallback_step(ds)
    if step <= 0:
        raise Skip("is a Siemens MOSAIC without SpacingBetweenSlices or SliceThickness: its "
                   "slices cannot be placed in space")
    whole = geometry(ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"),
                     ds.get("PixelSpacing"), (rows, cols))
    first = _quietly("first slice cannot be placed", lambda: np.asarray(wrapper.image_position,
                                                                       dtype=np.float64))
    along = _quietly("CSA slice normal disagrees with ImageOrientationPatient",
                     lambda: np.asarray(wrapper.slice_normal, dtype=np.float64))
    blocks = _quietly("pixel data cannot be decoded or unpacked", wrapper.get_unscaled_data)
    shape = (rows // grid, cols // grid)
    return [Slice(k, ds, SliceGeometry(whole.orientation, first + k * step * along,
                                       whole.pixel_spacing, shape), blocks[:, :, k])
            for k in range(n)]


def load_mosaic(path: Path, *, hounsfield: bool, tolerance: float, irregular: str) -> Volume:
    """A MOSAIC file as the volume of its slices."""
    ds = read_full(path)
    slices = mosaic_slices(ds)
    return stack_slices(slices, total=len(slices), dropped={}, hounsfield=hounsfield,
                        tolerance=tolerance, irregular=irregular,
                        step_if_single=fallback_step(ds))
