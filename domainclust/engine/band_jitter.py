"""Spectral augmentation: per-band gain and offset, and band dropout, on the network's input.

Multi-band scenes differ in illumination, atmosphere and sensor calibration band by band; the
literature's remedy for small pools is to jitter each band's level and drop a band now and then,
so clusters cannot form on one scene's calibration. albumentations' MultiplicativeNoise and its
like clip float images to [0, 1], which would destroy the standardised input, so this step acts
on the batch after standardisation, with torch, on whatever device the batch is on (the same draws on
CPU and GPU). In a recipe it is one more entry of `data.augment`:

    - BandJitter: {gain: 0.1, offset: 0.1, drop: 0.2}

gain: each band is multiplied by a factor drawn from [1 - gain, 1 + gain]; offset: a shift drawn
from [-offset, offset] (in units of the band's standard deviation) is added; p: the share of
tiles jittered; drop: the share of tiles of which one band, drawn, is set to its mean (0).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from domainclust.errors import DomainclustError

NAME = "BandJitter"
_ARGS = ("gain", "offset", "drop", "p")


@dataclass(frozen=True)
class BandJitter:
    gain: float = 0.1
    offset: float = 0.1
    drop: float = 0.0
    p: float = 1.0

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """`x` (B, C, H, W) standardised input → jittered copy; draws come from `generator`
        (on CPU), so a seed gives the same batch on every device."""
        b, c = x.shape[:2]
        on = torch.rand(b, 1, generator=generator) < self.p
        gain = 1 + (2 * torch.rand(b, c, generator=generator) - 1) * self.gain
        shift = (2 * torch.rand(b, c, generator=generator) - 1) * self.offset
        gain = torch.where(on, gain, torch.ones_like(gain))
        shift = torch.where(on, shift, torch.zeros_like(shift))
        dropped = torch.rand(b, generator=generator) < self.drop
        band = torch.randint(c, (b,), generator=generator)
        if c > 1:  # a one-band tile has no band to spare
            keep = torch.ones(b, c)
            keep[dropped, band[dropped]] = 0
            gain, shift = gain * keep, shift * keep
        gain, shift = gain.to(x.device, x.dtype), shift.to(x.device, x.dtype)
        return x * gain[:, :, None, None] + shift[:, :, None, None]


def parse_band_jitter(spec: list[dict[str, Any]]) -> BandJitter | None:
    """The recipe's BandJitter entry (at most one), its arguments checked; None without one."""
    found = [item[NAME] for item in spec if isinstance(item, dict) and NAME in item]
    if not found:
        return None
    if len(found) > 1:
        raise DomainclustError(f"augment: {NAME} is given {len(found)} times; give it once")
    kwargs = dict(found[0] or {})
    unknown = set(kwargs) - set(_ARGS)
    if unknown:
        raise DomainclustError(f"augment: {NAME} takes {', '.join(_ARGS)}; "
                               f"got {', '.join(sorted(unknown))}")
    try:
        jitter = BandJitter(**{k: float(v) for k, v in kwargs.items()})
    except (TypeError, ValueError):
        raise DomainclustError(f"augment: {NAME} arguments must be numbers, got {kwargs}") from None
    ranges = {"gain": (jitter.gain < 1, "[0, 1)"), "offset": (True, "[0, inf)"),
              "drop": (jitter.drop <= 1, "[0, 1]"), "p": (jitter.p <= 1, "[0, 1]")}
    for key, (below_top, bound) in ranges.items():
        value = getattr(jitter, key)
        if value < 0 or not below_top:
            raise DomainclustError(f"augment: {NAME} {key} must be in {bound}, got {value}")
    return jitter


def without_band_jitter(spec: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipe's other transforms (those the per-tile or batched augmentation applies)."""
    return [item for item in spec if not (isinstance(item, dict) and NAME in item)]


class JitteredBatches:
    """Training batches (x, y) with `jitter` applied to x; the draws are seeded by `seed`."""

    def __init__(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                 jitter: BandJitter, seed: int) -> None:
        self.batches, self.jitter, self.seed = batches, jitter, seed

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        for x, y in self.batches:
            yield self.jitter(x, generator=generator), y
