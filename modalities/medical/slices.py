"""DICOM slices → `Volume`: the part shared by classic series, enhanced multi-frame files and
Siemens mosaics.

Each reader turns its source into candidate `Slice`s (a file, a frame, a block of a mosaic)
with their geometry, or a reason one cannot be used. `stack_slices` then treats them alike:
slices that disagree with the rest (orientation, size, pixel spacing) or share a position with
different content are left out and reported alone, the others are ordered by
ImagePositionPatient projected on the normal of ImageOrientationPatient, split into contiguous
runs where slices are missing (slabs never span a gap), and, for CT, mapped to Hounsfield units
by pydicom's modality LUT (RescaleSlope/Intercept).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainclust.modalities.medical.truncation import read_dataset
from domainclust.modalities.medical.volume import (
    DUPLICATE_MM,
    Volume,
    check_slice_spacing,
    contiguous_runs,
    scrub,
)
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array

from domainclust.data.ingest_item import Skip

ORIENTATION_TOL = 1e-3
DIFFERENT_ORIENTATIONS = ("slices have different orientations (a localizer or a set of "
                          "reformats stored as one series?)")


@dataclass(frozen=True)
class SliceGeometry:
    orientation: np.ndarray  # (6,) row then column direction cosines
    position: np.ndarray  # (3,) ImagePositionPatient of the first pixel, mm
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    shape: tuple[int, int]


@dataclass
class Slice:
    """One candidate slice: its index among the candidates, the dataset that holds its rescale
    (RescaleSlope/Intercept), its geometry and pixels."""

    index: int
    rescale: Dataset
    geometry: SliceGeometry
    pixels: np.ndarray


def same_orientation(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(np.asarray(a) - np.asarray(b)).max() <= ORIENTATION_TOL)


def floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise Skip(f"{what} is not numeric") from None
    if out.shape != (n,) or not np.isfinite(out).all():
        raise Skip(f"{what} must hold {n} finite numbers")
    return out


def geometry(orientation: Any, position: Any, spacing: Any, shape: tuple[int, int]
             ) -> SliceGeometry:
    """A slice's geometry from its header values; Skip if they are missing or unusable."""
    if orientation is None or position is None or spacing is None:
        raise Skip("no ImageOrientationPatient/ImagePositionPatient/PixelSpacing: "
                   "slices cannot be placed in space")
    iop = floats(orientation, 6, "ImageOrientationPatient")
    sp = floats(spacing, 2, "PixelSpacing")
    if (sp <= 0).any():
        raise Skip(f"PixelSpacing {sp.tolist()} is not positive")
    g = SliceGeometry(iop, floats(position, 3, "ImagePositionPatient"),
                      (float(sp[0]), float(sp[1])), shape)
    normal(g)
    return g


def normal(g: SliceGeometry) -> np.ndarray:
    out = np.cross(g.orientation[:3], g.orientation[3:])
    if not np.isclose(np.linalg.norm(out), 1.0, atol=1e-2):
        raise Skip("ImageOrientationPatient does not hold two orthogonal unit vectors")
    return out


def fallback_step(ds: Dataset) -> float:
    """The slice step a header states, for a volume of one slice (0 if none)."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 0.0


def pixels(ds: Dataset, **kwargs: Any) -> np.ndarray:
    """The decoded pixels (one frame with `index=`); Skip with pydicom's reason if they do not
    decode."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise Skip("is a colour image; CT/MR slices must be grayscale")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(ds, **kwargs)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable data
        raise Skip(f"pixel data cannot be decoded ({type(exc).__name__}: "
                   f"{scrub(str(exc), [])})") from None


def read_full(path: Path) -> Dataset:
    """The whole file; Skip naming the reason if it cannot be read or is truncated."""
    ds, truncated = read_dataset(path)
    if truncated:
        raise Skip(truncated)
    return ds


def shape_of(ds: Dataset) -> tuple[int, int]:
    try:
        return int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    except (TypeError, ValueError):
        raise Skip("Rows/Columns are not numbers") from None


def read_slice(index: int, path: Path) -> Slice:
    """A classic single-frame file as one slice."""
    ds = read_full(path)
    shape = shape_of(ds)
    g = geometry(ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"),
                 ds.get("PixelSpacing"), shape)
    values = pixels(ds)
    if values.shape != shape:
        raise Skip(f"holds {values.shape} pixels, not one {shape[0]}x{shape[1]} slice")
    return Slice(index, ds, g, values)


