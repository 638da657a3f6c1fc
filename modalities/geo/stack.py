"""Scenes stored as one file per band: grouping the files by name, probing them onto one grid.

Band files sharing a folder and a prefix (`LC08_..._T1_B4.TIF`, `l8_B4.tif`, `T33UUP_..._B8A.jp2`)
form one scene. Its grid is the finest resolution among the selected bands (or the adapter's
`resolution` option, in CRS units, over the finest band's extent); the other bands are resampled
onto it by GDAL when read (see `reader`). A Landsat QA band becomes the scene's fill/cloud mask.
Files that share a scene's prefix without being one of its bands are left out with a reason, so
they never turn into one-band scenes of their own.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from domainclust.modalities.geo.bands import (
    FILL_DN,
    QA_BANDS,
    SENSORS,
    band_key,
    band_order,
    match_band_file,
)
from domainclust.modalities.geo.options import BandRequest
from domainclust.modalities.geo.qa import LAYOUTS, qa_layout
from domainclust.modalities.geo.scenes import (
    Scene,
    SceneError,
    check_labels,
    crs_string,
    find_scene_files,
    gdal_message,
    label_path,
)
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT

QA_SAMPLE_PX = 512  # side of the decimated QA read that tells its bit layout


@dataclass(frozen=True)
class BandFile:
    path: str
    band: str  # the sensor's band id ("B4", "B8A")
    channel: str  # its common name ("red"), or the band id where the sensor is unknown
    nodata: float | None
    resampling: str  # name of a rasterio Resampling, used unless the file is on the grid
    on_grid: bool  # already on the scene's grid: read as is


@dataclass(frozen=True)
class QaFile:
    path: str
    band: str  # "BQA" or "QA_PIXEL"
    layout: str  # key of qa.LAYOUTS
    on_grid: bool  # else resampled with nearest: bits must not be blended


@dataclass(frozen=True)
class BandStack:
    """How a band-file scene is read: which file gives each channel, and its QA mask."""

    sensor: str  # key of bands.SENSORS
    files: tuple[BandFile, ...]  # in channel order
    qa: QaFile | None
    left_out: tuple[tuple[str, str], ...]  # (band id, why) of band files not stacked
    resolution: tuple[float, float]  # pixel size of the grid (x, y), CRS units

    def provenance(self) -> dict[str, Any]:
        qa = None if self.qa is None else {
            "band": self.qa.band, "file": Path(self.qa.path).name, "layout": LAYOUTS[self.qa.layout].name,
            "unusable": LAYOUTS[self.qa.layout].describe(),
        }
        return {
            "sensor": SENSORS[self.sensor].name,
            "bands": [{"band": f.band, "channel": f.channel, "file": Path(f.path).name,
                       "resampling": "none (on the grid)" if f.on_grid else f.resampling}
                      for f in self.files],
            "qa": qa, "left_out": dict(self.left_out), "resolution": list(self.resolution),
        }


@dataclass(frozen=True)
class BandGroup:
    """The band files of one scene as their names say, before any file is opened."""

    name: Path  # folder / common prefix
    sensor: str
    bands: tuple[tuple[str, Path], ...]  # (band id, file) in the sensor's order
    qa: Path | None

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for _, p in self.bands) + ((self.qa,) if self.qa else ())


@dataclass(frozen=True)
class SceneSource:
    """One scene to probe: a raster file, or a group of band files (`group`)."""

    name: Path  # the file, or the band files' folder / prefix
    files: tuple[Path, ...]
    group: BandGroup | None = None
    problem: str | None = None  # why it is left out before any file is opened


def find_scene_sources(sources: list[Path], *, labels: str | None) -> list[SceneSource]:
    """The scenes under `sources`, in the order their first file was found."""
    files = find_scene_files(sources, labels=labels)
    members: dict[str, list[tuple[str, Path]]] = {}
    info: dict[str, tuple[Path, str]] = {}
    for path in files:
        name = match_band_file(path)
        if name is not None:
            key = str(name.scene).lower()
            members.setdefault(key, []).append((name.band, path))
            info.setdefault(key, (name.scene, name.sensor))
    groups: dict[str, tuple[SceneSource, list[SceneSource]]] = {
        key: _group(info[key][0], info[key][1], found) for key, found in members.items()
    }
    named = [g[0] for g in groups.values() if g[0].group is not None]
    label_files = {label_path(s.name, labels) for s in named} if labels else set()
    out: list[SceneSource] = []
    for path in files:
        name = match_band_file(path)
        if name is not None:
            key = str(name.scene).lower()
            if key in groups:
                scene, extra = groups.pop(key)
                out += [scene, *extra]
        elif path not in label_files:
            out.append(SceneSource(name=path, files=(path,), problem=_auxiliary(path, named)))
    return out


def _group(
    scene: Path, sensor: str, found: list[tuple[str, Path]]
) -> tuple[SceneSource, list[SceneSource]]:
    """The scene of `found` band files, and the files left out of it (a second copy of a band)."""
    first: dict[str, Path] = {}
    extra: list[SceneSource] = []
    for band, path in sorted(found, key=lambda bp: (band_order(sensor, bp[0]), str(bp[1]))):
        kind = "QA" if band in QA_BANDS else band
        if kind in first:
            extra.append(SceneSource(name=path, files=(path,), problem=(
                f"is a second {kind} band file of scene {scene.name} (the first is "
                f"{first[kind].name}); left out")))
            continue
        first[kind] = path
    qa = first.pop("QA", None)
    if qa is not None and not first:
        return SceneSource(name=qa, files=(qa,), problem=(
            f"is the QA band of scene {scene.name}, whose band files are missing; give them "
            "with it")), extra
    group = BandGroup(name=scene, sensor=sensor, bands=tuple(first.items()), qa=qa)
    return SceneSource(name=scene, files=group.files, group=group), extra


def _auxiliary(path: Path, scenes: list[SceneSource]) -> str | None:
    """Why a product file of a band-file scene that is not a band (`..._SAA.TIF`,
    `..._QA_RADSAT.TIF`, `..._B6_VCID_1.TIF`) is left out; None for any other file."""
    for scene in scenes:
        prefix = scene.name.name + "_"
        rest = path.stem[len(prefix):]
        if (path.parent == scene.name.parent and path.stem.lower().startswith(prefix.lower())
                and _PRODUCT_TOKEN.match(rest)):
            return (f"shares the prefix of band-file scene {scene.name.name} but is not one of "
                    "its bands; left out")
    return None


_PRODUCT_TOKEN = re.compile(r"^[A-Z][A-Z0-9_]*$")  # product files name their content in capitals


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine
    width: int
    height: int

    def holds(self, other: Grid) -> bool:
        return (self.crs == other.crs and (self.width, self.height) == (other.width, other.height)
                and self.transform.almost_equals(other.transform))


def probe_stack(
    group: BandGroup, *, index: int, bands: BandRequest | None, nodata: float | None,
    labels: str | None, resolution: float | None,
) -> Scene:
    """Open the header of every selected band file and lay the scene out on one grid."""
    sensor = SENSORS[group.sensor]
    selected = select_band_files(group, bands)
    headers = [_file_header(path, group, band=band) for band, path in selected]
    grids = [h.grid for h in headers]
    finest = min(range(len(grids)), key=lambda i: (abs(grids[i].transform.a), i))
    grid = target_grid(grids[finest], resolution=resolution, path=selected[finest][1])
    files = tuple(
        BandFile(path=str(path), band=band, channel=sensor.channel(band),
                 nodata=nodata if nodata is not None else (
                     h.nodata if h.nodata is not None else FILL_DN),
                 resampling=Resampling.bilinear.name, on_grid=grid.holds(h.grid))
        for (band, path), h in zip(selected, headers, strict=True)
    )
    chosen = {band for band, _ in selected}
    left_out = tuple((band, sensor.left_out.get(band, "not among the requested bands"))
                     for band, _ in group.bands if band not in chosen)
    stack = BandStack(sensor=group.sensor, files=files, qa=_probe_qa(group, grid),
                      left_out=left_out,
                      resolution=(abs(grid.transform.a), abs(grid.transform.e)))
    return Scene(
        path=str(group.name), index=index, crs=crs_string(grid.crs),
        height=grid.height, width=grid.width,
        transform=tuple(grid.transform)[:6],  # type: ignore[arg-type]
        bands=tuple(range(1, len(files) + 1)), descriptions=tuple(f.channel for f in files),
        dtype=np.result_type(*[h.dtype for h in headers]).name,
        nodata=tuple(f.nodata for f in files),
        gdal_mask=False, stack=stack,
        labels=None if labels is None else _check_labels(selected[finest][1], grid,
                                                         label_path(group.name, labels)),
    )


def select_band_files(group: BandGroup, request: BandRequest | None) -> list[tuple[str, Path]]:
    """(band id, file) per channel: a request names band ids (B4, B04), band numbers (4) or
    common names (red); None takes every band but those the sensor leaves out by default."""
    sensor = SENSORS[group.sensor]
    if request is None:
        chosen = [(b, p) for b, p in group.bands if b not in sensor.left_out]
        if not chosen:
            raise SceneError(
                f"holds only band(s) left out by default ({', '.join(b for b, _ in group.bands)}:"
                f" {sensor.left_out[group.bands[0][0]]})")
        return chosen
    out = []
    for wanted in request:
        text = f"B{wanted}" if isinstance(wanted, int) else wanted
        if text.upper() in QA_BANDS:
            raise SceneError(f"band {wanted!r} is the scene's QA band: it masks fill and cloud "
                             "pixels and is never a channel; leave it out of bands=[...]")
        matches = [(b, p) for b, p in group.bands if band_key(b) == band_key(text)
                   or sensor.channel(b).lower() == text.lower()]
        if not matches:
            listed = ", ".join(f"{b} ({sensor.channel(b)})" if sensor.channel(b) != b else b
                               for b, _ in group.bands)
            raise SceneError(f"has no band {wanted!r} (its band files: {listed})")
        out.append(matches[0])
    return out


def target_grid(ref: Grid, *, resolution: float | None, path: Path) -> Grid:
    """`ref`, or its extent at `resolution` (whole pixels, the ragged edge left out)."""
    if resolution is None:
        return ref
    t = ref.transform
    if t.b or t.d:
        raise SceneError(f"band file {path.name} has a rotated grid; resolution= needs a "
                         "north-up one (leave resolution out to keep the finest band's grid)")
    width = math.floor(ref.width * abs(t.a) / resolution + 1e-9)
    height = math.floor(ref.height * abs(t.e) / resolution + 1e-9)
    if not width or not height:
        raise SceneError(f"is {ref.width * abs(t.a):g} x {ref.height * abs(t.e):g} CRS units, "
                         f"less than one pixel at resolution={resolution:g}")
    transform = Affine(math.copysign(resolution, t.a), 0.0, t.c, 0.0,
                       math.copysign(resolution, t.e), t.f)
    return Grid(crs=ref.crs, transform=transform, width=width, height=height)


def _file_error(group: BandGroup, path: Path, band: str, why: str) -> SceneError:
    return SceneError(f"its band {band} file {path.name} {why}",
                      files=[(group.files.index(path), why)])


@dataclass(frozen=True)
class FileHeader:
    grid: Grid
    nodata: float | None
    dtype: str


def _file_header(path: Path, group: BandGroup, *, band: str) -> FileHeader:
    """One band file's grid, nodata and dtype; SceneError naming the file if it is not one
    georeferenced band."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count != 1:
                    raise _file_error(group, path, band,
                                      f"has {src.count} bands; a band file holds one band")
                if src.crs is None:
                    raise _file_error(group, path, band, "has no CRS (not georeferenced); "
                                      "assign one, e.g. with gdal_edit.py -a_srs")
                grid = Grid(crs=src.crs, transform=src.transform, width=src.width,
                            height=src.height)
                return FileHeader(grid=grid, nodata=src.nodata, dtype=str(src.dtypes[0]))
    except RasterioError as exc:
        raise _file_error(group, path, band,
                          f"is not a raster GDAL can read ({gdal_message(exc)})") from None


def _probe_qa(group: BandGroup, grid: Grid) -> QaFile | None:
    """The QA band's bit layout (from a decimated read) and whether it is on the grid."""
    if group.qa is None:
        return None
    band = match_band_file(group.qa).band  # type: ignore[union-attr]
    own = _file_header(group.qa, group, band=band).grid
    try:
        with rasterio.open(group.qa) as src:
            shape = (min(src.height, QA_SAMPLE_PX), min(src.width, QA_SAMPLE_PX))
            sample = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    except RasterioError as exc:
        raise _file_error(group, group.qa, band,
                          f"cannot be read ({gdal_message(exc)})") from None
    return QaFile(path=str(group.qa), band=band, layout=qa_layout(band, sample),
                  on_grid=grid.holds(own))


def _check_labels(ref_path: Path, grid: Grid, labels: Path) -> str:
    """The label raster, checked against the scene's grid (the finest band's, or resampled)."""
    with rasterio.open(ref_path) as src:
        own = Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
        if grid.holds(own):
            return check_labels(src, labels)
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                       height=grid.height) as vrt:
            return check_labels(vrt, labels)
