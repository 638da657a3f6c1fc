"""DICOM SEG masks for DICOM series: finding them, pairing by reference, the per-pixel class map.

A DICOM Segmentation (Segmentation Storage, read by highdicom) names the series it was drawn on
(ReferencedSeriesSequence) and, frame by frame, the slice each frame covers (its source
ReferencedSOPInstanceUID) and where (ImagePositionPatient). A SEG pairs with the series whose
slices it references; from a CSV it must reference the series of its row. One that references
another series, or whose frames do not lie on their slices' grid (position, orientation, pixel
spacing, size), is refused, naming both.

Classes: one per distinct SegmentLabel over all the SEGs of an ingest, 0 the background,
numbered in the order of the smallest segment number that carries the label (then by label):
a single SEG with segments 1..K keeps its numbers as class ids. Pixels that two segments of
different classes cover are refused by default (`seg_overlap=refuse`); `last` gives them the
class of the higher segment number, `unlabelled` leaves them unlabelled.

Nothing identifying leaves this module: UIDs stay in memory, reasons name no file or UID.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from domainclust.modalities.medical.multiframe import functional_group
from domainclust.modalities.medical.volume import Volume, hashed, scrub

from domainclust.data.ingest_item import Skip, SourceItem

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
                   "1.2.840.10008.5.1.4.1.1.66.7")  # Label Map Segmentation Storage
OVERLAP_MODES = ("refuse", "last", "unlabelled")
SLICE_TAGS = ["SeriesInstanceUID", "SOPInstanceUID", "ImagePositionPatient",
              "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"]
GRID_TOLERANCE = 0.01  # of the pixel spacing: how far a frame may sit from its slice
ORIENTATION_TOLERANCE = 1e-3
CHUNK_SLICES = 32  # slices decoded at a time: bounds the (slices, rows, columns, segments) stack


@dataclass(frozen=True)
class SegFile:
    """What discovery needs of one DICOM SEG file."""

    path: Path
    series: frozenset[str]  # the SeriesInstanceUIDs it references
    instances: frozenset[str]  # the SOPInstanceUIDs it references
    segments: tuple[tuple[int, str], ...]  # (segment number, SegmentLabel)
    problem: str | None = None  # why it cannot be used


def _header(path: Path, tags: list[str]) -> pydicom.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except Exception:  # noqa: BLE001 - not a DICOM file (or an unreadable one): not a SEG
        return None


def is_seg(path: Path) -> bool:
    header = _header(path, ["SOPClassUID"])
    return header is not None and str(header.get("SOPClassUID", "")) in SEG_SOP_CLASSES


def read_seg(path: Path) -> SegFile:
    """The references and segments of the SEG at `path`, or why it cannot be used."""
    import highdicom as hd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(path, lazy_frame_retrieval=True)
            uids = seg.get_source_image_uids()
            segments = tuple((int(n), _label(seg, n)) for n in seg.segment_numbers)
            fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    except Exception as exc:  # noqa: BLE001 - highdicom raises many types for a broken SEG
        return SegFile(path, frozenset(), frozenset(), (), problem=(
            f"mask: not a readable DICOM SEG ({type(exc).__name__}: {scrub(str(exc), [path])})"))
    problem = None
    if fractional:
        problem = ("mask: a FRACTIONAL DICOM SEG (probabilities); masks are class ids: "
                   "export it as a BINARY segmentation")
    elif not segments:
        problem = "mask: the DICOM SEG holds no segments"
    return SegFile(path, frozenset(str(s) for _, s, _ in uids),
                   frozenset(str(i) for _, _, i in uids), segments, problem)


def _label(seg: Any, number: int) -> str:
    label = str(seg.get_segment_description(number).segment_label or "").strip()
    return label or f"segment {number}"


def find_segs(masks: Path, *, csv_masks: list[Path] | None) -> list[SegFile]:
    """The DICOM SEGs under the folder `masks`, the file `masks` itself, or named in a CSV."""
    if csv_masks is not None:
        candidates = csv_masks
    elif masks.is_file():
        candidates = [masks]
    else:
        candidates = sorted(p for p in masks.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(masks).parts))
    return [read_seg(p) for p in dict.fromkeys(candidates) if p.is_file() and is_seg(p)]


def _identity(item: SourceItem) -> tuple[set[str], set[str]]:
    """The SeriesInstanceUIDs and SOPInstanceUIDs of a DICOM series item's files."""
    series, instances = set(), set()
    for path in item.paths:
        header = _header(path, ["SeriesInstanceUID", "SOPInstanceUID"])
        if header is not None:
            series.add(str(header.get("SeriesInstanceUID", "")))
            instances.add(str(header.get("SOPInstanceUID", "")))
    return series, instances


