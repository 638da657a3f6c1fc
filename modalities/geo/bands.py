"""Band files of a satellite scene as distributed: which sensor, which band, which common name.

Landsat (Collection 1/2, pre-collection, and short forms like `l8_B4.tif`) and Sentinel-2
(`..._B8A.jp2`) ship one file per band. This module is the one table of their band ids and
common names (so bands of different sensors line up by name: blue, green, red, nir, swir1,
swir2), and the file-name patterns that recognise a band file and the scene it belongs to.
It reads no pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

QA_BANDS = ("BQA", "QA_PIXEL")  # Landsat Collection 1 / Collection 2 quality band
FILL_DN = 0.0  # Landsat Level-1 and Sentinel-2 L1C digital numbers: 0 marks fill (no data)
PAN_WHY = ("panchromatic band (twice the resolution, broad visible response): left out unless "
           "asked for by name, e.g. bands=[..., 'B8']")


@dataclass(frozen=True)
class Sensor:
    """A sensor's bands in its own order: (band id as in the file names, common name)."""

    name: str
    bands: tuple[tuple[str, str], ...]
    left_out: dict[str, str] = field(default_factory=dict)  # band id → why it is not a default

    def channel(self, band: str) -> str:
        """The common name of `band`, or the band id itself where this table has none."""
        return dict(self.bands).get(band, band)


_TM = (("B1", "blue"), ("B2", "green"), ("B3", "red"), ("B4", "nir"), ("B5", "swir1"),
       ("B6", "tir"), ("B7", "swir2"))
SENSORS = {
    "landsat-oli": Sensor(
        name="Landsat 8/9 OLI-TIRS",
        bands=(("B1", "coastal"), ("B2", "blue"), ("B3", "green"), ("B4", "red"), ("B5", "nir"),
               ("B6", "swir1"), ("B7", "swir2"), ("B8", "pan"), ("B9", "cirrus"),
               ("B10", "tir1"), ("B11", "tir2")),
        left_out={"B8": PAN_WHY},
    ),
    "landsat-etm": Sensor(name="Landsat 7 ETM+", bands=(*_TM, ("B8", "pan")),
                          left_out={"B8": PAN_WHY}),
    "landsat-tm": Sensor(name="Landsat 4/5 TM", bands=_TM),
    "landsat": Sensor(name="Landsat (mission not in the file names)", bands=()),
    "sentinel2-msi": Sensor(
        name="Sentinel-2 MSI",
        bands=(("B01", "coastal"), ("B02", "blue"), ("B03", "green"), ("B04", "red"),
               ("B05", "rededge1"), ("B06", "rededge2"), ("B07", "rededge3"), ("B08", "nir"),
               ("B8A", "nir08"), ("B09", "water_vapour"), ("B10", "cirrus"), ("B11", "swir1"),
               ("B12", "swir2")),
    ),
}
LANDSAT_MISSIONS = {"4": "landsat-tm", "5": "landsat-tm", "7": "landsat-etm", "8": "landsat-oli",
                    "9": "landsat-oli"}

# `_SR_`/`_ST_` (Collection 2 Level-2 surface reflectance / temperature) belong to the prefix's
# scene, not to its name: SR_B4 and QA_PIXEL of one product share the scene.
_LANDSAT_FILE = re.compile(
    r"^(?P<prefix>.+?)_(?:(?:SR|ST)_)?(?P<band>B(?:[1-9]|1[01])|BQA|QA_PIXEL)\.tiff?$",
    re.IGNORECASE)
_SENTINEL2_FILE = re.compile(r"^(?P<prefix>.+?)_(?P<band>B(?:0[1-9]|1[0-2]|8A))\.jp2$",
                             re.IGNORECASE)
_SENTINEL2_MASKS = "MSK_"  # QI_DATA/MSK_DETFOO_B01.jp2 ...: per-band masks of a SAFE, not bands
# LC08_L1TP_... (collections), LC80440342015... (pre-collection), l8_... (short form)
_LANDSAT_MISSION = re.compile(r"^l[a-z]?0?(?P<mission>\d)", re.IGNORECASE)


@dataclass(frozen=True)
class BandName:
    """What a band file's name says: its scene (folder + prefix), sensor and band id."""

    scene: Path  # folder / prefix: the band files of one scene share it
    sensor: str  # key of SENSORS
    band: str  # band id in the table's spelling: "B4", "B8A", "BQA", "QA_PIXEL"

    @property
    def is_qa(self) -> bool:
        return self.band in QA_BANDS


def match_band_file(path: Path) -> BandName | None:
    """The scene, sensor and band a file name stands for; None if it is not a band file."""
    m = _SENTINEL2_FILE.match(path.name)
    if m and m["prefix"].upper().startswith(_SENTINEL2_MASKS):
        return None
    if m:
        return BandName(scene=path.parent / m["prefix"], sensor="sentinel2-msi",
                        band=m["band"].upper())
    m = _LANDSAT_FILE.match(path.name)
    if not m:
        return None
    mission = _LANDSAT_MISSION.match(m["prefix"])
    sensor = LANDSAT_MISSIONS.get(mission["mission"], "landsat") if mission else "landsat"
    return BandName(scene=path.parent / m["prefix"], sensor=sensor, band=m["band"].upper())


def band_key(text: str) -> str:
    """A band id compared across spellings: B04 and b4 are the same band, B8A stays B8A."""
    return re.sub(r"^B0+(?=\d)", "B", text.strip().upper())


def band_order(sensor: str, band: str) -> tuple[int, int, str]:
    """Sort key: the sensor's own band order, then unknown bands by number, QA last."""
    known = [b for b, _ in SENSORS[sensor].bands]
    if band in QA_BANDS:
        return (2, 0, band)
    if band in known:
        return (0, known.index(band), band)
    digits = re.sub(r"\D", "", band)
    return (1, int(digits) if digits else 0, band)
