"""DICOM SEG masks for DICOM series: real SEGs written by highdicom on pydicom's 5-slice CT
series (CT5N) from masks drawn here, ingested with `masks=` and read back from the store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.ct import MODALITY as CT
from medical_data import CT5N, copy_files, ct_series, grep_store, identifying_strings, ingest
from pydicom.sr.codedict import codes

from domainclust.data.ingest import default_report_path
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

OPTIONS = {"spacing": None, "tile_size": 32, "max_background": 1.0}  # 16x16 px slices: keep all


def write_seg(sources: list[Path], masks: np.ndarray, labels: list[str], out: Path) -> Path:
    """A BINARY DICOM SEG drawn on `sources` (in that order): `masks` is (slices, rows,
    columns, segments) booleans, segment i + 1 labelled labels[i]."""
    images = [pydicom.dcmread(p) for p in sources]
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=label,
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL) for i, label in enumerate(labels)]
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=masks, segment_descriptions=descriptions,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="domainclust tests", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0")
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out


def drawn_classes() -> np.ndarray:
    """(5, 16, 16) class ids per CT5N file in directory order: 1 a block on three slices, 2 a
    smaller block beside it on one; the first file's slice stays empty."""
    classes = np.zeros((5, 16, 16), dtype=np.int64)
    classes[1:4, 3:9, 4:12] = 1
    classes[2, 10:14, 2:7] = 2
    return classes


def by_position(files: list[Path], per_file: np.ndarray) -> np.ndarray:
    """`per_file` reordered along the slice normal (+z for these axial slices)."""
    z = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in files]
    return per_file[np.argsort(z)]


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = sorted(CT5N.iterdir())
    classes = drawn_classes()
    masks = np.stack([classes == 1, classes == 2], axis=-1)
    return write_seg(files, masks, ["liver", "tumour"],
                     tmp_path_factory.mktemp("seg") / "segmentation.dcm")


def stored(out: Path) -> tuple[TileStore, np.ndarray]:
    store = TileStore(out)
    return store, store.read_masks(np.arange(store.n))


@pytest.mark.parametrize("where", ["file", "beside the slices"])
def test_a_seg_pairs_with_the_series_it_references_pixel_for_pixel(
        seg_file: Path, tmp_path: Path, where: str) -> None:
    files = sorted(CT5N.iterdir())
    if where == "file":
        sources, masks = [CT5N], seg_file
    else:  # one folder holds the series and its SEG: the SEG is no image
        folder = copy_files([*files, seg_file], tmp_path / "study")
        sources, masks = [folder], folder
    report = ingest(CT, sources, tmp_path / "s.zarr", masks=str(masks), **OPTIONS)
    store, tiles = stored(tmp_path / "s.zarr")
    assert report["skipped"] == [] and store.n == 5
    assert store.mask_classes == ["background", "liver", "tumour"]
    expected = by_position(files, drawn_classes())
    assert [z for z, _, _ in store.meta("position")] == [0, 1, 2, 3, 4]
    assert np.array_equal(tiles[:, :16, :16], expected)
    padding = np.ones((32, 32), dtype=bool)
    padding[:16, :16] = False
    assert (tiles[:, padding] == store.mask_ignore).all()
    assert store.labels.tolist() == [int((e > 0).mean() >= 0.1) for e in expected]
    plain = ingest(CT, [CT5N], tmp_path / "plain.zarr", **OPTIONS)
    assert plain["skipped"] == []
    assert np.array_equal(TileStore(tmp_path / "plain.zarr").read(np.arange(5)),
                          store.read(np.arange(5)))  # the mask changes no image tile
    secrets = identifying_strings([*files, seg_file]) | {str(seg_file), seg_file.name}
    assert grep_store(tmp_path / "s.zarr", secrets) == []
    ingest(CT, sources, tmp_path / "s.zarr", masks=str(masks), **OPTIONS)  # resumes: all done
    resumed, again = stored(tmp_path / "s.zarr")
    assert resumed.n == 5 and np.array_equal(again, tiles)


def test_a_seg_of_another_series_is_refused_naming_both_files(seg_file: Path,
                                                              tmp_path: Path) -> None:
    other = ct_series(tmp_path / "other", slices=3)  # CT_small re-positioned: another series
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        csv.writer(f).writerows([["image", "mask"], ["other", str(seg_file)]])
    with pytest.raises(DomainclustError, match="wrote no tiles"):
        ingest(CT, [tmp_path / "other"], tmp_path / "s.zarr", masks=str(pairs), **OPTIONS)
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    assert sorted(s["path"] for s in report["skipped"]) == sorted(map(str, [*other, seg_file]))
    assert all("drawn on another series" in s["reason"] for s in report["skipped"])

    # By reference alone: the SEG pairs with no series given, the series with no SEG.
    with pytest.raises(DomainclustError, match="wrote no tiles"):
        ingest(CT, [tmp_path / "other"], tmp_path / "r.zarr", masks=str(seg_file), **OPTIONS)
    report = json.loads(default_report_path(tmp_path / "r.zarr").read_text())
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons.keys() == set(map(str, [*other, seg_file]))
    assert "references no series among the sources" in reasons[str(seg_file)]
    assert all("no DICOM SEG references this series" in reasons[str(p)] for p in other)


