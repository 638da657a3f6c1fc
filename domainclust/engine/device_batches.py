"""The staged subset as one tensor in GPU (or pinned host) memory, and the training batches
drawn from it: index, convert to float and augment on the device, batch by batch.

The tiles stay in their storage dtype (uint8 is 4× smaller than float32). uint16 tiles are
kept as an int16 view (indexing of uint16 is not implemented on every device) and
converted back when a batch is made. On CPU the same code runs on host tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from domainclust.engine.batch_augment import BatchAugment

GPU_FRACTION = 0.4  # stage on the GPU while the subset takes at most this share of free memory


class FloatBatches(Protocol):
    """Anything extraction can read in order as float batches."""

    def __len__(self) -> int: ...

    def float_batches(self, *, batch_size: int, tile_size: int) -> Iterator[torch.Tensor]: ...


class StagedTiles:
    """(N, C, H, W) tiles on `device` or in pinned host memory, with per-channel scale/offset."""

    def __init__(
        self, tiles: np.ndarray, *, scale: np.ndarray, offset: np.ndarray, device: torch.device
    ) -> None:
        self.device = device
        self.unsigned16 = tiles.dtype == np.uint16
        host = torch.from_numpy(np.ascontiguousarray(tiles).view(np.int16) if self.unsigned16
                                else np.ascontiguousarray(tiles))
        self.on_device = device.type == "cpu" or fits_device(host.numel() * host.element_size(),
                                                             device)
        if device.type == "cpu":
            self.data = host
        elif self.on_device:
            self.data = host.to(device)
        else:
            self.data = host.pin_memory()
        self.scale = torch.as_tensor(np.asarray(scale, np.float32), device=device).view(1, -1, 1, 1)
        self.offset = torch.as_tensor(np.asarray(offset, np.float32), device=device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def to_float(self, raw: torch.Tensor) -> torch.Tensor:
        x = (raw.to(torch.int32) & 0xFFFF).float() if self.unsigned16 else raw.float()
        return x * self.scale + self.offset

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Float tiles at `index` on the device (a pinned gather + async copy when staged on host)."""
        if self.on_device:
            raw = self.data.index_select(0, index.to(self.data.device))
        else:
            buf = torch.empty((len(index), *self.data.shape[1:]), dtype=self.data.dtype,
                              pin_memory=True)
            torch.index_select(self.data, 0, index.cpu(), out=buf)
            raw = buf.to(self.device, non_blocking=True)
        return self.to_float(raw)

    def shard(self, part: slice) -> StagedRange:
        return StagedRange(self, start=part.start or 0, stop=len(self) if part.stop is None
                           else part.stop)


class StagedRange:
    """Tiles start..stop-1 of a `StagedTiles`, read in order (feature extraction)."""

    def __init__(self, tiles: StagedTiles, *, start: int, stop: int) -> None:
        self.tiles, self.start, self.stop = tiles, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def float_batches(self, *, batch_size: int, tile_size: int) -> Iterator[torch.Tensor]:
        """Float batches resized to `tile_size`, in order."""
        for first in range(self.start, self.stop, batch_size):
            x = self.tiles.take(torch.arange(first, min(first + batch_size, self.stop)))
            if x.shape[-1] != tile_size:
                x = F.interpolate(x, size=(tile_size, tile_size), mode="bilinear", antialias=True)
            yield x


def fits_device(nbytes: int, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_FRACTION * free


class AugmentedBatches:
    """Training batches (augmented x, target y) for the sampler's positions, made on the device.

    Iterating yields len(positions) // batch_size full batches (like `drop_last`), each a
    batched gather from the staged tiles and one augmentation call.
    """

    def __init__(
        self,
        tiles: StagedTiles,
        targets: np.ndarray,
        *,
        positions: np.ndarray,
        batch_size: int,
        augment: BatchAugment,
    ) -> None:
        self.tiles, self.augment, self.batch_size = tiles, augment, batch_size
        self.positions = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(tiles.device)

    def __len__(self) -> int:
        return max(len(self.positions) // self.batch_size, 1 if len(self.positions) else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(len(self)):
            index = self.positions[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.augment(self.tiles.take(index))
            yield x, self.targets[index.to(self.targets.device)]
