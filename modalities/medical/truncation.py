"""Reading a whole DICOM file, and telling a truncated one from a file of another kind.

pydicom reads a cut file without complaint: it keeps the elements before the cut and a short
last value, or, where the cut falls inside a sequence (compressed pixel data is one), only a
warning and no data set at all. The header of such a file then
looks like a structured report (no Rows), a file of unknown modality (no Modality) or an
image whose pixels do not decode. `truncation` names the real reason from what pydicom kept:
a last value shorter than its declared length, pydicom's end-of-file warning, or an image
SOP class (the file meta states it before anything can be cut) without its pixel data.
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path
from typing import Any

import pydicom
from domainclust.modalities.medical.volume import scrub
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from domainclust.data.ingest_item import Skip

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
EOF_WARNING = "End of file reached"  # pydicom's warning for an unfinished sequence


def read_dataset(path: Path) -> tuple[Dataset, str | None]:
    """The file as pydicom reads it (forced: ACR-NEMA files have no preamble) and why it is
    truncated, if it is (then the data set may be empty); Skip when pydicom cannot read it."""
    try:
        ds, eof = _read(path)
        eof_in = None
        if eof:  # pydicom then keeps nothing of the data set: does the header alone read whole?
            header_cut = _read(path, stop_before_pixels=True)[1]
            eof_in = "its header" if header_cut else "its compressed pixel data"
    except Exception as exc:  # noqa: BLE001 - any parse failure makes the file unusable
        if _ran_out(exc, path):
            return Dataset(), "is truncated: the file ends inside a sequence of its header"
        raise Skip(f"cannot be read ({type(exc).__name__}: {scrub(str(exc), [path])})") from None
    return ds, truncation(ds, eof_in=eof_in)


def _ran_out(exc: Exception, path: Path) -> bool:
    """Whether pydicom failed for want of bytes: an unexpected end of file, a short read
    unpacked (struct.error), or no tag to read inside a sequence at the end of the file (its
    error names the position, in hex)."""
    if isinstance(exc, EOFError) or (isinstance(exc, struct.error)
                                     and "requires a buffer" in str(exc)):
        return True
    found = re.search(r"No tag to read at file position ([0-9A-Fa-f]+)", str(exc))
    return found is not None and int(found.group(1), 16) >= path.stat().st_size


def _read(path: Path, **kwargs: Any) -> tuple[Dataset, bool]:
    """The data set, and whether pydicom reached the end of the file inside a sequence."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(path, force=True, **kwargs)
    return ds, any(EOF_WARNING in str(w.message) for w in caught)


def truncation(ds: Dataset, *, eof_in: str | None = None) -> str | None:
    """Why the file `ds` was read from is truncated, or None if nothing says it is; `eof_in`:
    where pydicom reached the end of the file inside a sequence, if it did."""
    tags = list(ds.keys())
    last = ds.get_item(tags[-1]) if tags else None
    if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH and \
            last.value is not None and len(last.value) < last.length:
        if last.tag == PIXEL_DATA:
            return (f"is truncated: pixel data shorter than declared ({len(last.value)} of "
                    f"{last.length} bytes)")
        return f"is truncated: the file ends inside element {last.tag} of its header"
    if eof_in:
        return f"is truncated: the file ends inside a sequence of {eof_in}"
    if _image_class(ds) and PIXEL_DATA not in ds:
        if "Rows" in ds:
            return "is truncated or header-only: the file ends before its pixel data"
        return "is truncated: the file ends before its image description (Rows, Columns)"
    return None


def _image_class(ds: Dataset) -> bool:
    """Whether the SOP class (dataset, else the file meta read before the data set) is one
    of the image storage classes, which hold pixel data."""
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    return bool(uid) and UID(str(uid)).name.endswith("Image Storage")
