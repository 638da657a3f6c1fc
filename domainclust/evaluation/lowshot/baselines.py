"""What a practitioner tries before any network: the pixels themselves, and channel statistics."""

from __future__ import annotations

import torch

BASELINES = ("raw_pixels", "channel_stats")


def raw_pixels(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float tiles → (N, C·H·W): every pixel of every channel."""
    return torch.flatten(x, 1)


def channel_stats(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float tiles → (N, 2C): each channel's mean and standard deviation."""
    flat = torch.flatten(x, 2)
    return torch.cat([flat.mean(2), flat.std(2, unbiased=False)], dim=1)


def baseline_features(name: str, x: torch.Tensor) -> torch.Tensor:
    return {"raw_pixels": raw_pixels, "channel_stats": channel_stats}[name](x)
