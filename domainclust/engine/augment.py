"""Training-time augmentation (albumentations) and the dataset over a staged subset.

The recipe lists albumentations transforms by class name with their arguments, e.g.
`[{RandomResizedCrop: {scale: [0.08, 1.0]}}, {HorizontalFlip: {p: 0.5}}]`; crops and resizes
get their output size from the tile size when the recipe does not give one.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home on import

import albumentations as A
import numpy as np
import torch

from domainclust.data.normalise import to_input
from domainclust.engine.band_jitter import without_band_jitter
from domainclust.errors import DomainclustError

_SIZED = {"RandomResizedCrop", "RandomSizedCrop"}  # take size=(h, w)
_HEIGHT_WIDTH = {"CenterCrop", "RandomCrop", "Resize"}  # take height=, width=


def build_augmentation(spec: list[dict[str, Any]], *, tile_size: int, seed: int) -> A.Compose:
    steps = []
    for item in without_band_jitter(spec):  # applied to whole batches, after standardisation
        if not isinstance(item, dict) or len(item) != 1:
            raise DomainclustError(f"augment entries must be {{Name: {{args}}}}, got {item!r}")
        (name, kwargs), = item.items()
        cls = getattr(A, name, None)
        if cls is None:
            raise DomainclustError(f"augment: albumentations has no transform '{name}'")
        kwargs = dict(kwargs or {})
        if name in _SIZED and "size" not in kwargs:
            kwargs["size"] = (tile_size, tile_size)
        if name in _HEIGHT_WIDTH and "height" not in kwargs and "width" not in kwargs:
            kwargs.update(height=tile_size, width=tile_size)
        for key in ("scale", "ratio"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        try:
            steps.append(cls(**kwargs))
        except (TypeError, ValueError) as exc:
            raise DomainclustError(f"augment: invalid arguments for {name}: {exc}") from None
    return A.Compose(steps, seed=seed)


class AugmentedTiles(torch.utils.data.Dataset):
    """Staged tiles (N, C, H, W, storage dtype) → augmented float tensors with their targets.

    uint8 tiles (albumentations' native type) are augmented as they are and turned into float
    per batch by `collate`, which is several times cheaper than a float copy of every tile;
    other dtypes are made float first. Crops, flips and turns give the same tiles either way.
    """

    def __init__(
        self,
        tiles: np.ndarray,
        targets: np.ndarray,
        *,
        scale: np.ndarray,
        offset: np.ndarray,
        transform: A.Compose,
    ) -> None:
        self.tiles, self.targets, self.transform = tiles, targets, transform
        self.scale, self.offset = scale, offset
        self.native = tiles.dtype == np.uint8

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        tile = self.tiles[i]
        if not self.native:
            tile = to_input(torch.from_numpy(np.ascontiguousarray(tile))[None], scale=self.scale,
                            offset=self.offset)[0].numpy()
        out = self.transform(image=np.ascontiguousarray(np.moveaxis(tile, 0, -1)))["image"]
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(out, -1, 0))), int(self.targets[i])

    def collate(self, batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """A DataLoader's `collate_fn`: the batch stacked, as float input."""
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch], dtype=torch.int64)
        return (to_input(x, scale=self.scale, offset=self.offset) if self.native else x), y


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream, derived from the epoch seed."""
    info = torch.utils.data.get_worker_info()
    transform = info.dataset.transform
    transform.set_random_seed(int(transform.seed) * 1000 + worker_id)