def test_a_seg_off_its_slices_grid_is_refused(seg_file: Path, tmp_path: Path) -> None:
    """The SEG's third frame moved 1 mm along x: it no longer lies on the slice it references."""
    moved = pydicom.dcmread(seg_file)
    position = moved.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(position.ImagePositionPatient[0]) + 1.0,
                                     *position.ImagePositionPatient[1:]]
    moved.save_as(tmp_path / "moved.dcm")
    with pytest.raises(DomainclustError, match="wrote no tiles"):
        ingest(CT, [CT5N], tmp_path / "s.zarr", masks=str(tmp_path / "moved.dcm"), **OPTIONS)
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    assert {s["path"] for s in report["skipped"]} == {
        *map(str, CT5N.iterdir()), str(tmp_path / "moved.dcm")}
    assert all("frame 3 of the DICOM SEG differs from the slice it references in position"
               in s["reason"] for s in report["skipped"])


def test_overlapping_segments_are_refused_unless_told_how(tmp_path: Path) -> None:
    files = sorted(CT5N.iterdir())
    organ = np.zeros((5, 16, 16), dtype=bool)
    organ[1:4, 2:12, 2:12] = True
    lesion = np.zeros_like(organ)
    lesion[2, 5:8, 5:9] = True  # inside the organ
    seg = write_seg(files, np.stack([organ, lesion], axis=-1), ["organ", "lesion"],
                    tmp_path / "overlap.dcm")
    with pytest.raises(DomainclustError, match="wrote no tiles"):
        ingest(CT, [CT5N], tmp_path / "refuse.zarr", masks=str(seg), **OPTIONS)
    report = json.loads(default_report_path(tmp_path / "refuse.zarr").read_text())
    assert all("(lesion, organ) overlap on 12 pixel(s)" in s["reason"]
               for s in report["skipped"])
    organ_z, lesion_z = by_position(files, organ), by_position(files, lesion)
    for mode, at_overlap in (("last", 2), ("unlabelled", None)):
        out = tmp_path / f"{mode}.zarr"
        assert ingest(CT, [CT5N], out, masks=str(seg), seg_overlap=mode, **OPTIONS)["skipped"] == []
        store, tiles = stored(out)
        overlap = store.mask_ignore if at_overlap is None else at_overlap
        expected = np.where(lesion_z, overlap, organ_z.astype(np.int64))
        assert np.array_equal(tiles[:, :16, :16], expected)


def test_classes_follow_segment_labels_across_segs(seg_file: Path, tmp_path: Path) -> None:
    """A second series whose SEG numbers its only segment, 'tumour', 1: the store keeps one
    'tumour' class, and that series' tumour pixels hold its id."""
    other = ct_series(tmp_path / "other", slices=2)  # 128x128 px, another series
    tumour = np.zeros((2, 128, 128, 1), dtype=bool)
    tumour[1, 40:60, 70:100] = True
    write_seg(other, tumour, ["tumour"], tmp_path / "segs" / "other.dcm")
    copy_files([seg_file], tmp_path / "segs")
    report = ingest(CT, [CT5N, tmp_path / "other"], tmp_path / "s.zarr",
                    masks=str(tmp_path / "segs"), **OPTIONS)
    store, tiles = stored(tmp_path / "s.zarr")
    assert report["skipped"] == []
    assert store.mask_classes == ["background", "liver", "tumour"]
    source = store.meta("source")
    sizes = {int(s): int((source == s).sum()) for s in np.unique(source)}
    assert sorted(sizes.values()) == [5, 32]  # CT5N's 5 tiles, 2 slices of 4x4 tiles
    other_source = max(sizes, key=sizes.get)
    drawn = np.zeros((2, 128, 128), dtype=np.int64)  # slices ascend in z, as written
    drawn[tumour[..., 0]] = 2
    for tile, (z, y, x) in zip(tiles[source == other_source],
                               store.meta("position")[source == other_source]):
        assert np.array_equal(tile, drawn[z, y:y + 32, x:x + 32])
    assert (tiles[source != other_source][:, :16, :16] == 2).sum() == (drawn_classes() == 2).sum()
