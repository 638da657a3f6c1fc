"""The geotiff modality: multi-band satellite scenes (GeoTIFF, or any raster GDAL reads) → tiles.

`discover` finds the scenes, probes each once (CRS, grid, bands, nodata, label raster), checks
that they share a band layout, samples per-band robust percentiles, and cuts every scene into
items of at most BLOCK_PX x BLOCK_PX pixels. `read` (in worker processes) does one windowed
read per item, drops tiles with too much nodata, normalises and packs the rest, and records for
every tile its scene, pixel offset, CRS and affine transform, so it maps back to the source.
A file that cannot be used becomes one skipped item whose reason lands in the ingest report.

A scene distributed as one file per band (Landsat `*_B4.TIF` + `*_BQA.TIF`, Sentinel-2
`*_B04.jp2`) is one scene: its bands are stacked onto one grid, channels take the bands' common
names (blue, red, nir, ...), and a Landsat QA band masks fill and cloud (see `stack`, `bands`).

Label rasters (`labels` option): one path (a raster on the scene's pixel grid), or a rule with
`{stem}` resolved next to each scene, e.g. `./{stem}_labels.tif` or `../masks/{stem}.tif`.
Each tile's label is the majority class of its labelled pixels (ties: the smaller class), or
-1 where the label raster holds only nodata (classes are non-negative integers; negative values
count as nodata). Files matching the rule are not taken as scenes. The label pixels of every
tile are kept beside it as its mask (the store's `masks`, nodata unlabelled; the label raster is
on the scene's grid, so a pixel's class is read, never interpolated), with the class names when
the raster carries GDAL category names (`<raster>.aux.xml`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from domainclust.modalities.geo.options import DEFAULTS, BandRequest, GeoOptions, parse_options
from domainclust.modalities.geo.reader import (
    BlockRead,
    open_scene,
    read_block,
    scene_has_valid_pixel,
)
from domainclust.modalities.geo.scenes import (
    Scene,
    SceneError,
    fill_values,
    gdal_message,
    probe_scene,
    tile_grid,
    valid_pixels,
)
from domainclust.modalities.geo.stack import SceneSource, find_scene_sources, probe_stack
from domainclust.modalities.geo.stats import (
    LOSSLESS_SOURCES,
    Normalisation,
    choose_normalisation,
    robust_range,
    sample_pixels,
)
from rasterio.errors import RasterioError
from rasterio.windows import Window

from domainclust.data.ingest import run_ingest, store_key
from domainclust.data.ingest_item import MaskLayout, Skip, SourceItem, TileBatch
from domainclust.data.modality import Modality
from domainclust.data.store import StoreSpec, mask_dtype_for
from domainclust.errors import DomainclustError

BLOCK_PX = 1024  # an item's window: ~54 MB as float32 for 13 bands, and few commits per scene
SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                   "B11", "B12")
META_DOC = {
    "scene": "index into provenance.scenes",
    "position": "(row, col) pixel offset of the tile's top-left corner in its scene",
    "crs": "index into provenance.crs",
    "transform": "affine (a, b, c, d, e, f) of the tile: x = a*col + b*row + c, "
                 "y = d*col + e*row + f for tile pixel (row, col)",
    "valid_fraction": "fraction of the tile's pixels that are not nodata",
}


@dataclass(frozen=True)
class Layout:
    """What every item of one ingest shares: channel names and the normalisation."""

    channels: tuple[str, ...]
    norm: Normalisation
    percentiles: tuple[float, float]
    sample_windows: int
    sample_pixels: int


class GeoTiffAdapter:
    """The `Adapter` of domainclust.data.ingest for georeferenced multi-band rasters (stateless)."""

    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]:
        opts = parse_options(options)
        found = find_scene_sources(sources, labels=opts.labels)
        if not found:
            raise DomainclustError("no scenes given; pass GeoTIFF files or folders holding them")
        usable, problems, layout = survey(found, opts)
        crs_index = {crs: i for i, crs in enumerate(crs_table(usable))}
        by_index = {s.index: s for s in usable}
        items: list[SourceItem] = []
        for i, source in enumerate(found):
            paths = list(source.files)
            if i in problems:
                reason, files = problems[i]
                items.append(SourceItem(key=str(source.name), paths=paths,
                                        info={"index": i, "name": str(source.name),
                                              "error": reason, "files": files}))
                continue
            scene = by_index[i]
            for block in scene_blocks(scene, tile_size=opts.tile_size, stride=opts.stride):
                items.append(SourceItem(
                    key=f"{source.name}@{block[0] * opts.stride},{block[1] * opts.stride}",
                    paths=paths,
                    info={"index": i, "name": str(source.name), "scene": scene,
                          "layout": layout, "block": block, "crs": crs_index[scene.crs]},
                ))
        return items

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec:
        opts = parse_options(options)
        good = [it for it in items if "scene" in it.info]
        layout: Layout = good[0].info["layout"]
        scenes = {it.info["scene"].index: it.info["scene"] for it in good}
        # File names only: the store never holds a source path.
        paths = {it.info["index"]: Path(it.info["name"]).name for it in items}
        scale, offset = layout.norm.scale_offset()
        provenance = {
            "adapter": "geotiff",
            "scenes": [paths[i] for i in sorted(paths)],
            "scene_keys": [scene_key(it.info["name"]) for it in
                           sorted({it.info["index"]: it for it in items}.values(),
                                  key=lambda it: it.info["index"])],
            "crs": crs_table([scenes[i] for i in sorted(scenes)]),
            "band_indexes": [list(scenes[i].bands) if i in scenes and not scenes[i].stack
                             else None for i in sorted(paths)],
            "band_files": [scenes[i].stack.provenance() if i in scenes and scenes[i].stack
                           else None for i in sorted(paths)],
            "nodata_values": [_json_values(scenes[i].nodata) if i in scenes else None
                              for i in sorted(paths)],
            "statistics": {
                "percentiles": list(layout.percentiles),
                "low": list(layout.norm.low), "high": list(layout.norm.high),
                "windows": layout.sample_windows, "pixels": layout.sample_pixels,
                "note": "per band over valid pixels of a seeded sample of tile windows",
            },
            "normalisation": "float = (value - low) / (high - low) per channel",
            "storage": "lossless source integers" if layout.norm.raw else "quantised stretch",
            "stretch_range": [list(r) for r in layout.norm.stretch],
            "nodata": opts.nodata, "max_nodata": opts.max_nodata,
            "tile_size": opts.tile_size, "stride": opts.stride, "labels": opts.labels,
            "resolution": opts.resolution,
            "meta": META_DOC,
        }
        return StoreSpec(modality="geotiff", channels=layout.channels, tile_size=opts.tile_size,
                         dtype=opts.dtype, scale=scale, offset=offset, provenance=provenance)

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool:
        return parse_options(options).labels is not None

    def continue_store(
        self, items: list[SourceItem], attrs: dict[str, Any], options: dict[str, Any]
    ) -> tuple[list[SourceItem], dict[str, Any] | None]:
        """Items that resume or extend the store `attrs` describes, and its provenance after.

        The store's normalisation is kept, so new scenes are scaled like those it holds (values
        beyond its stretch are clipped and counted in the report); a scene it holds keeps its
        number, a new one and a new CRS are numbered after the last. A store that keeps its
        source integers losslessly refuses a scene whose values would not fit them.
        """
        prov = attrs.get("provenance", {})
        if "scene_keys" not in prov:  # written before scenes were recorded: keep as found
            return items, None
        norm = stored_normalisation(prov, storage=str(attrs["dtype"]))
        fresh = self.spec(items, options).provenance  # this run's scenes, by this run's index
        merged = {**fresh, **{k: prov[k] for k in STORED_STATISTICS if k in prov}}
        for name in PER_SCENE:
            merged[name] = list(prov.get(name, []))
        merged["crs"] = list(prov["crs"])
        number: dict[int, int] = {}
        for i, key in enumerate(fresh["scene_keys"]):
            if key not in merged["scene_keys"]:
                for name in PER_SCENE:
                    merged[name].append(fresh[name][i])
            number[i] = merged["scene_keys"].index(key)
        out = []
        for item in items:
            info = {**item.info, "index": number[item.info["index"]]}
            scene: Scene | None = info.get("scene")
            if scene is not None and norm.raw and scene.dtype not in LOSSLESS_SOURCES[norm.storage]:
                info = {k: info[k] for k in ("index", "name")}
                info["error"] = (f"is {scene.dtype}, but the store keeps {norm.storage} source "
                                 "values losslessly; ingest it into another store")
            elif scene is not None:
                if scene.crs not in merged["crs"]:
                    merged["crs"].append(scene.crs)
                info.update(scene=dataclasses.replace(scene, index=info["index"]),
                            crs=merged["crs"].index(scene.crs),
                            layout=dataclasses.replace(info["layout"], norm=norm))
            out.append(dataclasses.replace(item, info=info))
        if not any("scene" in it.info for it in out):
            reasons = sorted({it.info["error"] for it in out})
            raise DomainclustError(f"none of the scenes can be added to the store: "
                                   f"{'; '.join(reasons)}")
        return out, merged

    def mask_layout(self, items: list[SourceItem], options: dict[str, Any]) -> MaskLayout | None:
        """With label rasters, a mask per tile: uint8 for 8-bit label rasters, else int16;
        class names from the first label raster that names its categories."""
        if parse_options(options).labels is None:
            return None
        rasters = list(dict.fromkeys(it.info["scene"].labels for it in items
                                     if "scene" in it.info and it.info["scene"].labels))
        eight_bit = True
        for path in rasters:
            with rasterio.open(path) as lab:
                eight_bit &= lab.dtypes[0] in ("uint8", "int8")
        names = next((n for n in map(category_names, rasters) if n), None)
        dtype = mask_dtype_for(len(names) if names else 255 if eight_bit else None)
        return MaskLayout(dtype=dtype, classes=names)

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch:
        if "error" in item.info:
            raise Skip(item.info["error"], files=item.info.get("files"))
        opts = parse_options(options)
        scene: Scene = item.info["scene"]
        layout: Layout = item.info["layout"]
        row0, col0, n_rows, n_cols = item.info["block"]
        t, s = opts.tile_size, opts.stride
        window = Window(col0 * s, row0 * s, (n_cols - 1) * s + t, (n_rows - 1) * s + t)
        offsets = [(r * s, c * s) for r in range(n_rows) for c in range(n_cols)]
        try:
            with open_scene(scene) as reader:
                block = read_block(reader, window, offsets, tile_size=t)
            label_px = _read_labels(scene.labels, window) if scene.labels else None
        except RasterioError as exc:
            raise Skip(f"cannot read rows {window.row_off}-{window.row_off + window.height}, "
                       f"cols {window.col_off}-{window.col_off + window.width}: "
                       f"{gdal_message(exc)}") from None
        data, valid = block.data, block.valid
        fractions = np.array([valid[r:r + t, c:c + t].mean() for r, c in offsets])
        fractions[block.lost] = 0.0  # a lost tile is never kept on its neighbours' pixels
        keep = np.flatnonzero((fractions > 0) & (1.0 - fractions <= opts.max_nodata + 1e-9))
        kept = [offsets[k] for k in keep]
        fills = int(np.count_nonzero(fill_values(data)))
        tiles = np.stack([data[:, r:r + t, c:c + t] for r, c in kept]) if kept else (
            np.zeros((0, data.shape[0], t, t), data.dtype))
        masks = np.stack([valid[r:r + t, c:c + t] for r, c in kept]) if kept else (
            np.zeros((0, t, t), bool))
        position = np.array([(window.row_off + r, window.col_off + c) for r, c in kept],
                            dtype=np.int64).reshape(-1, 2)
        stored, clipped = layout.norm.quantise(tiles, masks)
        return TileBatch(
            tiles=stored,
            labels=None if label_px is None else majority_labels(label_px, kept, tile_size=t),
            masks=None if label_px is None else label_tiles(label_px, kept, tile_size=t),
            meta={
                "scene": np.full(len(kept), scene.index, dtype=np.int32),
                "position": position,
                "crs": np.full(len(kept), item.info["crs"], dtype=np.int32),
                "transform": tile_transforms(scene.transform, position),
                "valid_fraction": fractions[keep].astype(np.float32),
            },
            skipped_tiles=len(offsets) - len(kept),
            skipped_files=_lost_tiles(block, window, offsets, tile_size=t),
            counts={"values_clipped": clipped, "fill_values": fills},
        )


def _lost_tiles(block: BlockRead, window: Window, offsets: list[tuple[int, int]], *,
                tile_size: int) -> list[tuple[int, str]]:
    """The scene file named with the tiles of this block whose pixels do not decode."""
    if not block.lost:
        return []
    rows = [int(window.row_off) + offsets[k][0] for k in block.lost]
    cols = [int(window.col_off) + offsets[k][1] for k in block.lost]
    return [(0, f"{len(block.lost)} tile(s) lost in rows {min(rows)}-{max(rows) + tile_size}, "
                f"cols {min(cols)}-{max(cols) + tile_size}: their pixels cannot be decoded "
                f"({gdal_message(block.error)}); the tiles that decode are kept")]


Problems = dict[int, tuple[str, list[tuple[int, str]]]]  # scene → (reason, per-file reasons)


def survey(
    found: list[SceneSource], opts: GeoOptions
) -> tuple[list[Scene], Problems, Layout]:
    """Usable scenes, why each other one is left out, and the layout (bands, statistics)."""
    scenes, problems = _probe_all(found, opts)
    channels, mismatched = band_layout([s for s in scenes if s.index not in problems], opts.bands)
    problems.update({i: (why, []) for i, why in mismatched.items()})
    usable = [s for s in scenes if s.index not in problems]
    sample = sample_pixels(usable, tile_size=opts.tile_size, stride=opts.stride,
                           windows=opts.stats_windows, pixels=opts.stats_pixels, seed=opts.seed)
    problems.update({i: (why, []) for i, why in sample.errors.items()})
    for scene in usable:
        # Nothing valid in the sample: prove the scene empty (one band) before skipping it.
        if scene.index not in problems and sample.valid_per_scene.get(scene.index) == 0:
            try:
                empty = not scene_has_valid_pixel(scene)
            except RasterioError as exc:
                problems[scene.index] = (f"cannot read its pixels ({gdal_message(exc)})", [])
                continue
            if empty:
                problems[scene.index] = (f"all pixels are nodata (nodata {_nodata_text(scene)})",
                                         [])
    usable = [s for s in usable if s.index not in problems]
    if not usable:
        listed = "; ".join(f"{found[i].name}: {why}" for i, (why, _) in sorted(problems.items()))
        raise DomainclustError(f"none of the {len(found)} scene(s) can be used: {listed}")
    if not len(sample.values):
        raise DomainclustError("the statistics sample found no valid pixel; raise stats_windows")
    low, high = robust_range(sample.values, opts.percentiles)
    norm = choose_normalisation(low, high, storage=opts.dtype,
                                source_dtypes={s.dtype for s in usable},
                                minimum=sample.minimum, maximum=sample.maximum)
    layout = Layout(channels=channels, norm=norm, percentiles=opts.percentiles,
                    sample_windows=sample.windows, sample_pixels=len(sample.values))
    return usable, problems, layout


def _probe_all(found: list[SceneSource], opts: GeoOptions) -> tuple[list[Scene], Problems]:
    scenes: list[Scene] = []
    problems: Problems = {}
    for i, source in enumerate(found):
        if source.problem:
            problems[i] = (source.problem, [])
            continue
        try:
            if source.group is not None:
                scene = probe_stack(source.group, index=i, bands=opts.bands, nodata=opts.nodata,
                                    labels=opts.labels, resolution=opts.resolution)
            else:
                scene = probe_scene(source.name, index=i, bands=opts.bands, nodata=opts.nodata,
                                    labels=opts.labels)
        except SceneError as exc:
            problems[i] = (str(exc), exc.files)
            continue
        rows, cols = tile_grid(scene, tile_size=opts.tile_size, stride=opts.stride)
        if not rows * cols:
            small = (f"is {scene.width}x{scene.height} px, smaller than one "
                     f"{opts.tile_size} px tile")
            problems[i] = (small, [])
        elif rows * cols > opts.max_scene_tiles:
            big = (f"is {scene.width}x{scene.height} px: {rows * cols} tiles of "
                   f"{opts.tile_size} px, above max_scene_tiles={opts.max_scene_tiles}; "
                   "check its header, or raise max_scene_tiles for a scene that big")
            problems[i] = (big, [])
        scenes.append(scene)
    return scenes, problems


def band_layout(
    scenes: list[Scene], request: BandRequest | None
) -> tuple[tuple[str, ...], dict[int, str]]:
    """Channel names, and why each scene whose bands differ from the majority's is left out."""
    if not scenes:
        return (), {}
    ref_n = Counter(len(s.bands) for s in scenes).most_common(1)[0][0]
    peers = [s for s in scenes if len(s.bands) == ref_n]
    ref_desc = []
    for i in range(ref_n):
        named = Counter(s.descriptions[i] for s in peers if s.descriptions[i])
        ref_desc.append(named.most_common(1)[0][0] if named else "")
    problems: dict[int, str] = {}
    for s in scenes:
        if len(s.bands) != ref_n:
            problems[s.index] = (
                f"has {len(s.bands)} band(s) where {len(peers)} other scene(s) have {ref_n}; "
                "ingest it into another store, or pick common bands with --set bands=[...]")
            continue
        for b, mine, ref in zip(s.bands, s.descriptions, ref_desc):
            if mine and ref and mine.lower() != ref.lower():
                problems[s.index] = (
                    f"band {b} is described {mine!r} where the other scenes' is {ref!r}; "
                    "select bands by description (--set bands=[...]) or ingest it separately")
                break
    first = peers[0].bands
    # Band files carry their sensor's common names; a plain file takes a requested name as is.
    named_by_files = all(s.stack is not None for s in peers)
    names = [
        request[i] if request and isinstance(request[i], str) and not named_by_files
        else ref_desc[i] or f"band{first[i]}"
        for i in range(ref_n)
    ]
    if len(set(names)) != len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return tuple(str(n) for n in names), problems


