"""Band-file names and Landsat QA bits: what a file name says, and which pixels a QA value drops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from domainclust.modalities.geo.bands import SENSORS, band_key, match_band_file
from domainclust.modalities.geo.qa import qa_layout, unusable

C1 = "LC08_L1TP_044034_20170105_20170218_01_T1"
C2 = "LC09_L2SP_044034_20220105_20220107_02_T1"


@pytest.mark.parametrize(("name", "scene", "sensor", "band"), [
    (f"{C1}_B4.TIF", C1, "landsat-oli", "B4"),
    (f"{C1}_B10.TIF", C1, "landsat-oli", "B10"),
    (f"{C1}_BQA.TIF", C1, "landsat-oli", "BQA"),
    (f"{C2}_SR_B4.TIF", C2, "landsat-oli", "B4"),  # Level-2 SR and its QA share the scene
    (f"{C2}_QA_PIXEL.TIF", C2, "landsat-oli", "QA_PIXEL"),
    ("LE07_L1TP_044034_20170105_20170218_01_T1_b5.tif", "LE07_L1TP_044034_20170105_20170218_01_T1",
     "landsat-etm", "B5"),
    ("LC80440342015001LGN00_B8.TIF", "LC80440342015001LGN00", "landsat-oli", "B8"),
    ("l8_B11.tif", "l8", "landsat-oli", "B11"),
    ("scene_B3.tif", "scene", "landsat", "B3"),  # a Landsat layout, mission unknown
    ("T33UUP_20200101T100319_B8A.jp2", "T33UUP_20200101T100319", "sentinel2-msi", "B8A"),
    ("s2_b01.jp2", "s2", "sentinel2-msi", "B01"),
])
def test_band_file_names(name: str, scene: str, sensor: str, band: str) -> None:
    found = match_band_file(Path("/data") / name)
    assert found is not None
    assert (found.scene, found.sensor, found.band) == (Path("/data") / scene, sensor, band)


@pytest.mark.parametrize("name", ["s2_33n.tif", "s2_33n_labels.tif", "preview.jp2",
                                  "x_B12.tif", "x_B02.tif", "x_B13.jp2", f"{C1}_ANG.txt",
                                  "MSK_DETFOO_B01.jp2", "T33UUP_20200101T100319_TCI.jp2"])
def test_other_files_are_not_band_files(name: str) -> None:
    assert match_band_file(Path(name)) is None


def test_common_names_line_bands_of_sensors_up() -> None:
    oli, etm, msi = SENSORS["landsat-oli"], SENSORS["landsat-etm"], SENSORS["sentinel2-msi"]
    common = ("blue", "green", "red", "nir", "swir1", "swir2")
    assert [oli.channel(b) for b in ("B2", "B3", "B4", "B5", "B6", "B7")] == list(common)
    assert [etm.channel(b) for b in ("B1", "B2", "B3", "B4", "B5", "B7")] == list(common)
    assert [msi.channel(b) for b in ("B02", "B03", "B04", "B08", "B11", "B12")] == list(common)
    assert [oli.channel(b) for b in ("B1", "B9", "B10", "B11")] == ["coastal", "cirrus", "tir1",
                                                                     "tir2"]
    assert msi.channel("B8A") == "nir08" and msi.channel("B09") == "water_vapour"
    assert set(oli.left_out) == {"B8"} and not SENSORS["sentinel2-msi"].left_out
    assert band_key("b04") == band_key("B4") == "B4" and band_key("B8A") == "B8A"


def test_qa_bits_of_each_layout() -> None:
    # Collection 1 BQA: bit 0 fill, bit 4 cloud; 2720 is its usual clear-land value.
    c1 = np.array([2720, 1, 2976, 2720 | 64 | 16], np.uint16)
    assert qa_layout("BQA", c1) == "collection1"
    assert unusable(c1, "collection1").tolist() == [False, True, False, True]
    # Pre-collection BQA: bits 14-15 cloud confidence (11 high), bits 12-13 cirrus.
    pre = np.array([20480, 1, 53248, 61440, 45056, 28672], np.uint16)
    assert qa_layout("BQA", pre) == "pre-collection"
    assert unusable(pre, "pre-collection").tolist() == [False, True, True, True, False, False]
    # Collection 2 QA_PIXEL: bit 0 fill, 1 dilated cloud, 3 cloud, 4 cloud shadow.
    c2 = np.array([21824, 1, 21826, 22280, 23888, 21952 | 4], np.uint16)
    assert qa_layout("QA_PIXEL", c2) == "collection2"
    assert unusable(c2, "collection2").tolist() == [False, True, True, True, True, False]
