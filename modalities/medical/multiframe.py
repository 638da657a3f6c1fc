"""Enhanced (multi-frame) CT/MR files, read frame by frame like a classic series.

Each frame is placed through the functional groups (per-frame first, then shared): plane
position and orientation, pixel measures, pixel value transformation. A frame that cannot be
placed or decoded is left out alone, and the others are stacked by `stack_slices` as the files
of a classic series are: sorted along the slice normal, split into runs at gaps (slabs never
span one), frames sharing a position with other content left out. Frames of different stacks,
temporal positions, echo times or orientations form separate volumes of the file.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from domainclust.modalities.medical.slices import (
    Slice,
    fallback_step,
    geometry,
    pixels,
    read_full,
    same_orientation,
    shape_of,
    stack_slices,
)
from domainclust.modalities.medical.volume import Volume
from pydicom.dataset import Dataset

from domainclust.data.ingest_item import Skip

NO_FRAME_GROUPS = ("is multi-frame without per-frame functional groups: its frames cannot be "
                   "placed in space")


def number_of_frames(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1  # a damaged count: read as one frame, and fail there if it is not


def functional_group(ds: Dataset, frame: Dataset | None, sequence: str) -> Dataset | None:
    """An item of a functional-group macro of an enhanced (multi-frame) object: the frame's
    own first, then the shared one."""
    for group in (frame, _first(ds.get("SharedFunctionalGroupsSequence"))):
        item = _first(group.get(sequence)) if group is not None else None
        if item is not None:
            return item
    return None


def _first(sequence: Any) -> Dataset | None:
    return sequence[0] if sequence else None


def _value(item: Dataset | None, keyword: str) -> Any:
    return item.get(keyword) if item is not None else None


def _frame_slice(ds: Dataset, frame: Dataset, index: int, shape: tuple[int, int]) -> Slice:
    g = geometry(_value(functional_group(ds, frame, "PlaneOrientationSequence"),
                        "ImageOrientationPatient"),
                 _value(functional_group(ds, frame, "PlanePositionSequence"), "ImagePositionPatient"),
                 _value(functional_group(ds, frame, "PixelMeasuresSequence"), "PixelSpacing"), shape)
    values = pixels(ds, index=index)
    if values.shape != shape:
        raise Skip(f"holds {values.shape} pixels, not one {shape[0]}x{shape[1]} frame")
    rescale = Dataset()
    transform = functional_group(ds, frame, "PixelValueTransformationSequence")
    if transform is not None and "RescaleSlope" in transform:
        rescale.RescaleSlope = transform.RescaleSlope
        rescale.RescaleIntercept = transform.get("RescaleIntercept", 0)
    return Slice(index, rescale, g, values)


def _dimension(ds: Dataset, frame: Dataset) -> tuple[str, ...]:
    """What tells the stacks of one file apart: stack, temporal position, echo time."""
    content = functional_group(ds, frame, "FrameContentSequence")
    echo = functional_group(ds, frame, "MREchoSequence")
    return (str(_value(content, "StackID")), str(_value(content, "TemporalPositionIndex")),
            str(_value(echo, "EffectiveEchoTime")))


def _parts(candidates: list[tuple[tuple[str, ...], Slice]]) -> list[list[Slice]]:
    """The frames grouped by dimension values, then by orientation."""
    by_dimension: dict[tuple[str, ...], list[Slice]] = defaultdict(list)
    for key, s in candidates:
        by_dimension[key].append(s)
    parts: list[list[Slice]] = []
    for key in sorted(by_dimension):
        groups: list[list[Slice]] = []
        for s in by_dimension[key]:
            home = next((g for g in groups if same_orientation(g[0].geometry.orientation,
                                                               s.geometry.orientation)), None)
            if home is None:
                groups.append([s])
            else:
                home.append(s)
        parts += groups
    return parts


def frames_left_out(dropped: dict[int, str], total: int) -> str:
    """One line for the report: which frames (numbered from 1, as DICOM does) and why."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for i, why in sorted(dropped.items()):
        by_reason[why].append(i + 1)
    said = []
    for why, numbers in by_reason.items():
        listed = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
        said.append(f"frame {listed}: {why}")
    return f"{len(dropped)} of its {total} frames left out: " + "; ".join(said)


def load_multiframe(
    path: Path, *, hounsfield: bool, tolerance: float, irregular: str
) -> tuple[list[Volume], list[tuple[int, str]]]:
    """The volumes of an enhanced multi-frame file, and the frames left out as one report line
    for the file (index 0 of the item's paths)."""
    ds = read_full(path)
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        raise Skip(NO_FRAME_GROUPS)
    total = number_of_frames(ds)
    if len(frames) != total:
        raise Skip(f"NumberOfFrames is {total} but {len(frames)} frames are described")
    shape = shape_of(ds)
    dropped: dict[int, str] = {}
    candidates: list[tuple[tuple[str, ...], Slice]] = []
    for i, frame in enumerate(frames):
        try:
            candidates.append((_dimension(ds, frame), _frame_slice(ds, frame, i, shape)))
        except Skip as exc:
            dropped[i] = str(exc)
    measures = functional_group(ds, frames[0], "PixelMeasuresSequence")
    step = fallback_step(measures) if measures is not None else 0.0
    volumes = []
    for part in _parts(candidates):
        try:
            volumes.append(stack_slices(part, total=len(part), dropped=dropped,
                                        hounsfield=hounsfield, tolerance=tolerance,
                                        irregular=irregular, step_if_single=step))
        except Skip as exc:
            dropped.update({s.index: str(exc) for s in part})
    report = [(0, frames_left_out(dropped, total))] if dropped else []
    if not volumes:
        raise Skip(f"none of its {total} frames is usable", files=report)
    return volumes, report