def _agreeing(slices: list[Slice], dropped: dict[int, str]) -> list[Slice]:
    """The slices that agree with the majority on orientation, size and pixel spacing; the
    others go to `dropped`. Without a strict majority the slices are skipped."""
    checks = [
        ("orientation", lambda a, b: same_orientation(a.orientation, b.orientation),
         DIFFERENT_ORIENTATIONS),
        ("size", lambda a, b: a.shape == b.shape, "slices differ in size"),
        ("pixel spacing", lambda a, b: np.allclose(a.pixel_spacing, b.pixel_spacing, rtol=1e-3),
         "slices differ in pixel spacing"),
    ]
    for what, same, problem in checks:
        groups: list[list[Slice]] = []
        for s in slices:
            home = next((g for g in groups if same(g[0].geometry, s.geometry)), None)
            if home is None:
                groups.append([s])
            else:
                home.append(s)
        major = max(groups, key=len)
        if len(groups) > 1 and 2 * len(major) <= len(slices):
            raise Skip(problem)
        for s in slices:
            if not same(major[0].geometry, s.geometry):
                dropped[s.index] = (f"its {what} differs from the other {len(major)} slices "
                                    "of the series: left out of it")
        slices = major
    return slices


def _unstacked(slices: list[Slice], positions: np.ndarray, dropped: dict[int, str]) -> list[int]:
    """Indices (into `slices`, sorted by position) with one slice per position: exact copies
    collapse to the first, and differing slices at one position are all left out."""
    order = np.argsort(positions, kind="stable")
    keep: list[int] = []
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and positions[order[stop]] - positions[order[start]] < DUPLICATE_MM:
            stop += 1
        group = [int(i) for i in order[start:stop]]
        first = slices[group[0]]
        if all(np.array_equal(slices[i].pixels, first.pixels) and _rescale(slices[i].rescale)
               == _rescale(first.rescale) for i in group[1:]):
            keep.append(group[0])
            for i in group[1:]:
                dropped[slices[i].index] = "an exact copy of another slice of the series"
        else:
            for i in group:
                dropped[slices[i].index] = (
                    f"shares its position ({positions[i]:.2f} mm) with {len(group) - 1} other "
                    "slice(s) of different content (echoes or phases without EchoTime or "
                    "TemporalPositionIdentifier?): which belongs to the volume is unknown")
        start = stop
    return keep


def _rescale(ds: Dataset) -> tuple[str, str]:
    return str(ds.get("RescaleSlope", "")), str(ds.get("RescaleIntercept", ""))


def stack_slices(
    slices: list[Slice],
    *,
    total: int,
    dropped: dict[int, str],
    hounsfield: bool,
    tolerance: float,
    irregular: str,
    step_if_single: float,
) -> Volume:
    """The usable `slices` (of `total` candidates, those that failed already in `dropped`) as
    a volume in contiguous runs; the slices left out are added to `dropped`. HU for CT
    (`hounsfield`), stored values for MR.

    MR values have no physical unit and are normalised per volume later, so a rescale common to
    all slices changes nothing and is not applied; one that varies between slices (some vendors
    scale each slice) is applied so the slices share one scale.
    """
    what = f"none of its {total} slice(s) is usable"
    if slices:
        slices = _agreeing(slices, dropped)
    if not slices:
        raise Skip(what)
    along = normal(slices[0].geometry)
    positions = np.array([s.geometry.position @ along for s in slices])
    kept = _unstacked(slices, positions, dropped)
    if not kept:
        raise Skip(what)
    slices, positions = [slices[i] for i in kept], positions[kept]  # sorted by position
    step = check_slice_spacing(positions, tolerance=tolerance, fallback_step=step_if_single).step
    apply_lut = hounsfield or len({_rescale(s.rescale) for s in slices}) > 1
    values = np.stack([apply_modality_lut(s.pixels, s.rescale) if apply_lut else s.pixels
                       for s in slices]).astype(np.float32)
    runs = contiguous_runs(positions, step=step)
    for start, stop in runs:
        check = check_slice_spacing(positions[start:stop], tolerance=tolerance, fallback_step=step)
        if check.problem and irregular == "skip":
            raise Skip(check.problem + "; set irregular=keep to use it anyway")
    return Volume(values=values, spacing=(step, *slices[0].geometry.pixel_spacing),
                  slice_positions=positions, runs=runs)


def load_series(
    paths: list[Path], *, hounsfield: bool, tolerance: float, irregular: str
) -> tuple[Volume, list[tuple[int, str]]]:
    """A classic (one slice per file) series as a volume of its usable slices, and the files
    left out as (index in `paths`, reason)."""
    dropped: dict[int, str] = {}
    slices: list[Slice] = []
    for i, path in enumerate(paths):
        try:
            slices.append(read_slice(i, path))
        except Skip as exc:
            dropped[i] = str(exc)
    try:
        volume = stack_slices(slices, total=len(paths), dropped=dropped, hounsfield=hounsfield,
                              tolerance=tolerance, irregular=irregular,
                              step_if_single=fallback_step(slices[0].rescale) if slices else 0.0)
    except Skip as exc:
        raise Skip(str(exc), files=sorted(dropped.items())) from None
    return volume, sorted(dropped.items())
