"""Per-band robust statistics of a set of scenes, and the normalisation they define.

A first pass reads a seeded random sample of tile windows (never a whole scene), keeps a
bounded number of valid pixels (nodata, NaN, ±inf and implausible fill values such as
±3.4e38 left out, see `scenes.fill_values`), and takes per-band percentiles (2nd/98th by
default), so a few unflagged fill pixels cannot widen a band's stretch to nothing. Tiles are then stored so that `float = stored * scale + offset` equals
`(value - low) / (high - low)`: 16-bit reflectance is scaled by its real range, never by 255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from domainclust.modalities.geo.reader import open_scene
from domainclust.modalities.geo.scenes import Scene, gdal_message, tile_grid
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

# Float range a stretched (non-lossless) store keeps at least: uint16 keeps values far outside
# the percentile range (clouds, water, saturation), widened per band to the sample's extremes
# plus a margin; uint8 is the classic clipped 0..1 stretch.
STRETCH_RANGE = {"uint16": (-1.0, 3.0), "uint8": (0.0, 1.0)}
STRETCH_MARGIN = 0.1
LOSSLESS_SOURCES = {"uint16": ("uint8", "uint16"), "uint8": ("uint8",)}


@dataclass(frozen=True)
class Normalisation:
    """Per-channel `(value - low) / (high - low)`, and how it is packed into the storage dtype.

    `raw`: the source integers are stored unchanged (lossless) and the mapping lives entirely in
    the store's scale/offset; otherwise the normalised float is quantised over `stretch`.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    storage: str
    raw: bool
    stretch: tuple[tuple[float, float], ...]  # per channel: float range kept (clipped beyond)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.storage).max)

    def scale_offset(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.raw:
            scale = tuple(1.0 / (h - lo) for lo, h in zip(self.low, self.high))
            offset = tuple(-lo / (h - lo) for lo, h in zip(self.low, self.high))
            return scale, offset
        return (tuple((f1 - f0) / self.qmax for f0, f1 in self.stretch),
                tuple(f0 for f0, _ in self.stretch))

    def quantise(self, tiles: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
        """(n, C, T, T) source values, (n, T, T) validity → storage dtype (invalid pixels →
        0.0), and how many valid values fell outside the stored range and were clipped."""
        low = np.asarray(self.low, dtype=np.float64).reshape(1, -1, 1, 1)
        high = np.asarray(self.high, dtype=np.float64).reshape(1, -1, 1, 1)
        invalid = ~valid[:, None]
        if self.raw:
            fill = np.clip(np.rint(low), 0, self.qmax).astype(self.storage)
            out = tiles.astype(self.storage)
            np.copyto(out, np.broadcast_to(fill, out.shape), where=invalid)
            return out, 0  # lossless: every source value fits
        f0 = np.array([a for a, _ in self.stretch], np.float32).reshape(1, -1, 1, 1)
        f1 = np.array([b for _, b in self.stretch], np.float32).reshape(1, -1, 1, 1)
        with np.errstate(invalid="ignore", over="ignore"):
            span = (high - low).astype(np.float32)
            f = (tiles.astype(np.float32) - low.astype(np.float32)) / span
            f = np.where(invalid, np.float32(0.0), f)
            q = np.rint((f - f0) * (self.qmax / (f1 - f0)))
        clipped = int(np.count_nonzero((q < 0) | (q > self.qmax)))  # invalid pixels sit at 0.0
        return np.clip(q, 0, self.qmax).astype(self.storage), clipped


def choose_normalisation(
    low: np.ndarray, high: np.ndarray, *, storage: str, source_dtypes: set[str],
    minimum: np.ndarray, maximum: np.ndarray,
) -> Normalisation:
    """Lossless when every source fits the storage dtype; else a stretch covering the sample."""
    lossless = bool(source_dtypes) and source_dtypes <= set(LOSSLESS_SOURCES[storage])
    f0, f1 = STRETCH_RANGE[storage]
    stretch = []
    for lo, hi, vmin, vmax in zip(low, high, minimum, maximum):
        fmin, fmax = (vmin - lo) / (hi - lo), (vmax - lo) / (hi - lo)
        margin = STRETCH_MARGIN * (fmax - fmin)
        stretch.append((f0, f1) if storage == "uint8" else
                       (float(min(f0, fmin - margin)), float(max(f1, fmax + margin))))
    return Normalisation(low=tuple(float(v) for v in low), high=tuple(float(v) for v in high),
                         storage=storage, raw=lossless, stretch=tuple(stretch))


def robust_range(samples: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Per-column (low, high) percentiles of (N, C) samples; a flat band gets high = low + 1."""
    low = np.empty(samples.shape[1])
    high = np.empty(samples.shape[1])
    for c in range(samples.shape[1]):
        low[c], high[c] = np.percentile(samples[:, c].astype(np.float64), percentiles)
    high = np.where(high > low, high, low + 1.0)
    return low, high


@dataclass
class Sample:
    """The statistics pass's result: pooled valid pixels and what it learnt per scene."""

    values: np.ndarray  # (N, C) float32 valid pixels
    minimum: np.ndarray  # (C,) over every valid pixel of the sampled windows
    maximum: np.ndarray
    windows: int
    valid_per_scene: dict[int, int]  # scene index → valid pixels seen in its windows
    errors: dict[int, str]  # scene index → why its windows could not be read

    def summary(self) -> dict[str, Any]:
        return {"windows": self.windows, "pixels": len(self.values)}


def sample_pixels(
    scenes: list[Scene], *, tile_size: int, stride: int, windows: int, pixels: int, seed: int,
) -> Sample:
    """Read a seeded random sample of tile windows of every scene; keep ≤ `pixels` valid pixels."""
    grids = [tile_grid(s, tile_size=tile_size, stride=stride) for s in scenes]
    counts = [r * c for r, c in grids]
    total = max(1, sum(counts))
    per_scene = [min(n, max(2, round(windows * n / total))) for n in counts]
    quota = math.ceil(pixels / max(1, sum(per_scene)))
    channels = len(scenes[0].bands) if scenes else 0
    kept = [np.zeros((0, channels), np.float32)]
    extremes = [np.zeros((0, channels), np.float32)]  # each window's per-band min and max rows
    valid_seen: dict[int, int] = {}
    errors: dict[int, str] = {}
    for scene, (rows, cols), n in tqdm(list(zip(scenes, grids, per_scene)), desc="band statistics",
                                       unit="scene", disable=None, leave=False):
        rng = np.random.default_rng([seed, scene.index])
        picks = sorted(int(p) for p in rng.choice(rows * cols, size=n, replace=False))
        origins = [(p // cols * stride, p % cols * stride) for p in picks]
        try:
            values, low_high, n_valid = _sample_scene(scene, origins, tile_size=tile_size,
                                                      quota=quota, rng=rng)
        except RasterioError as exc:
            errors[scene.index] = f"cannot read its pixels ({gdal_message(exc)})"
            continue
        valid_seen[scene.index] = n_valid
        kept += values
        extremes += low_high
    stacked = np.concatenate(extremes)
    return Sample(values=np.concatenate(kept), minimum=stacked.min(axis=0, initial=np.inf),
                  maximum=stacked.max(axis=0, initial=-np.inf), windows=int(sum(per_scene)),
                  valid_per_scene=valid_seen, errors=errors)


def _sample_scene(
    scene: Scene, origins: list[tuple[int, int]], *, tile_size: int, quota: int,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """One scene's valid pixels (≤ `quota` per window), per-window extremes, and the valid count."""
    out: list[np.ndarray] = []
    extremes: list[np.ndarray] = []
    n_valid = 0
    first_error: RasterioError | None = None
    with open_scene(scene) as reader:
        for row, col in origins:
            try:
                data, valid = reader.read(Window(col, row, tile_size, tile_size))
            except RasterioError as exc:  # a damaged part (a truncated file): sample the rest
                first_error = first_error or exc
                continue
            values = data[:, valid].T.astype(np.float32)  # (n_valid, C)
            n_valid += len(values)
            if len(values):
                extremes.append(np.stack([values.min(axis=0), values.max(axis=0)]))
            if len(values) > quota:
                values = values[rng.choice(len(values), size=quota, replace=False)]
            out.append(values)
    if first_error is not None and not out:
        raise first_error
    return out, extremes, n_valid
