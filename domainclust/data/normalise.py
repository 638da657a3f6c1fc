"""The one map from stored tiles to network input: `x = tile * scale[c] + offset[c]`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_input(tiles: torch.Tensor, *, scale: Sequence[float] | np.ndarray,
             offset: Sequence[float] | np.ndarray) -> torch.Tensor:
    """(N, C, H, W) tiles of the storage dtype → float32 input, per channel."""
    s = torch.as_tensor(np.asarray(scale, np.float32), device=tiles.device).view(1, -1, 1, 1)
    o = torch.as_tensor(np.asarray(offset, np.float32), device=tiles.device).view(1, -1, 1, 1)
    return tiles.float() * s + o
