"""The ct adapter on real DICOM/NIfTI files, checked against pydicom read directly."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.ct import DEFAULT_WINDOWS, MODALITY
from medical_data import (
    CT2N,
    CT5N,
    DICOMDIR_TESTS,
    copy_files,
    grep_store,
    identifying_strings,
    ingest,
    pydicom_file,
    reasons,
)
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.ingest import default_report_path
from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

SMALL = {"spacing": None, "tile_size": 32, "max_background": 1.0}  # 16x16 px slices: keep all


def windowed(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """The uint8 a HU window should store, computed here from the definition."""
    return np.clip(np.rint((hu - (level - width / 2)) / width * 255), 0, 255)


def hounsfield(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture(scope="module")
def ct5n(tmp_path_factory: pytest.TempPathFactory) -> tuple[TileStore, dict]:
    out = tmp_path_factory.mktemp("ct5n") / "store.zarr"
    report = ingest(MODALITY, [CT5N], out, **SMALL)
    return TileStore(out), report


def test_modality_is_registered_with_its_recipe() -> None:
    m = get_modality("ct")
    assert m.channels == ("soft_tissue", "lung", "bone") and m.recipe == "ct.yaml"
    assert m.load_recipe()["model"]["frontend"] == "none"  # chosen on validation
    adapter = pickle.loads(pickle.dumps(m.ingest.args[0]))  # spawn workers get a copy
    assert adapter.name == "ct"


def test_slices_are_ordered_along_the_normal(ct5n) -> None:
    store, report = ct5n
    assert report["items_read"] == 1 and store.n == 5
    datasets = [pydicom.dcmread(p) for p in sorted(CT5N.iterdir())]
    # Axial slices: the normal of ImageOrientationPatient is +z, so position = IPP z.
    assert all(np.allclose(np.cross(ds.ImageOrientationPatient[:3], ds.ImageOrientationPatient[3:]),
                           [0, 0, 1]) for ds in datasets)
    expected = sorted(float(ds.ImagePositionPatient[2]) for ds in datasets)
    np.testing.assert_allclose(store.meta("slice_position"), expected, atol=1e-4)
    assert store.meta("position").tolist() == [[z, 0, 0] for z in range(5)]
    ps = [float(v) for v in datasets[0].PixelSpacing]
    np.testing.assert_allclose(store.meta("spacing"), [[2.5, *ps]] * 5, rtol=1e-5)


def test_hounsfield_windows_match_pydicom(ct5n) -> None:
    store, _ = ct5n
    assert store.channels == tuple(DEFAULT_WINDOWS)
    tiles = store.read(np.arange(store.n))
    by_z = sorted((pydicom.dcmread(p) for p in CT5N.iterdir()),
                  key=lambda ds: float(ds.ImagePositionPatient[2]))
    for tile, ds in zip(tiles, by_z):
        hu = hounsfield(ds)
        for c, (width, level) in enumerate(DEFAULT_WINDOWS.values()):
            np.testing.assert_allclose(tile[c, :16, :16], windowed(hu, width, level), atol=1)
            # Padding outside the 16x16 slice is air.
            assert (tile[c, 16:] == windowed(np.array(-1024.0), width, level)).all()
    floats = store.to_float(__import__("torch").from_numpy(tiles))
    assert floats.min() >= 0 and floats.max() <= 1


def test_a_missing_slice_splits_the_series_into_runs(tmp_path: Path) -> None:
    files = sorted(CT5N.iterdir())
    folder = copy_files([f for f in files if f.name != "2693"], tmp_path / "gap")
    report = ingest(MODALITY, [folder], tmp_path / "a.zarr", **SMALL, slab=3)
    store = TileStore(tmp_path / "a.zarr")
    assert report["tiles_written"] == 4 and report["skipped"] == []
    z = sorted(float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in folder.iterdir())
    steps = np.diff(z)
    gap = int(np.argmax(steps))  # the one step of 5 mm
    assert steps[gap] == pytest.approx(5.0) and np.delete(steps, gap) == pytest.approx(2.5)
    # A slab never reaches across the gap: at its edges the edge slice repeats instead.
    tiles = store.read(np.arange(store.n)).reshape(4, 3, 3, 32, 32)  # (tile, window, z, y, x)
    before, after = tiles[gap], tiles[gap + 1]
    np.testing.assert_array_equal(before[:, 2], before[:, 1])
    np.testing.assert_array_equal(after[:, 0], after[:, 1])


def test_series_in_one_folder_are_split_and_other_files_reported(tmp_path: Path) -> None:
    folder = copy_files(sorted(CT5N.iterdir()) + [pydicom_file("CT_small.dcm"),
                                                 pydicom_file("MR_small.dcm")], tmp_path / "mixed")
    (folder / "notes.bin").write_bytes(b"not a dicom file at all\n" * 20)
    report = ingest(MODALITY, [folder], tmp_path / "s.zarr", **SMALL)
    store = TileStore(tmp_path / "s.zarr")
    # CT5N (5 tiles of 32 px) and CT_small (128 px: 16 tiles) are two series, not one.
    assert report["items_read"] == 2 and store.n == 5 + 16
    assert len(set(store.meta("source").tolist())) == 2
    text = "\n".join(reasons(report))
    assert "modality is MR, the ct adapter reads CT; ingest it with --modality mri" in text
    assert "is not a DICOM file" in text
    assert "notes.bin" not in text  # reasons do not name files: the report's paths do
    assert str(folder / "notes.bin") in {s["path"] for s in report["skipped"]}


def test_slices_at_one_position_collapse_if_equal_and_are_dropped_if_not(tmp_path: Path) -> None:
    folder = copy_files([pydicom_file("CT_small.dcm")], tmp_path / "dup")
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "again.dcm")
    report = ingest(MODALITY, [folder], tmp_path / "s.zarr")
    assert report["tiles_written"] == 4
    assert [(s["path"], s["reason"]) for s in report["skipped"]] == [
        (str(folder / "again.dcm"), "an exact copy of another slice of the series")]
    ds = pydicom.dcmread(folder / "again.dcm")
    ds.PixelData = (ds.pixel_array + 1).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(folder / "again.dcm")
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(MODALITY, [folder], tmp_path / "t.zarr")
    report = json.loads(default_report_path(tmp_path / "t.zarr").read_text())
    assert len(report["skipped"]) == 2
    assert all("with 1 other slice(s) of different content" in r for r in reasons(report))


def test_a_truncated_slice_is_skipped_with_its_reason(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.dcm").write_bytes(data[: len(data) - 4000])
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(MODALITY, [tmp_path / "in"], tmp_path / "s.zarr")
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    (skipped,) = report["skipped"]
    assert skipped["path"] == str(tmp_path / "in" / "cut.dcm")
    assert skipped["reason"] == ("is truncated: pixel data shorter than declared (28906 of "
                                 "32768 bytes)")


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DomainclustError, match="no usable source files"):
        ingest(MODALITY, [tmp_path / "empty"], tmp_path / "none.zarr")
    with pytest.raises(DomainclustError, match="does not exist"):
        ingest(MODALITY, [tmp_path / "missing"], tmp_path / "none.zarr")
    report = ingest(MODALITY, [tmp_path / "empty", pydicom_file("CT_small.dcm")],
                    tmp_path / "s.zarr")
    assert reasons(report) == ["is an empty folder"]
    assert [s["path"] for s in report["skipped"]] == [str(tmp_path / "empty")]


def test_planes_of_one_series_are_items_of_their_own(tmp_path: Path) -> None:
    """CT2N: one series of a sagittal and a coronal slice, each its own one-slice item."""
    report = ingest(MODALITY, [CT2N], tmp_path / "s.zarr", **SMALL, windows={"wide": [2000, 0]})
    store = TileStore(tmp_path / "s.zarr")
    assert report["skipped"] == [] and report["items_read"] == 2 and store.n == 2
    assert len(set(store.meta("source").tolist())) == 2
    assert store.meta("position").tolist() == [[0, 0, 0]] * 2  # one slice each
    expected = [windowed(hounsfield(pydicom.dcmread(p)), 2000, 0) for p in sorted(CT2N.iterdir())]
    got = store.read(np.arange(2))[:, 0, :16, :16]
    matches = [[np.array_equal(t, e) for e in expected] for t in got]
    assert sorted(map(tuple, matches)) == [(False, True), (True, False)]


def test_resampling_to_one_millimetre(tmp_path: Path) -> None:
    path = pydicom_file("CT_small.dcm")
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", spacing=1.0)
    store = TileStore(tmp_path / "s.zarr")
    ds = pydicom.dcmread(path)
    side = round(128 * float(ds.PixelSpacing[0]))  # 128 px at 0.66 mm → 85 px at 1 mm
    assert store.n + report["tiles_dropped"] == 4  # origins 0 and 85-64 on both axes
    assert store.meta("position")[:, 1:].max() == side - 64
    np.testing.assert_allclose(store.meta("spacing")[0, 1:], 128 * float(ds.PixelSpacing[0]) / side)


def test_slabs_stack_neighbouring_slices(tmp_path: Path) -> None:
    report = ingest(MODALITY, [CT5N], tmp_path / "s.zarr", **SMALL, slab=3,
                    windows={"wide": [2000, 0]})
    slab = TileStore(tmp_path / "s.zarr")
    assert slab.channels == ("wide_z-1", "wide_z+0", "wide_z+1") and report["tiles_written"] == 5
    t = slab.read(np.arange(5))
    for z in range(1, 4):
        np.testing.assert_array_equal(t[z, 0], t[z - 1, 1])
        np.testing.assert_array_equal(t[z, 2], t[z + 1, 1])
    np.testing.assert_array_equal(t[0, 0], t[0, 1])  # the edge slice repeats


def test_background_tiles_are_dropped_and_counted(tmp_path: Path) -> None:
    path = pydicom_file("693_UNCR.dcm")  # a head CT: 59% of the slice is air or padding
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", spacing=None, max_background=0.5)
    store = TileStore(tmp_path / "s.zarr")
    assert store.n + report["tiles_dropped"] == 64 and report["tiles_dropped"] > 10
    hu = hounsfield(pydicom.dcmread(path))
    for (_, y, x) in store.meta("position"):
        assert (hu[y:y + 64, x:x + 64] < -950).mean() <= 0.5


def test_enhanced_multiframe_ct(tmp_path: Path) -> None:
    path = pydicom_file("eCT_Supplemental.dcm")
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", spacing=None, tile_size=256,
                    max_background=1.0, windows={"wide": [4000, 976]})
    assert report["items_found"] == 1 and report["skipped"] == []  # no empty series beside it
    store = TileStore(tmp_path / "s.zarr")
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])  # (0, 0, -1) here: slices run head to feet
    along = [np.array(f.PlanePositionSequence[0].ImagePositionPatient, dtype=float) @ normal
             for f in ds.PerFrameFunctionalGroupsSequence]
    assert store.n == 2 * 4
    np.testing.assert_allclose(store.meta("slice_position"), np.repeat(sorted(along), 4))
    np.testing.assert_allclose(store.meta("spacing")[0], [10.0, 0.388672, 0.388672], rtol=1e-5)
    transform = shared.PixelValueTransformationSequence[0]
    frame = int(np.argmin(along))
    hu = ds.pixel_array[frame] * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    first = store.read(np.array([0]))[0, 0]
    np.testing.assert_allclose(first, windowed(hu[:256, :256], 4000, 976), atol=1)


def test_nifti_ct_matches_the_dicom_it_came_from(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    dy, dx = (float(v) for v in ds.PixelSpacing)
    # NIfTI (RAS) of an axial DICOM slice: i runs along columns (toward L = -x), j along rows.
    image = nib.Nifti1Image(hounsfield(ds).T[:, :, None].astype(np.int16),
                            np.diag([-dx, -dy, 5.0, 1.0]))
    image.to_filename(tmp_path / "ct.nii.gz")
    ingest(MODALITY, [tmp_path / "ct.nii.gz"], tmp_path / "n.zarr", spacing=None)
    ingest(MODALITY, [pydicom_file("CT_small.dcm")], tmp_path / "d.zarr", spacing=None)
    from_nifti, from_dicom = TileStore(tmp_path / "n.zarr"), TileStore(tmp_path / "d.zarr")
    assert from_nifti.n == from_dicom.n == 4
    np.testing.assert_array_equal(from_nifti.read(np.arange(4)), from_dicom.read(np.arange(4)))
    np.testing.assert_array_equal(from_nifti.meta("position"), from_dicom.meta("position"))


def test_mr_nifti_is_not_taken_for_hounsfield_units(tmp_path: Path) -> None:
    from medical_data import NIBABEL_DATA

    source = NIBABEL_DATA / "anatomical.nii"
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(MODALITY, [source], tmp_path / "s.zarr")
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    assert "do not look like Hounsfield units" in reasons(report)[0]


def test_rerun_resumes_without_duplicates(tmp_path: Path) -> None:
    # Item keys (hashed SeriesInstanceUIDs) are stable, so a re-run finds every item done.
    sources = [CT5N, pydicom_file("CT_small.dcm")]
    first = ingest(MODALITY, sources, tmp_path / "s.zarr", **SMALL)
    again = ingest(MODALITY, sources, tmp_path / "s.zarr", **SMALL)
    assert first == again and TileStore(tmp_path / "s.zarr").n == first["tiles_written"] == 21


@pytest.mark.parametrize("options, message", [
    ({"slab": 2}, "slab must be odd"),
    ({"tile_size": 16}, "tile_size=16"),
    ({"windows": {"soft": [0, 40]}}, "width > 0"),
    ({"irregular": "maybe"}, "use skip or keep"),
])
def test_bad_options_are_clear_errors(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(DomainclustError, match=message):
        ingest(MODALITY, [pydicom_file("CT_small.dcm")], tmp_path / "s.zarr", **options)


def test_no_patient_identifier_reaches_the_store(tmp_path: Path) -> None:
    sources = [DICOMDIR_TESTS / "98892001", pydicom_file("CT_small.dcm"),
               pydicom_file("eCT_Supplemental.dcm"), pydicom_file("693_UNCR.dcm")]
    files = [p for s in sources for p in ([s] if s.is_file() else sorted(s.rglob("*")))
             if p.is_file()]
    needles = identifying_strings(files) | {"98892001"}  # the folder is named by patient
    assert {"Perfusion", "St. Nowhere Hospital", "19500704", "CompressedSamples"} <= needles
    out = tmp_path / "s.zarr"
    ingest(MODALITY, sources, out, spacing=None, tile_size=32, max_background=1.0)
    assert TileStore(out).n > 0
    assert grep_store(out, needles) == []


@pytest.mark.slow
def test_cli_ingest_with_workers_then_pretrain(tmp_path: Path) -> None:
    runner = CliRunner()
    sources = [str(pydicom_file(n)) for n in ("CT_small.dcm", "693_UNCR.dcm")]
    stores = {}
    for workers in (1, 2):  # 2: spawned reader processes get a pickled adapter
        out = tmp_path / f"w{workers}.zarr"
        result = runner.invoke(app, ["ingest", "--modality", "ct", *sources, "--out", str(out),
                                     "--set", "tile_size=32", "--set", "spacing=2.0",
                                     "--workers", str(workers), "--quiet"])
        assert result.exit_code == 0, result.output
        stores[workers] = TileStore(out)
    one, two = stores[1], stores[2]
    assert one.n == two.n >= 10
    np.testing.assert_array_equal(one.read(np.arange(one.n)), two.read(np.arange(two.n)))
    result = runner.invoke(app, [
        "pretrain", "--modality", "ct", "--store", str(one.path), "--run-dir",
        str(tmp_path / "run"), "--set", "epochs=1", "--set", "k=4", "--set", "batch_size=8",
        "--set", "pca_dim=8", "--set", "device=cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["n_clusters"] == 4
