"""Pure array steps from a volume to tiles: in-plane resampling, the tile grid, background
filtering and 2.5-D slab gathering. No I/O, so tests call them with plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from domainclust.data.ingest_item import Skip


def resampled_shape(
    shape: tuple[int, ...], *, spacing_yx: tuple[float, float], target: float | None, tile: int
) -> tuple[int, int, int]:
    """(Z, Y, X) of a (Z, Y, X) volume once resampled in-plane to `target` mm and padded to a
    tile: what the volume will take in memory, known from its header alone."""
    z, y, x = shape
    if target is not None:
        y, x = (max(1, round(y * spacing_yx[0] / target)),
                max(1, round(x * spacing_yx[1] / target)))
    return z, max(y, tile), max(x, tile)


def check_resampled_size(
    shape: tuple[int, ...], *, spacing_yx: tuple[float, float], target: float | None,
    tile: int, limit: int,
) -> None:
    """Skip, before allocating it, a volume whose resampled size is above `limit` voxels."""
    z, y, x = resampled_shape(shape, spacing_yx=spacing_yx, target=target, tile=tile)
    if z * y * x > limit:
        raise Skip(
            f"would be {z}x{y}x{x} voxels once resampled to {target} mm and padded to "
            f"{tile} px ({z * y * x * 4 / 1e9:.1f} GB as float32; read {shape[0]}x{shape[1]}x"
            f"{shape[2]} at {spacing_yx[0]:g}x{spacing_yx[1]:g} mm), above max_voxels={limit}; "
            "check the header's voxel size and units, or raise max_voxels"
        )


def resample_inplane(
    values: np.ndarray, *, spacing_yx: tuple[float, float], target: float | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """(Z, Y, X) resampled in-plane to `target` mm pixels; slices are left as they are.

    Bilinear, with antialiasing when shrinking. torch's antialiased interpolate is used
    rather than MONAI's `Resize(anti_aliasing=True)`: same result class, measured ~3.5x
    faster on a 60x512x512 CT (its Gaussian pre-filter dominates).
    """
    if target is None:
        return values, spacing_yx
    dy, dx = spacing_yx
    size = (max(1, round(values.shape[1] * dy / target)),
            max(1, round(values.shape[2] * dx / target)))
    if size == values.shape[1:]:
        return values, spacing_yx
    shrink = size[0] < values.shape[1] or size[1] < values.shape[2]
    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(values))[None], size=size,
                            mode="bilinear", align_corners=False, antialias=shrink)
    # Report the spacing actually reached (rounding the size changes it slightly).
    reached = (dy * values.shape[1] / size[0], dx * values.shape[2] / size[1])
    return out[0].numpy(), reached


def pad_to_tile(
    values: np.ndarray, background: np.ndarray, *, tile: int, fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pad slices smaller than a tile (bottom/right) with `fill`, marked as background."""
    pad_y, pad_x = max(0, tile - values.shape[1]), max(0, tile - values.shape[2])
    if not (pad_y or pad_x):
        return values, background
    widths = ((0, 0), (0, pad_y), (0, pad_x))
    return (np.pad(values, widths, constant_values=fill),
            np.pad(background, widths, constant_values=True))


def tile_starts(length: int, *, tile: int, stride: int) -> np.ndarray:
    """Tile origins along one axis; the last tile is moved back to end at the border."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return np.asarray(starts, dtype=np.int64)


@dataclass(frozen=True)
class TileSelection:
    """Origins of the kept tiles (centre slice, row, column) and how many were dropped."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    dropped: int


def select_tiles(
    background: np.ndarray,
    *,
    centres: np.ndarray,
    tile: int,
    stride: int,
    max_background: float,
) -> TileSelection:
    """Grid tiles on the `centres` slices whose background fraction is at most `max_background`.

    Fractions come from a summed-area table of the background mask, one slice at a time.
    """
    ys = tile_starts(background.shape[1], tile=tile, stride=stride)
    xs = tile_starts(background.shape[2], tile=tile, stride=stride)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    gy, gx = gy.ravel(), gx.ravel()
    limit = max_background * tile * tile
    keep_z, keep_y, keep_x, dropped = [], [], [], 0
    for z in centres:
        table = np.zeros((background.shape[1] + 1, background.shape[2] + 1), dtype=np.int64)
        np.cumsum(np.cumsum(background[z], axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
        count = (table[gy + tile, gx + tile] - table[gy, gx + tile]
                 - table[gy + tile, gx] + table[gy, gx])
        keep = count <= limit
        dropped += int((~keep).sum())
        keep_z.append(np.full(int(keep.sum()), z, dtype=np.int64))
        keep_y.append(gy[keep])
        keep_x.append(gx[keep])
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return TileSelection(z=cat(keep_z), y=cat(keep_y), x=cat(keep_x), dropped=dropped)


def slab_indices(
    z: np.ndarray, *, slab: int, n_slices: int, runs: list[tuple[int, int]] | None = None
) -> np.ndarray:
    """(n, slab) slice indices centred on `z`; at the ends of a volume, or of a run of
    contiguous slices (`runs`: (start, stop) pairs), the edge slice repeats."""
    offsets = np.arange(slab) - slab // 2
    if not runs:
        runs = [(0, n_slices)]
    starts = np.asarray([a for a, _ in runs])
    stops = np.asarray([b for _, b in runs])
    run = np.searchsorted(starts, z, side="right") - 1
    return np.clip(z[:, None] + offsets[None, :], starts[run][:, None], stops[run][:, None] - 1)


def gather_tiles(
    values: np.ndarray, *, slabs: np.ndarray, y: np.ndarray, x: np.ndarray, tile: int
) -> np.ndarray:
    """(n, slab, tile, tile) copies of the tiles at (slabs, y, x) from a (Z, Y, X) volume."""
    windows = sliding_window_view(values, (tile, tile), axis=(1, 2))  # a view, no copy
    return windows[slabs, y[:, None], x[:, None]]