def _references(seg: SegFile, series: set[str], instances: set[str]) -> bool:
    """Whether `seg` was drawn on this series (its instances when it lists them)."""
    if seg.instances:
        return bool(seg.instances & instances) and bool(seg.series & series)
    return bool(seg.series & series)


def _in_row(item: SourceItem, image: Path) -> bool:
    """Whether the CSV row's `image` (a file of the series or a folder above it) is `item`."""
    files = [p.resolve() for p in item.paths]
    return any(image == f or image in f.parents for f in files)


def pair_series(items: list[SourceItem], *, segs: list[SegFile],
                rows: dict[Path, Path] | None, salt: str) -> list[SourceItem]:
    """The DICOM series items with their SEG appended as a last path (key from both), or
    skipped with the reason; SEG files found among the images are taken out of them, and a
    SEG that pairs with nothing is reported."""
    by_path = {seg.path.resolve(): seg for seg in segs}
    series_items = [item for item in items
                    if item.info.get("kind") == "dicom-series" and "skip" not in item.info]
    identity = {id(item): _identity(item) for item in series_items} if segs else {}
    chosen: dict[int, list[SegFile]] = {id(item): [] for item in series_items}
    refused: dict[int, SegFile] = {}
    used: set[Path] = set()
    for seg in segs:
        if seg.problem:
            continue
        if rows is None:
            candidates = series_items
        else:
            images = [image for image, mask in rows.items() if mask == seg.path.resolve()]
            candidates = [item for item in series_items if any(_in_row(item, i) for i in images)]
        drawn_on = [item for item in candidates if _references(seg, *identity[id(item)])]
        for item in drawn_on:
            chosen[id(item)].append(seg)
            used.add(seg.path.resolve())
        if rows is not None and not drawn_on:
            for item in candidates:
                refused[id(item)] = seg
                used.add(seg.path.resolve())  # reported with the series it was paired with
    out = []
    for item in items:
        paths = {p.resolve() for p in item.paths}
        if paths and paths <= by_path.keys():
            continue  # SEG files among the sources: reported below, never an image
        kind = item.info.get("kind")
        if "skip" in item.info or kind in ("nifti", "nrrd"):
            out.append(item)  # volumes pair by name (`masks.py`)
        elif kind != "dicom-series":
            out.append(replace(item, info={"skip": "DICOM SEG masks pair with single-frame "
                                           "DICOM series only; this is an enhanced "
                                           "(multi-frame) file" if kind == "dicom-frames" else
                                           f"masks do not pair with a {kind} item"}))
        elif id(item) in refused and not chosen[id(item)]:
            seg = refused[id(item)]
            out.append(SourceItem(key=item.key, paths=[*item.paths, seg.path], info={
                "skip": "mask: the DICOM SEG paired with this series in the CSV was drawn on "
                        "another series (it references none of these slices); pair each "
                        "series with its own SEG"}))
        elif len(chosen[id(item)]) != 1:
            found = chosen[id(item)]
            out.append(replace(item, info={"skip": (
                "no row of the CSV pairs this series with the DICOM SEG drawn on it"
                if rows is not None and not found else
                "no DICOM SEG references this series (masks pair with a DICOM series by its "
                "SEG's ReferencedSeriesSequence)" if not found else
                f"{len(found)} DICOM SEGs reference this series; pair one with it in a CSV of "
                "image,mask")}))
        else:
            seg = chosen[id(item)][0]
            key = f"series-{hashed(salt, item.key, str(seg.path.resolve()))}"
            out.append(SourceItem(key=key, paths=[*item.paths, seg.path], info={
                **item.info, "mask": True, "segments": [list(s) for s in seg.segments]}))
    for seg in segs:
        if seg.path.resolve() in used:
            continue
        reason = seg.problem or ("mask: this DICOM SEG references no series among the sources "
                                 "(it was drawn on another series)")
        out.append(SourceItem(key=f"seg-{hashed(salt, str(seg.path.resolve()))}",
                              paths=[seg.path], info={"skip": reason}))
    return out


