"""The mri adapter on real DICOM/NIfTI files, checked against pydicom/nibabel read directly."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.mri import MODALITY
from domainclust.modalities.medical.nifti import load_nifti
from domainclust.modalities.medical.slices import load_series
from medical_data import (
    MR_SCOUTS,
    NIBABEL_DATA,
    SIEMENS_MR,
    copy_files,
    floats,
    grep_store,
    identifying_strings,
    ingest,
    nifti_with_header,
    pydicom_file,
    reasons,
    robust_z,
    siemens_mosaic,
)

from domainclust.data.ingest import default_report_path
from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

WHOLE = {"spacing": None, "max_background": 1.0}  # native pixels, every tile kept


def failed_report(out: Path) -> dict:
    return json.loads(default_report_path(out).read_text())


def test_modality_is_registered_with_its_recipe() -> None:
    m = get_modality("mri")
    assert m.channels == ("mr",) and m.recipe == "mri.yaml"
    assert m.load_recipe()["modality"] == "mri" and m.load_recipe()["model"]["frontend"] == "none"


def test_robust_zscore_per_volume(tmp_path: Path) -> None:
    path = pydicom_file("MR_small.dcm")
    ingest(MODALITY, [path], tmp_path / "s.zarr", **WHOLE)
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == 1 and store.channels == ("mr",)
    assert store.attrs["offset"] == [-5.0] and store.attrs["scale"] == [pytest.approx(10 / 255)]
    expected = robust_z(pydicom.dcmread(path).pixel_array.astype(np.float64))
    np.testing.assert_allclose(floats(store)[0, 0], expected, atol=10 / 255 / 2 + 1e-5)


def test_percentile_normalisation_maps_to_unit_range(tmp_path: Path) -> None:
    path = pydicom_file("MR_small.dcm")
    ingest(MODALITY, [path], tmp_path / "s.zarr", **WHOLE, normalize="percentile")
    store = TileStore(tmp_path / "s.zarr")
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
    low, high = np.percentile(pixels, [0.5, 99.5])
    expected = np.clip((pixels - low) / (high - low), 0, 1)
    np.testing.assert_allclose(floats(store)[0, 0], expected, atol=1 / 255 / 2 + 1e-5)


def test_common_rescale_is_not_applied_but_a_varying_one_is(tmp_path: Path) -> None:
    path = pydicom_file("MR2_UNCR.dcm")  # RescaleSlope 3.77: display scaling, not a unit
    raw = pydicom.dcmread(path).pixel_array
    volume, dropped = load_series([path], hounsfield=False, tolerance=0.1, irregular="skip")
    assert dropped == []
    np.testing.assert_array_equal(volume.values[0], raw)
    # Two real slices whose rescale differs (edited copy): put on one scale.
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    ds.save_as(first)
    ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
        float(ds.ImagePositionPatient[2]) + 0.8]
    ds.RescaleSlope, ds.RescaleIntercept = 2, 0
    ds.save_as(second)
    volume, _ = load_series([second, first], hounsfield=False, tolerance=0.1,
                            irregular="skip")
    np.testing.assert_array_equal(volume.values[1], 2 * volume.values[0])


def test_ct_is_skipped_and_localizer_planes_are_items_of_their_own(tmp_path: Path) -> None:
    report = ingest(MODALITY, [pydicom_file("CT_small.dcm"), MR_SCOUTS], tmp_path / "s.zarr",
                    **WHOLE, tile_size=32)
    assert reasons(report) == [("series of 1 file(s): modality is CT, the mri adapter reads "
                                "MR; ingest it with --modality ct")]
    # Two 3-plane localizers and a 7-angle radial series: one item per plane, beside 4
    # single-slice series; each a 16x16 px slice (one tile of 32 px), normalised on its own.
    scouts = sorted(p for p in MR_SCOUTS.rglob("*") if p.is_file())
    assert report["items_read"] == 3 + 3 + 7 + 4 == len(scouts) == report["items_found"] - 1
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == len(scouts) and (store.meta("position") == 0).all()
    expected = [robust_z(pydicom.dcmread(p).pixel_array.astype(np.float64)) for p in scouts]
    for tile in floats(store)[:, 0, :16, :16]:
        assert sum(np.allclose(tile, e, atol=10 / 255 / 2 + 1e-5) for e in expected) >= 1


def test_nifti_4d_orientation_and_volumes(tmp_path: Path) -> None:
    path = NIBABEL_DATA / "example4d.nii.gz"
    image = nib.load(path)
    canonical = np.asarray(nib.as_closest_canonical(image).dataobj[..., 1], dtype=np.float32)
    volumes = load_nifti(path, max_volumes=2)
    assert len(volumes) == 2 and volumes[1].spacing == pytest.approx((2.2, 2.0, 2.0))
    # Rows run anterior→posterior and columns right→left, as in an axial DICOM slice.
    for k in (0, 11, 23):
        np.testing.assert_array_equal(volumes[1].values[k], canonical[::-1, ::-1, k].T)
    np.testing.assert_allclose(np.diff(volumes[0].slice_positions), 2.2, rtol=1e-5)

    report = ingest(MODALITY, [path], tmp_path / "s.zarr", spacing=None, tile_size=32,
                    max_volumes=2)
    store = TileStore(tmp_path / "s.zarr")
    assert sorted(set(store.meta("volume").tolist())) == [0, 1]
    assert report["tiles_dropped"] > 0  # slices outside the brain are background


def test_broken_nifti_is_named_by_path_outside_the_store(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    original = (NIBABEL_DATA / "anatomical.nii").read_bytes()  # big-endian NIfTI-1
    for name, offset, value in (("bad_magic", 344, b"xyz\0"),  # not n+1: not NIfTI at all
                                ("bad_datatype", 70, struct.pack(">h", 999)),
                                ("bad_dim", 42, struct.pack(">h", -5))):
        damaged = bytearray(original)
        damaged[offset:offset + len(value)] = value
        (tmp_path / "in" / f"{name}.nii").write_bytes(bytes(damaged))
    data = gzip.decompress((NIBABEL_DATA / "example4d.nii.gz").read_bytes())
    (tmp_path / "in" / "cut.nii.gz").write_bytes(gzip.compress(data[: len(data) // 3]))
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(MODALITY, [tmp_path / "in"], tmp_path / "s.zarr")
    report = failed_report(tmp_path / "s.zarr")
    text = reasons(report)
    assert len(text) == 4 and all("NIfTI" in r for r in text), text
    assert sum("cannot be read as NIfTI" in r for r in text) == 3  # bad_dim: by its shape
    assert not any(str(tmp_path) in r or "bad_" in r for r in text)
    assert sorted(s["path"] for s in report["skipped"]) == sorted(
        str(p) for p in (tmp_path / "in").iterdir())
    assert not grep_store(tmp_path / "s.zarr", {"bad_magic", "bad_datatype", "cut.nii"})


def test_a_nifti_without_a_voxel_size_is_named_not_ingested_at_1_mm(tmp_path: Path) -> None:
    """A zero or NaN pixdim that the affine is built from is refused, naming the file; with
    an sform, pixdim is not used and the file is ingested at the sform's 2 mm."""
    folder = tmp_path / "in"
    zero = nifti_with_header(folder / "zero.nii", sform_code=0, pixdim=[-1, 2, 0, 2, 0, 0, 0, 0])
    nan = nifti_with_header(folder / "nan.nii", sform_code=0,
                            pixdim=[-1, np.nan, 2, 2, 0, 0, 0, 0])
    good = nifti_with_header(folder / "sform.nii", pixdim=[-1, 0, 0, 0, 0, 0, 0, 0])
    report = ingest(MODALITY, [folder], tmp_path / "s.zarr", **WHOLE, tile_size=32)
    assert sorted(s["path"] for s in report["skipped"]) == [str(nan), str(zero)]
    assert all("voxel size (pixdim)" in r and "nibabel would assume 1 mm" in r
               for r in reasons(report))
    assert report["items_read"] == 1
    (volume,) = load_nifti(good, max_volumes=1)
    assert volume.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_nifti2_epi_and_a_header_only_siemens_file(tmp_path: Path) -> None:
    header_only = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "csa_slice_norm.dcm"
    report = ingest(MODALITY, [NIBABEL_DATA / "example_nifti2.nii.gz", header_only],
                    tmp_path / "s.zarr", spacing=None, tile_size=32, max_background=1.0)
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == 12 and report["items_read"] == 1  # 12 slices of 32x20 px, one tile each
    assert reasons(report) == ["is truncated or header-only: the file ends before its pixel data"]
    assert report["skipped"][0]["path"] == str(header_only)


