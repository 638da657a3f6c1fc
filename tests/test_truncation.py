"""Truncated DICOM files are named as truncated, wherever the cut falls: not as files of
unknown modality, structured reports, or pixel data that does not decode.

The files are pydicom's real CT/MR files cut at offsets read from their own structure: inside
the header of an element (Modality, Rows), inside a header value or sequence, inside the pixel
data (native, RLE-compressed, and of an enhanced multi-frame file).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from domainclust.modalities.medical.ct import MODALITY as CT
from domainclust.modalities.medical.mri import MODALITY as MR
from medical_data import CT5N, ingest, pydicom_file

PIXEL_DATA = 0x7FE00010
SMALL = {"spacing": None, "tile_size": 32, "max_background": 1.0}


def cut(name: str, folder: Path, *, keyword: str | int, into: int) -> Path:
    """pydicom's `name` cut `into` bytes after the start of `keyword`'s value (negative: that
    many bytes before it, inside the element's tag, VR and length)."""
    source = pydicom_file(name)
    element = pydicom.dcmread(source).get_item(keyword)  # raw: it knows its offset
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{Path(name).stem}-{keyword}{into:+d}.dcm"
    target.write_bytes(source.read_bytes()[: element.value_tell + into])
    return target


def cut_in_sequence(folder: Path) -> Path:
    """The first CT5N slice cut 12 bytes into its private sequence (0049,1001), of undefined
    length: past the element's tag, VR and length, where its first item should begin."""
    source = sorted(CT5N.iterdir())[0]
    data = source.read_bytes()
    at = data.index(b"\x49\x00\x01\x10SQ")  # explicit VR little endian: tag, then VR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "CT5N-sequence+12.dcm"
    target.write_bytes(data[: at + 12])
    return target


def named(report: dict) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in report["skipped"]}


def test_cut_ct_files_are_named_as_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    files = {
        cut("CT_small.dcm", folder, keyword="Modality", into=-4):
            "is truncated: the file ends before its image description (Rows, Columns)",
        cut("CT_small.dcm", folder, keyword="Rows", into=-4):
            "is truncated: the file ends before its image description (Rows, Columns)",
        cut("CT_small.dcm", folder, keyword="StudyInstanceUID", into=9):
            f"is truncated: the file ends inside element {pydicom.tag.Tag('StudyInstanceUID')} "
            "of its header",
        cut("CT_small.dcm", folder, keyword=PIXEL_DATA, into=1000):
            "is truncated: pixel data shorter than declared (1000 of 32768 bytes)",
        cut_in_sequence(folder): "is truncated: the file ends inside a sequence of its header",
    }
    report = ingest(CT, [folder, CT5N], tmp_path / "s.zarr", **SMALL)
    assert report["items_read"] == 1  # CT5N
    assert named(report) == {str(path): reason for path, reason in files.items()}


def test_cut_mr_pixel_data_is_named_as_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    rle = cut("MR_small_RLE.dcm", folder, keyword=PIXEL_DATA, into=3000)
    frames = cut("emri_small.dcm", folder, keyword=PIXEL_DATA, into=40000)
    report = ingest(MR, [folder, pydicom_file("MR_small.dcm")], tmp_path / "s.zarr", **SMALL)
    assert named(report) == {
        str(rle): "is truncated: the file ends inside a sequence of its compressed pixel data",
        str(frames): "is truncated: pixel data shorter than declared (40000 of 81920 bytes)",
    }
