"""Enhanced multi-frame DICOM read frame by frame, like a classic series: frames sorted along the
normal, gaps split the volume into runs that slabs never span, a bad frame left out alone.

The files are pydicom-data's real enhanced CT (eCT_Supplemental.dcm, 2 frames of 512x512 px)
grown to more frames: frame j keeps real frame j % 2's pixels (shifted j * 8 px, so no two are
alike) and functional groups, at a new position along the slice normal.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.ct import MODALITY
from medical_data import ingest, pydicom_file, reasons
from pydicom.sequence import Sequence

from domainclust.data.store import TileStore

WIDE = {"spacing": None, "tile_size": 256, "max_background": 1.0, "windows": {"wide": [4000, 976]}}


def enhanced_ct(path: Path, *, positions: list[float], unplaced: int | None = None,
                temporal: list[int] | None = None) -> Path:
    """The real enhanced CT with one frame per entry of `positions` (mm along the slice normal
    from the first real frame, in file order); frame `unplaced` loses its plane position; frame j
    gets TemporalPositionIndex `temporal[j]`."""
    ds = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    real = ds.pixel_array
    origin = np.array(ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
                      .ImagePositionPatient, dtype=float)
    groups, frames = [], []
    for j, at in enumerate(positions):
        group = copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[j % 2])
        group.PlanePositionSequence[0].ImagePositionPatient = [
            f"{v:.3f}" for v in origin + at * normal(ds)]
        if j == unplaced:
            del group.PlanePositionSequence
        if temporal is not None:
            group.FrameContentSequence[0].TemporalPositionIndex = temporal[j]
        groups.append(group)
        frames.append(np.roll(real[j % 2], 8 * j, axis=1))
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.NumberOfFrames = len(positions)
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path)
    return path


def normal(ds: pydicom.Dataset) -> np.ndarray:
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def windowed_frames(path: Path) -> np.ndarray:
    """Each frame (file order) in the 'wide' window, computed here from the definition."""
    ds = pydicom.dcmread(path)
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    hu = ds.pixel_array * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    return np.clip(np.rint((hu - (976 - 2000)) / 4000 * 255), 0, 255)


def along(path: Path) -> np.ndarray:
    """Each placed frame's position along the normal (file order; NaN where unplaced)."""
    ds = pydicom.dcmread(path)
    return np.array([np.array(f.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
                     @ normal(ds) if "PlanePositionSequence" in f else np.nan
                     for f in ds.PerFrameFunctionalGroupsSequence])


@pytest.mark.parametrize("irregular", ["skip", "keep"])
def test_frames_sorted_along_the_normal_and_split_at_a_gap(tmp_path: Path, irregular: str) -> None:
    # 0..20 mm, a missing frame at 30 mm, 40..60 mm; stored out of order.
    path = enhanced_ct(tmp_path / "e.dcm", positions=[20, 0, 60, 10, 50, 40])
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", **WIDE, slab=3, irregular=irregular)
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == 6 * 4
    at = along(path)
    order = np.argsort(at)
    np.testing.assert_allclose(np.unique(store.meta("slice_position")), at[order], atol=1e-3)
    np.testing.assert_allclose(store.meta("spacing")[0, 0], 10.0)
    tiles = store.read(np.arange(store.n))  # (tile, z-1/z/z+1, y, x)
    frames = windowed_frames(path)
    for tile, (z, y, x) in zip(tiles, store.meta("position")):
        np.testing.assert_allclose(tile[1], frames[order[z], y:y + 256, x:x + 256], atol=1)
        below = z - 1 if z not in (0, 3) else z  # the gap lies between z=2 and z=3
        above = z + 1 if z not in (2, 5) else z
        np.testing.assert_allclose(tile[0], frames[order[below], y:y + 256, x:x + 256], atol=1)
        np.testing.assert_allclose(tile[2], frames[order[above], y:y + 256, x:x + 256], atol=1)
    assert report["skipped"] == []


def test_a_frame_that_cannot_be_placed_is_left_out_alone(tmp_path: Path) -> None:
    path = enhanced_ct(tmp_path / "e.dcm", positions=[0, 10, 20, 30, 40], unplaced=4)
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", **WIDE)
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == 4 * 4 and report["items_read"] == 1
    assert [s["path"] for s in report["skipped"]] == [str(path)]
    assert reasons(report) == [
        ("1 of its 5 frames left out: frame 5: no ImageOrientationPatient/ImagePositionPatient/"
         "PixelSpacing: slices cannot be placed in space")]
    np.testing.assert_allclose(np.unique(store.meta("slice_position")),
                               np.sort(along(path)[:4]), atol=1e-3)


def test_time_points_of_one_file_are_volumes_of_their_own(tmp_path: Path) -> None:
    """Two time points at the same three positions: two volumes, not six frames that share
    positions (which would all be left out)."""
    path = enhanced_ct(tmp_path / "e.dcm", positions=[0, 10, 20, 0, 10, 20],
                       temporal=[1, 1, 1, 2, 2, 2])
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", **WIDE)
    store = TileStore(tmp_path / "s.zarr")
    assert report["skipped"] == [] and store.n == 6 * 4
    volume, (z, y, x) = store.meta("volume"), store.meta("position").T
    assert sorted(set(zip(volume.tolist(), z.tolist()))) == [(v, k) for v in (0, 1)
                                                             for k in range(3)]
    frames = windowed_frames(path)
    for tile, v, k, r, c in zip(store.read(np.arange(store.n)), volume, z, y, x):
        np.testing.assert_allclose(tile[0], frames[3 * v + k, r:r + 256, c:c + 256], atol=1)