PER_SCENE = ("scenes", "scene_keys", "band_indexes", "band_files", "nodata_values")
STORED_STATISTICS = ("statistics", "stretch_range", "storage", "normalisation")


def scene_key(name: Path | str) -> str:
    """What the store knows a scene by: a digest of its path (the store holds no path)."""
    return store_key(str(name))


def stored_normalisation(provenance: dict[str, Any], *, storage: str) -> Normalisation:
    """The normalisation a store's provenance records (as `spec` writes it)."""
    stats = provenance["statistics"]
    return Normalisation(
        low=tuple(float(v) for v in stats["low"]), high=tuple(float(v) for v in stats["high"]),
        storage=storage, raw=provenance["storage"] == "lossless source integers",
        stretch=tuple((float(a), float(b)) for a, b in provenance["stretch_range"]))


def crs_table(scenes: list[Scene]) -> list[str]:
    """The distinct CRS of `scenes`, in order of first use: meta/crs indexes into it."""
    return list(dict.fromkeys(s.crs for s in scenes))


def scene_blocks(scene: Scene, *, tile_size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(first tile row, first tile col, tile rows, tile cols) of each item of a scene."""
    rows, cols = tile_grid(scene, tile_size=tile_size, stride=stride)
    step = max(1, (BLOCK_PX - tile_size) // stride + 1)
    return [(r, c, min(step, rows - r), min(step, cols - c))
            for r in range(0, rows, step) for c in range(0, cols, step)]


def tile_transforms(transform: tuple[float, ...], position: np.ndarray) -> np.ndarray:
    """(n, 6) affine of each tile: the scene's, shifted to the tile's pixel offset (row, col)."""
    a, b, c, d, e, f = transform
    rows, cols = position[:, 0].astype(np.float64), position[:, 1].astype(np.float64)
    out = np.empty((len(position), 6), dtype=np.float64)
    out[:, 0], out[:, 1], out[:, 3], out[:, 4] = a, b, d, e
    out[:, 2] = a * cols + b * rows + c
    out[:, 5] = d * cols + e * rows + f
    return out


def majority_labels(
    label_px: np.ndarray, offsets: list[tuple[int, int]], *, tile_size: int
) -> np.ndarray:
    """Majority class of each tile's labelled pixels (-1 marks nodata); -1 if none is labelled."""
    out = np.full(len(offsets), -1, dtype=np.int64)
    for i, (r, c) in enumerate(offsets):
        values = label_px[r:r + tile_size, c:c + tile_size]
        values = values[values >= 0]
        if values.size:
            classes, counts = np.unique(values, return_counts=True)
            out[i] = classes[np.argmax(counts)]
    return out


def label_tiles(
    label_px: np.ndarray, offsets: list[tuple[int, int]], *, tile_size: int
) -> np.ndarray:
    """(n, T, T) class of every pixel of each tile, -1 where the label raster has nodata."""
    t = tile_size
    if not offsets:
        return np.zeros((0, t, t), dtype=np.int64)
    return np.stack([label_px[r:r + t, c:c + t] for r, c in offsets])


def category_names(path: str) -> list[str] | None:
    """The class names GDAL keeps for band 1 of a label raster (`CategoryNames` in its
    `.aux.xml`), None when it names none."""
    import xml.etree.ElementTree as ET

    aux = Path(f"{path}.aux.xml")
    if not aux.is_file():
        return None
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return None
    for band in root.iter("PAMRasterBand"):
        if band.get("band", "1") == "1":
            names = [c.text or "" for c in band.iter("Category")]
            return names or None
    return None


def _read_labels(path: str, window: Window) -> np.ndarray:
    """Integer classes in `window` of a label raster; its nodata (and NaN) become -1."""
    with rasterio.open(path) as lab:
        values = lab.read(1, window=window)
        nodata = lab.nodata
    valid = valid_pixels(values[None], (nodata,))
    # As floats first: -1 does not fit an 8-bit label raster's dtype (it would wrap to 255).
    classes = np.rint(np.where(valid, values.astype(np.float64), -1)).astype(np.int64)
    classes[classes < 0] = -1
    return classes


def _json_values(values: tuple[float | None, ...]) -> list[float | str | None]:
    """Nodata values for JSON attrs (which cannot hold NaN)."""
    return [v if v is None or np.isfinite(v) else str(v) for v in values]


def _nodata_text(scene: Scene) -> str:
    values = {v for v in scene.nodata if v is not None}
    if scene.gdal_mask:
        return "from the file's mask"
    text = ", ".join(str(v) for v in sorted(values)) if values else "NaN"
    if scene.stack is not None and scene.stack.qa is not None:
        text += ", or fill/cloud in its QA band"
    return text


MODALITY = Modality(
    name="geotiff",
    description="multi-band satellite scenes (GeoTIFF): windowed tiles, per-band robust range, "
                "nodata-aware, CRS and transform per tile",
    channels=SENTINEL2_BANDS,
    tile_size=int(DEFAULTS["tile_size"]),
    recipe="geotiff.yaml",
    ingest=functools.partial(run_ingest, GeoTiffAdapter()),
    defaults=dict(DEFAULTS),
)