def number_classes(items: list[SourceItem]) -> list[SourceItem]:
    """Each SEG item's segments as (segment number, class id, label): one class per label,
    ordered by the smallest segment number that carries it (see the module docstring)."""
    first: dict[str, int] = {}
    for item in items:
        for number, label in item.info.get("segments", []):
            first[label] = min(number, first.get(label, number))
    ids = {label: i + 1 for i, label in enumerate(sorted(first, key=lambda s: (first[s], s)))}
    return [replace(item, info={**item.info, "segments": [
        (int(number), ids[label], label) for number, label in item.info["segments"]]})
        if "segments" in item.info else item for item in items]


def seg_classes(items: list[SourceItem]) -> list[str] | None:
    """Class names by id (0: background) of the SEG items, None without any."""
    names = {cls: label for item in items for _, cls, label in item.info.get("segments", [])}
    if not names:
        return None
    return ["background", *(names[i] for i in range(1, max(names) + 1))]


def _slices(paths: list[Path], dropped: list[tuple[int, str]],
            volume: Volume) -> tuple[list[str], dict[str, pydicom.Dataset]]:
    """The SOPInstanceUID of each slice of `volume` (in its order), and their headers."""
    left_out = {i for i, _ in dropped}
    kept = [h for i, path in enumerate(paths) if i not in left_out
            and (h := _header(path, SLICE_TAGS)) is not None and "SOPInstanceUID" in h]
    iop = np.asarray([float(v) for v in kept[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    positions = [float(np.asarray([float(v) for v in h.ImagePositionPatient]) @ normal)
                 for h in kept]
    order = np.argsort(positions, kind="stable")
    kept, positions = [kept[i] for i in order], [positions[i] for i in order]
    if len(kept) != len(volume.slice_positions) or not np.allclose(
            positions, volume.slice_positions, atol=0.01):
        raise Skip("mask: the series' slices could not be matched to its files' headers")
    return [str(h.SOPInstanceUID) for h in kept], {str(h.SOPInstanceUID): h for h in kept}


def check_frames(seg: Any, headers: dict[str, pydicom.Dataset]) -> None:
    """Refuse a SEG whose frames are not on the grid of the slices they reference."""
    shape = next(iter(headers.values()))
    if (int(seg.Rows), int(seg.Columns)) != (int(shape.Rows), int(shape.Columns)):
        raise Skip(f"mask: the DICOM SEG's frames are {seg.Columns}x{seg.Rows} pixels, the "
                   f"series' slices {shape.Columns}x{shape.Rows}; a mask must be drawn on its "
                   "image's grid")
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        derivations = frame.get("DerivationImageSequence") or []
        sources = [str(s.ReferencedSOPInstanceUID) for d in derivations
                   for s in d.get("SourceImageSequence") or []]
        position = functional_group(seg, frame, "PlanePositionSequence")
        orientation = functional_group(seg, frame, "PlaneOrientationSequence")
        measures = functional_group(seg, frame, "PixelMeasuresSequence")
        for source in (headers[s] for s in sources if s in headers):
            spacing = min(float(v) for v in source.PixelSpacing)
            differences = []
            if measures is None or not np.allclose([float(v) for v in measures.PixelSpacing],
                                                   [float(v) for v in source.PixelSpacing],
                                                   rtol=GRID_TOLERANCE):
                differences.append("pixel spacing")
            if orientation is None or np.abs(
                    np.subtract([float(v) for v in orientation.ImageOrientationPatient],
                                [float(v) for v in source.ImageOrientationPatient])
            ).max() > ORIENTATION_TOLERANCE:
                differences.append("orientation")
            if position is None or np.linalg.norm(
                    np.subtract([float(v) for v in position.ImagePositionPatient],
                                [float(v) for v in source.ImagePositionPatient])
            ) > GRID_TOLERANCE * spacing:
                differences.append("position")
            if differences:
                raise Skip(f"mask: frame {number} of the DICOM SEG differs from the slice it "
                           f"references in {' and '.join(differences)}; a mask must be drawn "
                           "on its image's grid")


def load_seg_mask(path: Path, *, series: list[Path], dropped: list[tuple[int, str]],
                  volume: Volume, segments: list[tuple[int, int, str]],
                  overlap: str) -> np.ndarray:
    """The SEG at `path` as (Z, Y, X) float32 class ids on `volume`'s grid (the series
    `series` less its `dropped` files), -1 where unlabelled; Skip when it does not fit."""
    import highdicom as hd

    if not path.is_file():
        raise Skip("mask: the file does not exist")
    sops, headers = _slices(series, dropped, volume)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"mask: not a readable DICOM SEG ({type(exc).__name__}: "
                   f"{scrub(str(exc), [path])})") from None
    check_frames(seg, headers)
    numbers = [number for number, _, _ in segments]
    classes = np.asarray([cls for _, cls, _ in segments])
    labels = dict((cls, label) for _, cls, label in segments)
    out = np.zeros(volume.values.shape, dtype=np.float32)
    for start in range(0, len(sops), CHUNK_SLICES):
        chunk = sops[start:start + CHUNK_SLICES]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stack = seg.get_pixels_by_source_instance(
                    chunk, segment_numbers=numbers, combine_segments=False,
                    ignore_spatial_locations=True,  # the grid is checked above, frame by frame
                    assert_missing_frames_are_empty=True, dtype=np.uint8) > 0
        except Exception as exc:  # noqa: BLE001
            raise Skip(f"mask: the DICOM SEG's frames cannot be read ({type(exc).__name__}: "
                       f"{scrub(str(exc), [path])})") from None
        out[start:start + len(chunk)] = _class_map(stack, classes=classes, labels=labels,
                                                   overlap=overlap)
    return out


def _class_map(stack: np.ndarray, *, classes: np.ndarray, labels: dict[int, str],
               overlap: str) -> np.ndarray:
    """(z, y, x, segments) booleans → (z, y, x) class ids: the class of the highest segment
    number that covers a pixel, 0 where none does; pixels of two classes per `overlap`."""
    covered = stack.any(axis=-1)
    last = stack.shape[-1] - 1 - np.argmax(stack[..., ::-1], axis=-1)
    ids = np.where(covered, classes[last], 0).astype(np.float32)
    distinct = np.stack([stack[..., classes == c].any(axis=-1) for c in np.unique(classes)],
                        axis=-1).sum(axis=-1)
    clash = distinct > 1
    if clash.any() and overlap == "refuse":
        pair = sorted({labels[int(c)] for c in np.unique(classes)
                       if (stack[..., classes == c].any(axis=-1) & clash).any()})
        raise Skip(f"mask: segments of different classes ({', '.join(pair)}) overlap on "
                   f"{int(clash.sum())} pixel(s); the store keeps one class per pixel: set "
                   "seg_overlap=last (the higher segment number wins) or seg_overlap=unlabelled")
    if overlap == "unlabelled":
        ids[clash] = -1
    return ids
