"""Windowed reads of a scene, whichever way it is stored: one multi-band file or one file per band.

Both give the same thing: (B, h, w) pixels on the scene's grid and an (h, w) validity mask.
For a band-file scene a band already on the grid is read as is; any other goes through a GDAL
warped VRT onto the grid (bilinear; its alpha band marks pixels the band does not cover or
holds as nodata), and the QA band (nearest, so bits are never blended) removes fill and cloud.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio
from domainclust.modalities.geo.qa import unusable
from domainclust.modalities.geo.scenes import Scene, read_window, valid_pixels
from domainclust.modalities.geo.stack import BandStack
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window


class WindowReader(Protocol):
    def read(self, window: Window, *, first_band_only: bool = False
             ) -> tuple[np.ndarray, np.ndarray]: ...


class FileReader:
    """A scene that is one raster file."""

    def __init__(self, src: DatasetReader, scene: Scene) -> None:
        self.src, self.scene = src, scene

    def read(self, window: Window, *, first_band_only: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        bands = self.scene.bands[:1] if first_band_only else None
        return read_window(self.src, self.scene, window, bands=bands)


class StackReader:
    """A scene of band files: each band read on, or warped onto, the scene's grid."""

    def __init__(self, stack: BandStack, bands: list[DatasetReader | WarpedVRT],
                 qa: DatasetReader | WarpedVRT | None) -> None:
        self.stack, self.bands, self.qa = stack, bands, qa

    def read(self, window: Window, *, first_band_only: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        n = 1 if first_band_only else len(self.bands)
        planes = []
        valid = np.ones((int(window.height), int(window.width)), dtype=bool)
        for info, src in zip(self.stack.files[:n], self.bands[:n], strict=True):
            plane, covered = _read(src, window, on_grid=info.on_grid)
            valid &= valid_pixels(plane[None], (info.nodata,)) if covered is None else covered
            planes.append(plane)
        if self.qa is not None and self.stack.qa is not None:
            qa, covered = _read(self.qa, window, on_grid=self.stack.qa.on_grid)
            valid &= ~unusable(qa, self.stack.qa.layout)
            if covered is not None:
                valid &= covered
        return np.stack(planes), valid


def _read(src: DatasetReader | WarpedVRT, window: Window, *, on_grid: bool
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """A band's window, and for a warped band where the warp covered it: the band and the VRT's
    alpha come from one read, so each window is warped once."""
    if on_grid:
        return src.read(1, window=window), None
    plane, alpha = src.read(window=window)
    return plane, alpha > 0


@contextmanager
def open_scene(scene: Scene) -> Iterator[WindowReader]:
    """A reader of windows of `scene` (its files stay open until the block ends)."""
    if scene.stack is None:
        with rasterio.open(scene.path) as src:
            yield FileReader(src, scene)
        return
    with ExitStack() as files:
        def on_grid(path: str, *, fits: bool, resampling: str, nodata: float | None
                    ) -> DatasetReader | WarpedVRT:
            src = files.enter_context(rasterio.open(path))
            if fits:
                return src
            return files.enter_context(WarpedVRT(
                src, crs=scene.crs, transform=Affine(*scene.transform), width=scene.width,
                height=scene.height, resampling=Resampling[resampling], src_nodata=nodata,
                add_alpha=True))

        stack = scene.stack
        bands = [on_grid(f.path, fits=f.on_grid, resampling=f.resampling, nodata=f.nodata)
                 for f in stack.files]
        qa = None if stack.qa is None else on_grid(
            stack.qa.path, fits=stack.qa.on_grid, resampling=Resampling.nearest.name,
            nodata=None)
        yield StackReader(stack, bands, qa)


def scene_has_valid_pixel(scene: Scene, *, block: int = 1024) -> bool:
    """Exact check, one band, block by block: a pixel is valid only if its first band is."""
    with open_scene(scene) as reader:
        for row in range(0, scene.height, block):
            for col in range(0, scene.width, block):
                window = Window(col, row, min(block, scene.width - col),
                                min(block, scene.height - row))
                if reader.read(window, first_band_only=True)[1].any():
                    return True
    return False


@dataclass
class BlockRead:
    """A block of tile windows as far as it decodes: pixels, validity, and the tiles lost."""

    data: np.ndarray  # (B, h, w)
    valid: np.ndarray  # (h, w); False where nothing was decoded
    lost: list[int]  # indices into the tile offsets whose pixels cannot be decoded
    error: RasterioError | None = None  # why, when some were lost


def read_block(reader: WindowReader, window: Window, offsets: list[tuple[int, int]], *,
               tile_size: int) -> BlockRead:
    """`window` in one read; if that fails (a truncated or damaged file), tile by tile, so
    that the tiles whose pixels decode are kept and the others are counted as lost. Raises
    the first error when no tile decodes."""
    try:
        data, valid = reader.read(window)
        return BlockRead(data, valid, [])
    except RasterioError as exc:
        error = exc
    shape = (int(window.height), int(window.width))
    data, valid = None, np.zeros(shape, dtype=bool)
    lost = []
    for k, (r, c) in enumerate(offsets):
        try:
            tile, ok = reader.read(Window(window.col_off + c, window.row_off + r, tile_size,
                                          tile_size))
        except RasterioError:
            lost.append(k)
            continue
        if data is None:
            data = np.zeros((tile.shape[0], *shape), dtype=tile.dtype)
        data[:, r:r + tile_size, c:c + tile_size] = tile
        valid[r:r + tile_size, c:c + tile_size] = ok
    if data is None:
        raise error
    return BlockRead(data, valid, lost, error)
