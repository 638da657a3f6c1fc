"""Feature extraction over staged tiles: eval mode, the full tile, batched, on the device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from domainclust.data.store import TileStore
from domainclust.engine.device_batches import FloatBatches
from domainclust.networks.model import DeepClusterNet


def tile_batches(
    tiles: np.ndarray,
    *,
    store: TileStore,
    batch_size: int,
    device: torch.device,
    tile_size: int,
) -> Iterator[torch.Tensor]:
    """Float input batches on `device`, resized to `tile_size` when the store's differs."""
    pin = device.type == "cuda"
    for start in range(0, len(tiles), batch_size):
        raw = torch.from_numpy(np.ascontiguousarray(tiles[start : start + batch_size]))
        if pin:
            raw = raw.pin_memory()
        x = store.to_float(raw.to(device, non_blocking=True))
        if x.shape[-1] != tile_size:
            x = F.interpolate(x, size=(tile_size, tile_size), mode="bilinear", antialias=True)
        yield x


@torch.no_grad()
def extract_features(
    model: DeepClusterNet,
    tiles: np.ndarray | FloatBatches,
    *,
    store: TileStore,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
    relu: bool = False,
) -> Iterator[torch.Tensor]:
    """Pre-ReLU features (float32, on the device) of every tile, batch by batch; post-ReLU
    with `relu` (the ablation of the paper's choice).

    `tiles` is a host array, or tiles already staged on the device (`float_batches`).
    """
    model.eval()
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    tile_size = model.spec.tile_size
    if isinstance(tiles, np.ndarray):
        batches = tile_batches(tiles, store=store, batch_size=batch_size, device=device,
                               tile_size=tile_size)
    else:
        batches = tiles.float_batches(batch_size=batch_size, tile_size=tile_size)
    with tqdm(total=len(tiles), desc="extract", unit="tile", disable=not progress, leave=False) as bar:
        for x in batches:
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                f = model.features(x)
            bar.update(len(x))
            yield torch.relu(f.float()) if relu else f.float()
