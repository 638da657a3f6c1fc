"""Scenes for the geotiff adapter: finding files, probing each once, reading masked windows.

A scene is probed in the main process (CRS, grid, selected bands, nodata rule, label raster)
into a small picklable `Scene`; worker processes re-open the file by path and read windows
only, so no scene is ever held whole in memory. A problem with one file is a `SceneError`
whose message becomes that scene's skip reason in the ingest report.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from domainclust.modalities.geo.bands import match_band_file
from domainclust.modalities.geo.options import BandRequest
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform as transform_coords
from rasterio.windows import Window

from domainclust.errors import DomainclustError

if TYPE_CHECKING:
    from domainclust.modalities.geo.stack import BandStack

SCENE_SUFFIXES = (".tif", ".tiff")
BAND_FILE_SUFFIXES = (".jp2",)  # taken from folders only when named like a band file
STEM = "{stem}"


class SceneError(Exception):
    """One scene cannot be used; the message says why (it goes in the ingest report).

    `files`: (index into the scene's files, reason) when one file of a band-file scene is the
    cause, so the report names that file.
    """

    def __init__(self, reason: str, *, files: list[tuple[int, str]] | None = None) -> None:
        super().__init__(reason)
        self.files = list(files or [])


@dataclass(frozen=True)
class Scene:
    """What a worker needs to read one scene: no pixel data, only where and how."""

    path: str
    index: int  # into the store's provenance["scenes"]
    crs: str  # "EPSG:32633", or WKT for a CRS without an exact EPSG code
    height: int
    width: int
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    bands: tuple[int, ...]  # 1-based indexes of the selected bands
    descriptions: tuple[str, ...]  # of the selected bands, "" where unset
    dtype: str
    nodata: tuple[float | None, ...]  # per selected band; None: no nodata value
    gdal_mask: bool  # validity from GDAL's mask band (alpha or per-dataset mask)
    labels: str | None  # aligned single-band label raster
    stack: BandStack | None = None  # one file per band, stacked onto this grid; None: `path`


def find_scene_files(sources: list[Path], *, labels: str | None) -> list[Path]:
    """Files given, plus every .tif/.tiff (and band-named .jp2) under the folders given; label
    rasters left out."""
    found: list[Path] = []
    for source in sources:
        if not source.exists():
            raise DomainclustError(f"{source} does not exist; give GeoTIFF files or folders")
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file() and (
                p.suffix.lower() in SCENE_SUFFIXES
                or (p.suffix.lower() in BAND_FILE_SUFFIXES and match_band_file(p) is not None)))
            if not files:
                raise DomainclustError(
                    f"folder {source} holds no GeoTIFF (.tif/.tiff) files nor Sentinel-2 band "
                    "files (*_B02.jp2, ...); remove it from the command or point to the folder "
                    "that holds the scenes"
                )
            found += files
        else:
            found.append(source)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if labels is None:
        return unique
    label_files = {label_path(p, labels) for p in unique}
    return [p for p in unique if p not in label_files]


def label_path(scene: Path, rule: str) -> Path:
    """The label raster of `scene`: `rule` with {stem} is relative to the scene's folder."""
    if STEM not in rule:
        return Path(rule).expanduser().resolve()
    path = Path(rule.replace(STEM, scene.stem)).expanduser()
    return (path if path.is_absolute() else scene.parent / path).resolve()


def crs_string(crs: CRS) -> str:
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def probe_scene(
    path: Path, *, index: int, bands: BandRequest | None, nodata: float | None,
    labels: str | None,
) -> Scene:
    """Open `path` (metadata only) and decide how to read it; SceneError if it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.crs is None:
                    raise SceneError(
                        "has no CRS (not a georeferenced GeoTIFF); assign one, e.g. with "
                        "gdal_edit.py -a_srs, or leave it out"
                    )
                selected = select_bands(src, bands)
                all_nodata = [src.nodatavals[b - 1] for b in selected]
                flags = [src.mask_flag_enums[b - 1] for b in selected]
                gdal_mask = nodata is None and any(
                    MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags
                )
                scene = Scene(
                    path=str(path), index=index, crs=crs_string(src.crs),
                    height=src.height, width=src.width,
                    transform=tuple(src.transform)[:6],  # type: ignore[arg-type]
                    bands=selected,
                    descriptions=tuple(src.descriptions[b - 1] or "" for b in selected),
                    dtype=np.result_type(*[src.dtypes[b - 1] for b in selected]).name,
                    nodata=tuple(all_nodata) if nodata is None else (nodata,) * len(selected),
                    gdal_mask=gdal_mask,
                    labels=None if labels is None else check_labels(src, label_path(path, labels)),
                )
    except RasterioError as exc:
        raise SceneError(f"not a raster GDAL can read ({gdal_message(exc)})") from None
    return scene


def select_bands(src: rasterio.DatasetReader, request: BandRequest | None) -> tuple[int, ...]:
    """1-based band indexes for a request of indexes and/or descriptions (None: all but alpha)."""
    if request is None:
        return tuple(i for i in src.indexes if src.colorinterp[i - 1] != ColorInterp.alpha)
    descriptions = [d or "" for d in src.descriptions]
    out = []
    for band in request:
        if isinstance(band, int):
            if band > src.count:
                raise SceneError(f"has {src.count} band(s); band {band} was asked for")
            out.append(band)
            continue
        matches = [i for i, d in enumerate(descriptions, 1) if d == band] or [
            i for i, d in enumerate(descriptions, 1) if d.lower() == band.lower()
        ]
        if len(matches) != 1:
            named = ", ".join(repr(d) for d in descriptions if d) or "none"
            raise SceneError(
                f"has {'no' if not matches else 'several'} band(s) described {band!r} "
                f"(its band descriptions: {named})"
            )
        out.append(matches[0])
    return tuple(out)


def check_labels(src: rasterio.DatasetReader, path: Path) -> str:
    """`path` if it is a single-band raster on the scene's pixel grid; SceneError otherwise.

    The grid (size and transform) must match. A label raster in another CRS is accepted when
    both CRSs put the scene's corners within half a pixel of each other (label products often
    carry an equivalent CRS under another code, or a slightly different datum), refused with
    the fix otherwise.
    """
    if not path.exists():
        raise SceneError(f"its label raster {path} does not exist")
    fix = (f"reproject it onto the scene's grid, e.g. rio warp {path} {path.stem}_on_grid.tif "
           f"--like {src.name} --resampling nearest")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as lab:
                if lab.count != 1:
                    raise SceneError(f"its label raster {path} has {lab.count} bands, not 1")
                same_size = (lab.height, lab.width) == (src.height, src.width)
                if not same_size or not lab.transform.almost_equals(src.transform):
                    raise SceneError(
                        f"its label raster {path} is not on the scene's pixel grid "
                        f"({lab.width}x{lab.height} px vs {src.width}x{src.height} px, or another "
                        f"transform); {fix}"
                    )
                if lab.crs is not None and lab.crs != src.crs:
                    apart = corner_offset_px(src, lab.crs)
                    if not apart <= MAX_CORNER_OFFSET_PX:
                        raise SceneError(
                            f"its label raster {path} is in {crs_string(lab.crs)}, the scene in "
                            f"{crs_string(src.crs)}: the same grid numbers place the scene's "
                            f"corners {apart:.1f} px apart; {fix}"
                        )
    except RasterioError as exc:
        raise SceneError(f"its label raster {path} cannot be read ({gdal_message(exc)})") from None
    return str(path)


MAX_CORNER_OFFSET_PX = 0.5


def corner_offset_px(src: rasterio.DatasetReader, other: CRS) -> float:
    """How far (in scene pixels) the scene's corners move when its grid numbers are read in
    the CRS `other` instead of its own."""
    cols = np.array([0, src.width, 0, src.width], dtype=np.float64)
    rows = np.array([0, 0, src.height, src.height], dtype=np.float64)
    xs, ys = src.transform * (cols, rows)
    try:
        tx, ty = transform_coords(other, src.crs, list(xs), list(ys))
    except RasterioError:
        return math.inf
    back_cols, back_rows = ~src.transform * (np.asarray(tx), np.asarray(ty))
    offset = np.hypot(np.asarray(back_cols) - cols, np.asarray(back_rows) - rows)
    return float(offset.max()) if np.isfinite(offset).all() else math.inf


def tile_grid(scene: Scene, *, tile_size: int, stride: int) -> tuple[int, int]:
    """Tile rows and columns of whole tiles inside the scene (the ragged edge is not tiled)."""
    rows = (scene.height - tile_size) // stride + 1 if scene.height >= tile_size else 0
    cols = (scene.width - tile_size) // stride + 1 if scene.width >= tile_size else 0
    return rows, cols


FILL_MAGNITUDE = 1e30  # no measured band value is this large: ±3.4e38 (float32's extremes)
# and ±1.8e308 are what writers fill unflagged nodata with


def fill_values(data: np.ndarray) -> np.ndarray:
    """(B, H, W) True where a value of `data` is an implausible fill rather than a measurement:
    NaN, ±inf and |value| >= 1e30 in float rasters; the dtype's extremes (65535, -32768, ...)
    in integer rasters of 16 bits or more (8-bit extremes, 0 and 255, are real values)."""
    if np.issubdtype(data.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            return ~(np.abs(data) < FILL_MAGNITUDE)
    if data.dtype.itemsize < 2:
        return np.zeros(data.shape, dtype=bool)
    info = np.iinfo(data.dtype)
    extremes = data == info.max
    if info.min < 0:
        extremes |= data == info.min
    return extremes


def valid_pixels(data: np.ndarray, nodata: tuple[float | None, ...]) -> np.ndarray:
    """(H, W) True where every band of `data` (B, H, W) holds a plausible (see
    `fill_values`), non-nodata value."""
    valid = ~fill_values(data).any(axis=0)
    is_float = np.issubdtype(data.dtype, np.floating)
    for band, value in zip(data, nodata):
        if value is None or (is_float and math.isnan(value)):
            continue
        if not is_float:
            info = np.iinfo(data.dtype)
            if value != int(value) or not info.min <= value <= info.max:
                continue  # no pixel of this integer type can hold that nodata value
        valid &= band != np.asarray(value).astype(data.dtype)
    return valid


def read_window(
    src: rasterio.DatasetReader, scene: Scene, window: Window, *,
    bands: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, h, w) pixels of the selected bands and the (h, w) validity mask."""
    indexes = scene.bands if bands is None else bands
    nodata = tuple(scene.nodata[scene.bands.index(b)] for b in indexes)
    data = src.read(list(indexes), window=window)
    valid = valid_pixels(data, nodata)
    if scene.gdal_mask:
        valid &= (src.read_masks(list(indexes), window=window) > 0).all(axis=0)
    return data, valid


def gdal_message(exc: BaseException) -> str:
    """One line from a rasterio error, with GDAL's own reason when rasterio only points to it."""
    text = str(exc).strip() or type(exc).__name__
    if "previous exception" in text and exc.__cause__ is not None:
        text = str(exc.__cause__).strip() or text
    return text.splitlines()[0][:200]
