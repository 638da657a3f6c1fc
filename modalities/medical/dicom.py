"""DICOM for the CT/MR adapters: series discovery from headers, and series → `Volume`.

pydicom is used directly rather than through MONAI's `PydicomReader`, which stacks a folder
ordered by InstanceNumber, takes the slice step from the z coordinate only and does not split
a folder by SeriesInstanceUID. Here a folder is grouped by SeriesInstanceUID and split into
echoes and phases (EchoTime, TemporalPositionIdentifier, then AcquisitionNumber where slices
still share positions, as dcm2niix does); slices are ordered by ImagePositionPatient projected
on the normal of ImageOrientationPatient. Each slice is validated on its own: one that cannot
be read or decoded, or that disagrees with the rest of its series (modality, orientation, size,
pixel spacing), is left out and reported alone, and the others form the volume, split into
contiguous runs where slices are missing. Pixels are decoded by pydicom and, for CT, mapped to
Hounsfield units by pydicom's modality LUT (RescaleSlope/Intercept). Enhanced (multi-frame)
CT/MR files are read through their functional groups.

Nothing identifying leaves this module: item keys are salted hashes of UIDs, and reasons never
name files (the ingest report adds the paths, outside the store).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from domainclust.ingest import Skip, SourceItem
from domainclust.modalities.medical.volume import (
    DUPLICATE_MM,
    Volume,
    check_slice_spacing,
    contiguous_runs,
    hashed,
    scrub,
)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
HEADER_TAGS = ["Modality", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows",
               "NumberOfFrames", "EchoTime", "EchoNumbers", "TemporalPositionIdentifier",
               "AcquisitionNumber", "ImagePositionPatient", "ImageOrientationPatient"]
# Series are split by these (in this order) when they vary, as dcm2niix does; AcquisitionNumber
# only where slices would otherwise share a position (some scanners number every slice).
ALWAYS_SPLIT = ("EchoTime", "EchoNumbers", "TemporalPositionIdentifier")
SPLIT_IF_STACKED = "AcquisitionNumber"
ADAPTER_FOR = {"CT": "ct", "MR": "mri"}
ORIENTATION_TOL = 1e-3


def read_header(path: Path) -> Dataset | str:
    """The few header fields discovery needs, or why the file is not a usable DICOM file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            except InvalidDicomError:
                # Old ACR-NEMA style files have no 'DICM' preamble; accept them only if they
                # parse into something with a modality and a SOP class.
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS,
                                     force=True)
                if "Modality" not in ds or "SOPClassUID" not in ds:
                    return "is not a DICOM file"
                return ds
    except Exception as exc:  # noqa: BLE001 - any parse failure makes the file unusable
        return f"is not a readable DICOM file ({type(exc).__name__}: {scrub(str(exc), [path])})"


def group_series(
    files: list[Path], *, expected: str, adapter: str, salt: str
) -> list[SourceItem]:
    """One item per series (per echo/phase, see `split_series`; multi-frame files: one each).
    Unusable files, files of another modality inside a series, and series of another modality
    become items that `read` skips with the reason."""
    items: list[SourceItem] = []
    series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in files:
        header = read_header(path)
        if isinstance(header, str):
            items.append(_skip_item(f"file-{hashed(salt, str(path.resolve()))}", header, path))
            continue
        if getattr(header, "file_meta", None) is not None and \
                header.file_meta.get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
            continue  # the index file of DICOM media, not an image
        uid = str(header.get("SeriesInstanceUID", "")) or f"folder:{path.parent.resolve()}"
        series[uid].append((path, header))

    for uid, members in series.items():
        key = f"series-{hashed(salt, uid)}"
        modalities = [str(h.get("Modality", "")) for _, h in members]
        if expected not in modalities:
            reason = _series_problem(sorted(set(modalities)), expected=expected, adapter=adapter)
            items.append(_skip_item(key, f"series of {len(members)} file(s): {reason}",
                                    *[p for p, _ in members]))
            continue
        for (path, _), found in zip(members, modalities):
            if found != expected:
                items.append(_skip_item(
                    f"file-{hashed(salt, str(path.resolve()))}",
                    f"Modality is {found or 'missing'} in a {expected} series: left out of it",
                    path))
        members = [(p, h) for (p, h), m in zip(members, modalities) if m == expected]
        if not any("Rows" in h for _, h in members):
            items.append(_skip_item(key, f"series of {len(members)} file(s): holds no images "
                                         "(structured report, RT object or presentation state?)",
                                    *[p for p, _ in members]))
            continue
        single = [(p, h) for p, h in members if _frames(h) <= 1]
        for path, header in members:
            if _frames(header) > 1:
                sop = str(header.get("SOPInstanceUID", path.resolve()))
                items.append(SourceItem(key=f"frames-{hashed(salt, uid, sop)}", paths=[path],
                                        info={"kind": "dicom-frames"}))
        for split, part in split_series(single):
            items.append(SourceItem(
                key=key if not split else f"series-{hashed(salt, uid, *split)}",
                paths=[p for p, _ in part], info={"kind": "dicom-series"}))
    return items


