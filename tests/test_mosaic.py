"""Siemens MOSAIC files (nibabel's real DWI test files) unpacked into their slices, checked
against nibabel's own reading of the CSA header and the mosaic."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.mri import MODALITY
from medical_data import SIEMENS_MR, floats, ingest, reasons, robust_z, siemens_mosaic

from domainclust.data.ingest import default_report_path
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # nibabel: "DICOM readers are highly experimental"
    from nibabel.nicom import csareader
    from nibabel.nicom.dicomwrappers import wrapper_from_data

WHOLE = {"spacing": None, "max_background": 1.0}  # native pixels, every tile kept


def nibabel_volume(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """nibabel's slices (slice, row, column), the position of each along the slice normal of
    ImageOrientationPatient, and NumberOfImagesInMosaic."""
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = wrapper_from_data(ds)
        blocks = np.moveaxis(wrapper.get_unscaled_data(), 2, 0).astype(np.float64)
    n = csareader.get_n_mosaic(csareader.get_csa_header(ds))
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    step = float(ds.SpacingBetweenSlices)
    along = [(wrapper.image_position + k * step * wrapper.slice_normal) @ normal for k in range(n)]
    return blocks, np.array(along), n


def test_a_mosaic_is_unpacked_into_its_slices(tmp_path: Path) -> None:
    path = siemens_mosaic(tmp_path / "in")
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", **WHOLE)
    store = TileStore(tmp_path / "s.zarr")
    blocks, along, n = nibabel_volume(path)
    assert n == 48 and blocks.shape == (48, 128, 128)
    assert report["skipped"] == [] and report["items_read"] == 1
    # One 128x128 slice per block, 64 px tiles: 4 per slice, none across a block border.
    assert store.n == n * 4
    z, y, x = store.meta("position").T
    assert len(set(z.tolist())) == n and (y + 64 <= 128).all() and (x + 64 <= 128).all()
    order = np.argsort(along)
    np.testing.assert_allclose(np.unique(store.meta("slice_position")), along[order], atol=1e-3)
    np.testing.assert_allclose(store.meta("spacing")[0], [3.0, 1.796875, 1.796875], rtol=1e-4)
    expected = robust_z(blocks[order])
    for tile, (k, r, c) in zip(floats(store), store.meta("position")):
        np.testing.assert_allclose(tile[0], expected[k, r:r + 64, c:c + 64],
                                   atol=10 / 255 / 2 + 1e-5)


def test_each_mosaic_of_a_series_is_a_volume_with_slabs_inside_it(tmp_path: Path) -> None:
    """b=0 and b=1000 of one DWI series: two volumes at the same positions, not one series of
    96 slices sharing positions."""
    for b in (0, 1000):
        siemens_mosaic(tmp_path / "in", b_value=b)
    report = ingest(MODALITY, [tmp_path / "in"], tmp_path / "s.zarr", **WHOLE, slab=3)
    store = TileStore(tmp_path / "s.zarr")
    assert report["skipped"] == [] and report["items_read"] == 2 and store.n == 2 * 48 * 4
    assert len(set(store.meta("source").tolist())) == 2
    tiles = store.read(np.arange(store.n))
    first = np.flatnonzero((store.meta("position") == [1, 0, 0]).all(axis=1))[0]
    second = np.flatnonzero((store.meta("position") == [0, 0, 0]).all(axis=1))[0]
    np.testing.assert_array_equal(tiles[first, 0], tiles[second, 1])  # its neighbour below


def test_mosaic_headers_over_pixels_that_are_no_mosaic_are_named(tmp_path: Path) -> None:
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(MODALITY, SIEMENS_MR, tmp_path / "s.zarr", **WHOLE)
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    assert sorted(s["path"] for s in report["skipped"]) == sorted(map(str, SIEMENS_MR))
    assert set(reasons(report)) == {
        ("is a Siemens MOSAIC of 48 slices whose 256x256 pixels do not divide into a 7x7 grid "
         "of slices: it cannot be unpacked")}
