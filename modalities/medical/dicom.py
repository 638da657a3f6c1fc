"""DICOM discovery for the CT/MR adapters: files → items, from their headers.

pydicom is used directly rather than through MONAI's `PydicomReader`, which stacks a folder
ordered by InstanceNumber, takes the slice step from the z coordinate only and does not split
a folder by SeriesInstanceUID. Here a folder is grouped by SeriesInstanceUID and split into
orientations (a 3-plane localizer or a set of reformats stored as one series gives one item
per plane), then echoes and phases (EchoTime, TemporalPositionIdentifier, then
AcquisitionNumber where slices still share positions, as dcm2niix does). An enhanced
multi-frame file (`multiframe.py`) and a Siemens MOSAIC (`mosaic.py`) are items of their own;
single-frame series are read by `slices.py`. A file that pydicom reads only in part is named
as truncated (`truncation.py`), not as a file of another kind.

Nothing identifying leaves this module: item keys are salted hashes of UIDs, and reasons never
name files (the ingest report adds the paths, outside the store).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from domainclust.modalities.medical.mosaic import is_mosaic
from domainclust.modalities.medical.multiframe import number_of_frames
from domainclust.modalities.medical.slices import same_orientation
from domainclust.modalities.medical.truncation import read_dataset
from domainclust.modalities.medical.volume import hashed, scrub
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from domainclust.data.ingest_item import SourceItem

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
HEADER_TAGS = ["Modality", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows",
               "NumberOfFrames", "EchoTime", "EchoNumbers", "TemporalPositionIdentifier",
               "AcquisitionNumber", "ImagePositionPatient", "ImageOrientationPatient",
               "ImageType"]
# Series are split by these (in this order) when they vary, as dcm2niix does; AcquisitionNumber
# only where slices would otherwise share a position (some scanners number every slice).
ALWAYS_SPLIT = ("EchoTime", "EchoNumbers", "TemporalPositionIdentifier")
SPLIT_IF_STACKED = "AcquisitionNumber"
ADAPTER_FOR = {"CT": "ct", "MR": "mri"}
DICM_AT = 128  # offset of the 'DICM' prefix of a DICOM file


def read_header(path: Path) -> Dataset | str:
    """The few header fields discovery needs, or why the file is not a usable DICOM file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True,
                                         specific_tags=HEADER_TAGS)
            except InvalidDicomError:
                # Old ACR-NEMA style files have no 'DICM' preamble; accept them only if they
                # parse into something with a modality and a SOP class.
                header = pydicom.dcmread(path, stop_before_pixels=True,
                                         specific_tags=HEADER_TAGS, force=True)
                if "Modality" not in header or "SOPClassUID" not in header:
                    return "is not a DICOM file"
    except Exception as exc:  # noqa: BLE001 - any parse failure makes the file unusable
        return _truncated(path) or (f"is not a readable DICOM file ({type(exc).__name__}: "
                                    f"{scrub(str(exc), [path])})")
    if any(k not in header for k in ("Modality", "SeriesInstanceUID", "Rows")):
        return _truncated(path) or header  # a structured report, or a file cut short
    return header


def _truncated(path: Path) -> str | None:
    """Why a file whose header is incomplete or unreadable is truncated, if it is one."""
    try:
        with path.open("rb") as f:
            f.seek(DICM_AT)
            if f.read(4) != b"DICM":
                return None  # not a DICOM file with a preamble: nothing says it was cut
        return read_dataset(path)[1]
    except Exception:  # noqa: BLE001 - then the caller's reason stands
        return None


def group_series(
    files: list[Path], *, expected: str, adapter: str, salt: str
) -> list[SourceItem]:
    """One item per series (per plane, echo and phase, see `split_series`), per enhanced
    multi-frame file and per MOSAIC file. Unusable files, files of another modality inside a
    series, and series of another modality become items that `read` skips with the reason."""
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
        single = []
        for path, header in members:
            kind = _file_kind(header)
            if kind is None:
                single.append((path, header))
                continue
            sop = str(header.get("SOPInstanceUID", path.resolve()))
            prefix = kind.removeprefix("dicom-")  # frames-..., mosaic-...
            items.append(SourceItem(key=f"{prefix}-{hashed(salt, uid, sop)}", paths=[path],
                                    info={"kind": kind}))
        for split, part in split_series(single) if single else []:
            items.append(SourceItem(
                key=key if not split else f"series-{hashed(salt, uid, *split)}",
                paths=[p for p, _ in part], info={"kind": "dicom-series"}))
    return items


def _file_kind(header: Dataset) -> str | None:
    """'dicom-frames' for an enhanced multi-frame file, 'dicom-mosaic' for a Siemens MOSAIC,
    None for a file of one slice."""
    sop = str(header.get("SOPClassUID", ""))
    if number_of_frames(header) > 1 or (sop and "Enhanced" in UID(sop).name):
        return "dicom-frames"
    return "dicom-mosaic" if is_mosaic(header) else None


def split_series(
    members: list[tuple[Path, Dataset]],
) -> list[tuple[tuple[str, ...], list[tuple[Path, Dataset]]]]:
    """The series as (split values, members) parts: one per orientation, echo and phase, and
    per acquisition where slices of one part would share a position. No split: one part with no
    values."""
    planes = _by_orientation(members)
    parts: list[tuple[tuple[str, ...], list[tuple[Path, Dataset]]]] = [
        ((f"orientation={at}",) if len(planes) > 1 else (), part) for at, part in planes]
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


def _by_orientation(
    members: list[tuple[Path, Dataset]],
) -> list[tuple[str, list[tuple[Path, Dataset]]]]:
    """The members grouped by ImageOrientationPatient (within the tolerance slices of one stack
    share), each group named by its first member's orientation. Members whose orientation
    cannot be read join the largest group, where reading them names the problem."""
    groups: list[tuple[np.ndarray, list[tuple[Path, Dataset]]]] = []
    unplaced = []
    for path, header in members:
        try:
            iop = np.asarray([float(v) for v in header.get("ImageOrientationPatient")])
        except (TypeError, ValueError):
            iop = np.empty(0)
        if iop.shape != (6,) or not np.isfinite(iop).all():
            unplaced.append((path, header))
            continue
        home = next((g for at, g in groups if same_orientation(at, iop)), None)
        if home is None:
            groups.append((iop, [(path, header)]))
        else:
            home.append((path, header))
    if not groups:
        return [("", unplaced)]
    max(groups, key=lambda g: len(g[1]))[1].extend(unplaced)
    return [(",".join(f"{v:.3f}" for v in at), part) for at, part in groups]


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
