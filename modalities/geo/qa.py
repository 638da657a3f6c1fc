"""Landsat quality bands → the pixels a scene must not use (fill, cloud), never a channel.

Three bit layouts are in use. Collection 2 ships `QA_PIXEL`; Collection 1 and the older
pre-collection products both ship a band named `BQA` but with different bits: Collection 1
leaves bits 13-15 unused, pre-collection sets bits 14-15 (cloud confidence) on almost every
pixel, so a sample of the band tells them apart. The unusable pixels feed the adapter's nodata
handling: tiles with too many are dropped, and they are left out of the band statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QaFlag:
    """A pixel is unusable when `qa & mask == value`."""

    name: str
    mask: int
    value: int


@dataclass(frozen=True)
class QaLayout:
    name: str
    flags: tuple[QaFlag, ...]

    def describe(self) -> str:
        return ", ".join(f"{f.name} (qa & {f.mask:#06x} == {f.value:#06x})" for f in self.flags)


FILL = QaFlag("designated fill", 1 << 0, 1 << 0)
LAYOUTS = {
    "collection1": QaLayout("Landsat Collection 1 BQA",
                            (FILL, QaFlag("cloud", 1 << 4, 1 << 4))),
    "pre-collection": QaLayout("Landsat 8 pre-collection BQA",
                               (FILL, QaFlag("cloud, high confidence", 0b11 << 14, 0b11 << 14))),
    "collection2": QaLayout("Landsat Collection 2 QA_PIXEL",
                            (FILL, QaFlag("dilated cloud", 1 << 1, 1 << 1),
                             QaFlag("cloud", 1 << 3, 1 << 3),
                             QaFlag("cloud shadow", 1 << 4, 1 << 4))),
}
PRE_COLLECTION_BITS = 0b111 << 13  # never set in Collection 1 BQA


def qa_layout(band: str, sample: np.ndarray) -> str:
    """Key of LAYOUTS for a QA band named `band` ("BQA" or "QA_PIXEL") given a pixel sample."""
    if band == "QA_PIXEL":
        return "collection2"
    return "pre-collection" if (sample.astype(np.uint32) & PRE_COLLECTION_BITS).any() else (
        "collection1")


def unusable(qa: np.ndarray, layout: str) -> np.ndarray:
    """True where the QA value marks fill or cloud under `layout`."""
    values = qa.astype(np.uint32)
    bad = np.zeros(qa.shape, dtype=bool)
    for flag in LAYOUTS[layout].flags:
        bad |= (values & flag.mask) == flag.value
    return bad
