"""The geotiff adapter's ingest options: their defaults, and one validation step with clear errors.

`DEFAULTS` is what `domainclust ingest --modality geotiff --set key=value` accepts; `GeoOptions`
is the checked, typed form the rest of the adapter works with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domainclust.errors import DomainclustError

DEFAULTS: dict[str, Any] = {
    "tile_size": 64,  # px; EuroSAT-sized tiles of a 10 m Sentinel-2 scene
    "stride": None,  # px between tile origins; None: tile_size (no overlap)
    "bands": None,  # None: every band but alpha (band files: but pan); or a list of 1-based
    # indexes / descriptions; for one-file-per-band scenes band ids (B4), numbers, common names
    "resolution": None,  # band-file scenes: pixel size in CRS units; None: the finest band's
    "nodata": None,  # None: the file's nodata (or mask); a number overrides it for every band
    "max_nodata": 0.1,  # tiles with a larger nodata fraction are dropped
    "labels": None,  # a label raster, or a per-scene rule with {stem}: "./{stem}_labels.tif"
    "percentiles": [2, 98],  # robust range per band: float = (value - low) / (high - low)
    "stats_windows": 256,  # tile windows sampled over the dataset for the percentiles
    "stats_pixels": 1_000_000,  # valid pixels kept from that sample
    "dtype": "uint16",  # storage: uint16 (lossless for 8/16-bit sources) or uint8 (0..1 stretch)
    "seed": 0,  # for the statistics sample
    "max_scene_tiles": 100_000,  # a scene that would give more tiles is refused up front (a
    # header declaring 10^7 px rows writes blank tiles for hours): 20 000 px square at 64 px
}

BandRequest = tuple[int | str, ...]


@dataclass(frozen=True)
class GeoOptions:
    tile_size: int
    stride: int
    bands: BandRequest | None
    resolution: float | None
    nodata: float | None
    max_nodata: float
    labels: str | None
    percentiles: tuple[float, float]
    stats_windows: int
    stats_pixels: int
    dtype: str
    seed: int
    max_scene_tiles: int


def parse_options(options: dict[str, Any]) -> GeoOptions:
    """Defaults, then `options`; every value checked, errors naming the option and the fix."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise DomainclustError(
            f"unknown geotiff option(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}"
        )
    o = {**DEFAULTS, **options}
    tile_size = _int(o["tile_size"], "tile_size", minimum=8)
    stride = tile_size if o["stride"] is None else _int(o["stride"], "stride", minimum=1)
    nodata = o["nodata"]
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, (int, float))):
        raise DomainclustError(f"nodata must be a number (or empty for the file's), got {nodata!r}")
    max_nodata = o["max_nodata"]
    if isinstance(max_nodata, bool) or not isinstance(max_nodata, (int, float)) or not (
        0.0 <= max_nodata <= 1.0
    ):
        raise DomainclustError(f"max_nodata must be a fraction in [0, 1], got {max_nodata!r}")
    labels = o["labels"]
    if labels is not None and not isinstance(labels, str):
        raise DomainclustError(
            f"labels must be a raster path or a rule with {{stem}}, got {labels!r}; on the command "
            "line write --set labels=./{stem}_labels.tif (a value starting with '{' needs quotes)"
        )
    pct = o["percentiles"]
    if (
        not isinstance(pct, (list, tuple)) or len(pct) != 2
        or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pct)
        or not 0 <= pct[0] < pct[1] <= 100
    ):
        raise DomainclustError(f"percentiles must be [low, high] with 0 <= low < high <= 100, "
                               f"got {pct!r}")
    resolution = o["resolution"]
    if resolution is not None and (
        isinstance(resolution, bool) or not isinstance(resolution, (int, float))
        or not resolution > 0 or resolution == float("inf")
    ):
        raise DomainclustError(f"resolution must be a pixel size > 0 in the scenes' CRS units "
                               f"(e.g. 10 for metres), or empty for the finest band's, "
                               f"got {resolution!r}")
    if o["dtype"] not in ("uint16", "uint8"):
        raise DomainclustError(f"dtype must be uint16 or uint8, got {o['dtype']!r}")
    return GeoOptions(
        tile_size=tile_size, stride=stride, bands=_bands(o["bands"]),
        resolution=None if resolution is None else float(resolution),
        nodata=None if nodata is None else float(nodata), max_nodata=float(max_nodata),
        labels=labels, percentiles=(float(pct[0]), float(pct[1])),
        stats_windows=_int(o["stats_windows"], "stats_windows", minimum=1),
        stats_pixels=_int(o["stats_pixels"], "stats_pixels", minimum=100),
        dtype=o["dtype"], seed=_int(o["seed"], "seed", minimum=0),
        max_scene_tiles=_int(o["max_scene_tiles"], "max_scene_tiles", minimum=1),
    )


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DomainclustError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _bands(value: Any) -> BandRequest | None:
    """None, one band, a list, or a comma-separated string (`--set bands=B02,B03,B04`)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise DomainclustError(f"bands must be a list of 1-based indexes or descriptions, "
                               f"got {value!r}")
    out: list[int | str] = []
    for band in value:
        if isinstance(band, str) and band.isdigit():
            band = int(band)
        if isinstance(band, bool) or not isinstance(band, (int, str)) or (
            isinstance(band, int) and band < 1
        ):
            raise DomainclustError(
                f"bands: {band!r} is neither a 1-based band index (1, 2, ...) nor a band "
                "description"
            )
        out.append(band)
    if len(set(out)) != len(out):
        raise DomainclustError(f"bands lists a band twice: {value!r}")
    return tuple(out)