def _frames(header: Dataset) -> int:
    try:
        return int(header.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1  # a damaged count: read as one frame, and fail there if it is not


def split_series(
    members: list[tuple[Path, Dataset]],
) -> list[tuple[tuple[str, ...], list[tuple[Path, Dataset]]]]:
    """The series as (split values, members) parts: one per echo and phase, and per acquisition
    where slices of one part would share a position. No split: one part with no values."""
    parts: list[tuple[tuple[str, ...], list[tuple[Path, Dataset]]]] = [((), members)]
    for keyword in (*ALWAYS_SPLIT, SPLIT_IF_STACKED):
        out = []
        for values, part in parts:
            groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
            for path, header in part:
                groups[f"{keyword}={_text(header.get(keyword))}"].append((path, header))
            if len(groups) > 1 and (keyword != SPLIT_IF_STACKED or _stacked(part)):
                out += [((*values, g), groups[g]) for g in sorted(groups)]
            else:
                out.append((values, part))
        parts = out
    return parts


def _text(value: Any) -> str:
    if value is None:
        return ""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _stacked(members: list[tuple[Path, Dataset]]) -> bool:
    """Whether two members of one orientation sit at the same position (header values;
    members that cannot be placed are ignored)."""
    seen = set()
    for _, header in members:
        try:
            iop = [float(v) for v in header.get("ImageOrientationPatient")]
            ipp = np.asarray([float(v) for v in header.get("ImagePositionPatient")])
            at = (*np.round(iop, 3).tolist(), round(float(ipp @ np.cross(iop[:3], iop[3:])), 2))
        except (TypeError, ValueError):
            continue
        if at in seen:
            return True
        seen.add(at)
    return False


def _series_problem(modalities: list[str], *, expected: str, adapter: str) -> str:
    if len(modalities) > 1:
        return f"modalities {'/'.join(modalities)}, none of them {expected}"
    found = modalities[0] or "unknown"
    other = ADAPTER_FOR.get(found)
    hint = f"; ingest it with --modality {other}" if other else ""
    return f"modality is {found}, the {adapter} adapter reads {expected}{hint}"


def _skip_item(key: str, reason: str, *paths: Path) -> SourceItem:
    return SourceItem(key=key, paths=list(paths), info={"skip": reason})


@dataclass(frozen=True)
class SliceGeometry:
    orientation: np.ndarray  # (6,) row then column direction cosines
    position: np.ndarray  # (3,) ImagePositionPatient of the first pixel, mm
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    shape: tuple[int, int]


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise Skip(f"{what} is not numeric") from None
    if out.shape != (n,) or not np.isfinite(out).all():
        raise Skip(f"{what} must hold {n} finite numbers")
    return out


def _geometry(
    orientation: Any, position: Any, spacing: Any, shape: tuple[int, int]
) -> SliceGeometry:
    if orientation is None or position is None or spacing is None:
        raise Skip("no ImageOrientationPatient/ImagePositionPatient/PixelSpacing: "
                   "slices cannot be placed in space")
    iop = _floats(orientation, 6, "ImageOrientationPatient")
    sp = _floats(spacing, 2, "PixelSpacing")
    if (sp <= 0).any():
        raise Skip(f"PixelSpacing {sp.tolist()} is not positive")
    return SliceGeometry(iop, _floats(position, 3, "ImagePositionPatient"),
                         (float(sp[0]), float(sp[1])), shape)


def _order(
    geometries: list[SliceGeometry],
    *,
    tolerance: float,
    irregular: str,
    fallback_step: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Slice order along the normal, sorted positions and step; Skip if geometry disagrees."""
    first = geometries[0]
    for g in geometries[1:]:
        if np.abs(g.orientation - first.orientation).max() > ORIENTATION_TOL:
            raise Skip(DIFFERENT_ORIENTATIONS)
        if g.shape != first.shape or not np.allclose(g.pixel_spacing, first.pixel_spacing,
                                                     rtol=1e-3):
            raise Skip("slices differ in size or pixel spacing")
    positions = np.array([g.position @ _normal(first) for g in geometries])
    order = np.argsort(positions, kind="stable")
    check = check_slice_spacing(positions[order], tolerance=tolerance, fallback_step=fallback_step)
    if check.problem and (check.fatal or irregular == "skip"):
        hint = "" if check.fatal else "; set irregular=keep to use it anyway"
        raise Skip(check.problem + hint)
    return order, positions[order], check.step


DIFFERENT_ORIENTATIONS = ("slices have different orientations (a localizer or a set of "
                          "reformats stored as one series?)")


def _normal(g: SliceGeometry) -> np.ndarray:
    normal = np.cross(g.orientation[:3], g.orientation[3:])
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-2):
        raise Skip("ImageOrientationPatient does not hold two orthogonal unit vectors")
    return normal


def _fallback_step(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 0.0


def _pixels(ds: Dataset) -> np.ndarray:
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise Skip("is a colour image; CT/MR slices must be grayscale")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable data
        raise Skip(f"pixel data cannot be decoded ({type(exc).__name__}: "
                   f"{scrub(str(exc), [])})") from None


def _read_full(path: Path) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"cannot be read ({type(exc).__name__}: {scrub(str(exc), [path])})") from None


@dataclass
class Slice:
    """One validated slice of a series: its index in the item, header, geometry and pixels."""

    index: int
    ds: Dataset
    geometry: SliceGeometry
    pixels: np.ndarray


def _read_slice(index: int, path: Path) -> Slice:
    ds = _read_full(path)
    try:
        shape = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
    except (TypeError, ValueError):
        raise Skip("Rows/Columns are not numbers") from None
    geometry = _geometry(ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"),
                         ds.get("PixelSpacing"), shape)
    _normal(geometry)
    pixels = _pixels(ds)
    if pixels.shape != shape:
        raise Skip(f"holds {pixels.shape} pixels, not one {shape[0]}x{shape[1]} slice")
    return Slice(index, ds, geometry, pixels)


def _agreeing(slices: list[Slice], dropped: dict[int, str]) -> list[Slice]:
    """The slices that agree with the majority on orientation, size and pixel spacing; the
    others go to `dropped`. Without a strict majority the series is skipped."""
    checks = [
        ("orientation", lambda a, b: np.abs(a.orientation - b.orientation).max() <= ORIENTATION_TOL,
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
        if all(np.array_equal(slices[i].pixels, first.pixels) and _rescale(slices[i].ds)
               == _rescale(first.ds) for i in group[1:]):
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


def load_series(
    paths: list[Path],
    *,
    hounsfield: bool,
    tolerance: float,
    irregular: str,
) -> tuple[Volume, list[tuple[int, str]]]:
    """A single-frame series as a volume of its usable slices (in contiguous runs where slices
    are missing), and the slices left out as (index in `paths`, reason). HU for CT
    (`hounsfield`), stored values for MR.

    MR values have no physical unit and are normalised per volume later, so a rescale common to
    all slices changes nothing and is not applied; one that varies between slices (some vendors
    scale each slice) is applied so the slices share one scale.
    """
    dropped: dict[int, str] = {}
    slices: list[Slice] = []
    for i, path in enumerate(paths):
        try:
            slices.append(_read_slice(i, path))
        except Skip as exc:
            dropped[i] = str(exc)
    if slices:
        slices = _agreeing(slices, dropped)
    if not slices:
        raise Skip(f"none of its {len(paths)} slice(s) is usable", files=sorted(dropped.items()))
    normal = _normal(slices[0].geometry)
    positions = np.array([s.geometry.position @ normal for s in slices])
    kept = _unstacked(slices, positions, dropped)
    if not kept:
        raise Skip(f"none of its {len(paths)} slice(s) is usable", files=sorted(dropped.items()))
    slices, positions = [slices[i] for i in kept], positions[kept]  # sorted by position
    step = check_slice_spacing(positions, tolerance=tolerance,
                               fallback_step=_fallback_step(slices[0].ds)).step
    apply_lut = hounsfield or len({_rescale(s.ds) for s in slices}) > 1
    values = np.stack([apply_modality_lut(s.pixels, s.ds) if apply_lut else s.pixels
                       for s in slices]).astype(np.float32)
    runs = contiguous_runs(positions, step=step)
    for start, stop in runs:
        check = check_slice_spacing(positions[start:stop], tolerance=tolerance, fallback_step=step)
        if check.problem and irregular == "skip":
            raise Skip(check.problem + "; set irregular=keep to use it anyway",
                       files=sorted(dropped.items()))
    volume = Volume(values=values, spacing=(step, *slices[0].geometry.pixel_spacing),
                    slice_positions=positions, runs=runs)
    return volume, sorted(dropped.items())


def _functional(ds: Dataset, frame: Dataset | None, sequence: str) -> Dataset | None:
    """An item of a functional-group macro, per-frame first, then shared."""
    for group in (frame, _first(ds.get("SharedFunctionalGroupsSequence"))):
        item = _first(group.get(sequence)) if group is not None else None
        if item is not None:
            return item
    return None


def _first(sequence: Any) -> Dataset | None:
    return sequence[0] if sequence else None


def load_multiframe(
    path: Path, *, hounsfield: bool, tolerance: float, irregular: str
) -> Volume:
    """An enhanced (multi-frame) CT/MR file as a volume, placed through its functional groups."""
    ds = _read_full(path)
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        raise Skip("is multi-frame without per-frame functional groups: "
                   "its frames cannot be placed in space")
    shape = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
    geometries, rescales = [], []
    for frame in frames:
        plane = _functional(ds, frame, "PlaneOrientationSequence")
        pos = _functional(ds, frame, "PlanePositionSequence")
        measures = _functional(ds, frame, "PixelMeasuresSequence")
        geometries.append(_geometry(
            plane.get("ImageOrientationPatient") if plane else None,
            pos.get("ImagePositionPatient") if pos else None,
            measures.get("PixelSpacing") if measures else None, shape))
        transform = _functional(ds, frame, "PixelValueTransformationSequence")
        rescales.append(Dataset())
        if transform is not None and "RescaleSlope" in transform:
            rescales[-1].RescaleSlope = transform.RescaleSlope
            rescales[-1].RescaleIntercept = transform.get("RescaleIntercept", 0)
    fallback = float(_functional(ds, frames[0], "PixelMeasuresSequence").get("SliceThickness", 0)
                     or 0)
    order, positions, step = _order(geometries, tolerance=tolerance, irregular=irregular,
                                    fallback_step=fallback)
    array = _pixels(ds)
    if array.ndim != 3 or len(array) != len(frames):
        raise Skip(f"pixel data {array.shape} does not match {len(frames)} frames")
    distinct = {(str(r.get("RescaleSlope")), str(r.get("RescaleIntercept"))) for r in rescales}
    apply_lut = hounsfield or len(distinct) > 1
    slices = [apply_modality_lut(array[i], rescales[i]) if apply_lut else array[i] for i in order]
    return Volume(values=np.stack(slices).astype(np.float32),
                  spacing=(step, *geometries[0].pixel_spacing), slice_positions=positions)
