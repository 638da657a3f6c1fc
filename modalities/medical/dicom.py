"""DICOM for the CT/MR adapters: series discovery from headers, and series → `Volume`.

pydicom is used directly rather than through MONAI's `PydicomReader`, which stacks a folder
ordered by InstanceNumber, takes the slice step from the z coordinate only and does not split
a folder by SeriesInstanceUID. Here a folder is grouped by SeriesInstanceUID, slices are
ordered by ImagePositionPatient projected on the normal of ImageOrientationPatient, and every
slice must share orientation, pixel spacing and size. Pixels are decoded by pydicom and, for
CT, mapped to Hounsfield units by pydicom's modality LUT (RescaleSlope/Intercept).
Enhanced (multi-frame) CT/MR files are read through their functional groups.

Nothing identifying leaves this module: item keys are salted hashes of UIDs, and reasons name
files through `display_name`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from domainclust.ingest import Skip, SourceItem
from modalities.medical.volume import Volume, check_slice_spacing, hashed, scrub

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
HEADER_TAGS = ["Modality", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows",
               "NumberOfFrames"]
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
    files: list[Path],
    *,
    expected: str,
    adapter: str,
    salt: str,
    name_of: Callable[[Path], str],
) -> list[SourceItem]:
    """One item per SeriesInstanceUID (multi-frame files: one each); unusable files and series
    of another modality become items that `read` skips with the reason."""
    items: list[SourceItem] = []
    series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in files:
        header = read_header(path)
        if isinstance(header, str):
            items.append(_skip_item(f"file-{hashed(salt, str(path.resolve()))}",
                                    f"{name_of(path)} {header}", path))
            continue
        if getattr(header, "file_meta", None) is not None and \
                header.file_meta.get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
            continue  # the index file of DICOM media, not an image
        uid = str(header.get("SeriesInstanceUID", "")) or f"folder:{path.parent.resolve()}"
        series[uid].append((path, header))

    for uid, members in series.items():
        key = f"series-{hashed(salt, uid)}"
        paths = [p for p, _ in members]
        modalities = sorted({str(h.get("Modality", "")) for _, h in members})
        reason = _series_problem(modalities, members, expected=expected, adapter=adapter)
        if reason:
            items.append(_skip_item(key, f"series of {len(paths)} file(s): {reason}", *paths))
            continue
        single = [(p, h) for p, h in members if int(h.get("NumberOfFrames", 1) or 1) <= 1]
        for path, header in members:
            if int(header.get("NumberOfFrames", 1) or 1) > 1:
                sop = str(header.get("SOPInstanceUID", path.resolve()))
                items.append(SourceItem(key=f"frames-{hashed(salt, uid, sop)}", paths=[path],
                                        info={"kind": "dicom-frames", "names": [name_of(path)]}))
        if single:
            items.append(SourceItem(key=key, paths=[p for p, _ in single], info={
                "kind": "dicom-series", "names": [name_of(p) for p, _ in single]}))
    return items


def _series_problem(
    modalities: list[str], members: list[tuple[Path, Dataset]], *, expected: str, adapter: str
) -> str | None:
    if len(modalities) > 1:
        return f"mixed modalities {'/'.join(modalities)} in one series"
    found = modalities[0] or "unknown"
    if found != expected:
        other = ADAPTER_FOR.get(found)
        hint = f"; ingest it with --modality {other}" if other else ""
        return f"modality is {found}, the {adapter} adapter reads {expected}{hint}"
    if not any("Rows" in h for _, h in members):
        return "holds no images (structured report, RT object or presentation state?)"
    return None


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
            raise Skip("slices have different orientations (a localizer or a set of "
                       "reformats stored as one series?)")
        if g.shape != first.shape or not np.allclose(g.pixel_spacing, first.pixel_spacing,
                                                     rtol=1e-3):
            raise Skip("slices differ in size or pixel spacing")
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-2):
        raise Skip("ImageOrientationPatient does not hold two orthogonal unit vectors")
    positions = np.array([g.position @ normal for g in geometries])
    order = np.argsort(positions, kind="stable")
    check = check_slice_spacing(positions[order], tolerance=tolerance, fallback_step=fallback_step)
    if check.problem and (check.fatal or irregular == "skip"):
        hint = "" if check.fatal else "; set irregular=keep to use it anyway"
        raise Skip(check.problem + hint)
    return order, positions[order], check.step


def _fallback_step(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 0.0


def _pixels(ds: Dataset, name: str) -> np.ndarray:
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise Skip(f"{name} is a colour image; CT/MR slices must be grayscale")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable data
        raise Skip(f"pixel data of {name} cannot be decoded "
                   f"({type(exc).__name__}: {scrub(str(exc), [])})") from None


def _read_full(path: Path, name: str) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"{name} cannot be read ({type(exc).__name__}: "
                   f"{scrub(str(exc), [path])})") from None


def load_series(
    paths: list[Path],
    names: list[str],
    *,
    hounsfield: bool,
    tolerance: float,
    irregular: str,
) -> Volume:
    """A single-frame series as a volume: HU for CT (`hounsfield`), stored values for MR.

    MR values have no physical unit and are normalised per volume later, so a rescale common to
    all slices changes nothing and is not applied; one that varies between slices (some vendors
    scale each slice) is applied so the slices share one scale.
    """
    datasets = [_read_full(p, n) for p, n in zip(paths, names)]
    geometries = [
        _geometry(ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"),
                  ds.get("PixelSpacing"), (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))))
        for ds in datasets
    ]
    order, positions, step = _order(geometries, tolerance=tolerance, irregular=irregular,
                                    fallback_step=_fallback_step(datasets[0]))
    rescales = {(str(ds.get("RescaleSlope", "")), str(ds.get("RescaleIntercept", "")))
                for ds in datasets}
    apply_lut = hounsfield or len(rescales) > 1
    slices = []
    for i in order:
        array = _pixels(datasets[i], names[i])
        if array.ndim != 2:
            raise Skip(f"{names[i]} holds {array.shape} pixels, not one 2-D slice")
        slices.append(apply_modality_lut(array, datasets[i]) if apply_lut else array)
    first = geometries[0]
    return Volume(values=np.stack(slices).astype(np.float32),
                  spacing=(step, *first.pixel_spacing), slice_positions=positions)


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
    path: Path, name: str, *, hounsfield: bool, tolerance: float, irregular: str
) -> Volume:
    """An enhanced (multi-frame) CT/MR file as a volume, placed through its functional groups."""
    ds = _read_full(path, name)
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        raise Skip(f"{name} is multi-frame without per-frame functional groups: "
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
    array = _pixels(ds, name)
    if array.ndim != 3 or len(array) != len(frames):
        raise Skip(f"{name}: pixel data {array.shape} does not match {len(frames)} frames")
    distinct = {(str(r.get("RescaleSlope")), str(r.get("RescaleIntercept"))) for r in rescales}
    apply_lut = hounsfield or len(distinct) > 1
    slices = [apply_modality_lut(array[i], rescales[i]) if apply_lut else array[i] for i in order]
    return Volume(values=np.stack(slices).astype(np.float32),
                  spacing=(step, *geometries[0].pixel_spacing), slice_positions=positions)