def test_multiframe_without_geometry_is_skipped(tmp_path: Path) -> None:
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(MODALITY, [pydicom_file("emri_small.dcm")], tmp_path / "s.zarr")
    assert "frames cannot be placed in space" in reasons(failed_report(tmp_path / "s.zarr"))[0]


def test_full_size_mr_is_resampled_and_slabs_named(tmp_path: Path) -> None:
    path = pydicom_file("MR2_UNCR.dcm")  # 1024 px at 0.195 mm
    report = ingest(MODALITY, [path], tmp_path / "s.zarr", slab=3)
    store = TileStore(tmp_path / "s.zarr")
    assert store.channels == ("mr_z-1", "mr_z+0", "mr_z+1")
    assert store.n + report["tiles_dropped"] == 16  # 200 px at 1 mm: origins 0, 64, 128, 136
    np.testing.assert_allclose(store.meta("spacing")[0, 1:], 1.0, rtol=0.01)
    t = store.read(np.arange(store.n))
    np.testing.assert_array_equal(t[:, 0], t[:, 1])  # one slice: its neighbours repeat it


def test_no_patient_identifier_reaches_the_store(tmp_path: Path) -> None:
    folder = copy_files(SIEMENS_MR + [pydicom_file("MR_small.dcm")], tmp_path / "dft patient")
    siemens_mosaic(folder)
    sources = [folder, MR_SCOUTS]
    files = sorted(folder.iterdir()) + sorted(p for p in MR_SCOUTS.rglob("*") if p.is_file())
    needles = identifying_strings(files)
    assert {"19800102", "CompressedSamples", "dft patient name"} <= needles
    out = tmp_path / "s.zarr"
    ingest(MODALITY, sources, out)
    assert TileStore(out).n > 0
    assert grep_store(out, needles | {"98892003", "dft patient"}) == []
    shutil.rmtree(folder)


