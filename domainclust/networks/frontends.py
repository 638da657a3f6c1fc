"""Fixed gradient front-ends: they keep clusters from forming on colour or absolute intensity.

Selected by name. None of them has trainable parameters; their filters are buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from domainclust.config import FRONTENDS, one_of
from domainclust.errors import DomainclustError

# Binomial 3x3 low-pass: the local level of a channel, on the same support as the gradients.
_LEVEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0

_SOBEL = torch.tensor(
    [
        [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],  # d/dx
        [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],  # d/dy
    ]
)


class GradientFrontEnd(nn.Module):
    """Channels → (optional grayscale) → Sobel x/y, with some channels passed through raw.

    Args:
        kind: `none` (identity), `sobel` (mean of the gradient channels, then Sobel x/y:
            2 outputs, as the paper), `sobel-per-channel` (Sobel x/y of each channel: 2 per channel),
            `sobel-level` (Sobel x/y and a low-pass level of each channel: 3 per channel; for
            spectra, depth or HU windows, where the level itself carries the signal).
        in_channels: channels of the input tensor.
        raw: indices of channels that bypass the gradient filter (e.g. depth) and are
            appended unchanged after the gradient outputs.
    """

    def __init__(self, *, kind: str, in_channels: int, raw: tuple[int, ...] = ()) -> None:
        super().__init__()
        if kind not in FRONTENDS:
            raise DomainclustError(f"unknown front-end '{kind}'; choose {one_of(FRONTENDS)}")
        if any(not 0 <= r < in_channels for r in raw) or len(set(raw)) != len(raw):
            raise DomainclustError(f"raw channels {raw} do not fit {in_channels} input channels")
        grad = [c for c in range(in_channels) if c not in raw]
        if kind != "none" and not grad:
            raise DomainclustError(f"front-end '{kind}' needs at least one channel that is not raw")
        self.kind = kind
        self.in_channels = in_channels
        self.register_buffer("grad_idx", torch.tensor(grad, dtype=torch.long), persistent=False)
        self.register_buffer("raw_idx", torch.tensor(raw, dtype=torch.long), persistent=False)
        filters = torch.cat([_SOBEL, _LEVEL[None]]) if kind == "sobel-level" else _SOBEL
        self.register_buffer("filters", filters.unsqueeze(1).clone(), persistent=False)
        n_grad = {"none": len(grad), "sobel": 2, "sobel-per-channel": 2 * len(grad),
                  "sobel-level": 3 * len(grad)}[kind]
        self.out_channels = n_grad + len(raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise DomainclustError(f"front-end expects {self.in_channels} channels, got {x.shape[1]}")
        if self.kind == "none":
            return x
        g = x.index_select(1, self.grad_idx)
        if self.kind == "sobel":
            g = g.mean(dim=1, keepdim=True)
        # Replicated borders: zero padding would turn a tile's brightness into a border edge.
        g = F.pad(g, (1, 1, 1, 1), mode="replicate")
        c = g.shape[1]
        weight = self.filters.to(x.dtype).repeat(c, 1, 1, 1)
        g = F.conv2d(g, weight, groups=c)
        if len(self.raw_idx):
            g = torch.cat([g, x.index_select(1, self.raw_idx)], dim=1)
        return g
