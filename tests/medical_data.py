"""Real medical test files shipped in installed packages, and helpers for the ct/mri tests.

pydicom's test files (CT/MR slices, a 5-slice CT series, MR scouts, a truncated file),
pydicom-data (full-size and enhanced multi-frame files) and nibabel's test data (EPI NIfTI,
Siemens MR DICOMs). Nothing here is generated except copies, cuts and corruptions of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from domainclust.ingest import run_ingest
from domainclust.modality import Modality

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DICOMDIR_TESTS = PYDICOM_FILES / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"  # 5 axial CT slices, 2.5 mm apart, 16x16 px
CT2N = DICOMDIR_TESTS / "98892001" / "CT2N"  # 2 CT slices in different orientations
MR_SCOUTS = DICOMDIR_TESTS / "98892003"  # MR localizers: several series, several orientations
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
SIEMENS_MR = [NIBABEL_DATA / "0.dcm", NIBABEL_DATA / "1.dcm"]  # one series, 2 slices 3 mm apart


def pydicom_file(name: str) -> Path:
    """A pydicom test file, from pydicom itself or the pydicom-data package (no download)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} needs the pydicom-data package (pip install pydicom-data)")
    return Path(path)


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