def _nilearn_template(kind: str) -> Path:
    try:
        files = metadata.distribution("nilearn")
    except metadata.PackageNotFoundError:
        pytest.skip("the MNI152 T1 template ships with nilearn (pip install --no-deps nilearn)")
    path = Path(str(files.locate_file(
        f"nilearn/datasets/data/mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz")))
    if not path.exists():
        pytest.skip(f"{path} is missing from the installed nilearn")
    return path


def _axial(path: Path) -> np.ndarray:
    """(slice, row, column) = (inferior→superior, anterior→posterior, right→left), via RAS+."""
    ras = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float64)
    return np.flip(ras.transpose(2, 1, 0), axis=(1, 2))


def test_real_t1_template_tiles_keep_position_and_tissue_contrast(tmp_path: Path) -> None:
    """The MNI152 T1 (1 mm, an average of 152 real scans): tiles are the robust z-score at
    their recorded position, and white matter is brighter than grey matter, brighter than CSF."""
    t1 = _nilearn_template("t1")
    ingest(MODALITY, [t1], tmp_path / "t1.zarr", tile_size=32, stride=32, slice_stride=8)
    store = TileStore(tmp_path / "t1.zarr")
    expected = robust_z(_axial(t1))
    gm, wm = (_axial(_nilearn_template(k)) / 255.0 for k in ("gm", "wm"))
    x = floats(store)
    assert store.n > 100
    centre = {"gm": [], "wm": [], "csf": []}
    for i, (z, r, c) in enumerate(store.meta("position")):
        np.testing.assert_allclose(x[i, 0], expected[z, r:r + 32, c:c + 32],
                                   atol=10 / 255 / 2 + 1e-5)
        window = (z, slice(r + 12, r + 20), slice(c + 12, c + 20))
        g, w = gm[window].mean(), wm[window].mean()
        tissue = ("gm" if g > max(w, 0.5) else "wm" if w > max(g, 0.5)
                  else "csf" if g + w < 0.4 else None)
        if tissue:
            centre[tissue].append(x[i, 0, 12:20, 12:20].mean())
    means = {k: float(np.mean(v)) for k, v in centre.items()}
    assert min(len(v) for v in centre.values()) >= 5, {k: len(v) for k, v in centre.items()}
    assert means["wm"] > means["gm"] + 0.5 > means["csf"] + 1.0, means
