"""Augmentation of whole batches with torch ops, on the tiles' device (the GPU fast path).

Per-sample albumentations on CPU workers cannot feed a large GPU; here every transform of the
recipe that is a crop, flip or quarter turn becomes one 2×3 affine map per sample, the maps are
composed, and one `grid_sample` per batch produces the augmented batch. The crop boxes follow
albumentations'/torchvision's RandomResizedCrop (10 tries, then the centre crop with the ratio
clipped). A recipe with any other transform has no batched form: the caller keeps the CPU path
(BandJitter, applied to whole batches on either path, does not count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from domainclust.engine.band_jitter import without_band_jitter

SUPPORTED = ("RandomResizedCrop", "HorizontalFlip", "VerticalFlip", "RandomRotate90")
ATTEMPTS = 10


@dataclass(frozen=True)
class Step:
    name: str
    p: float = 1.0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def parse_spec(spec: list[dict[str, Any]]) -> list[Step] | None:
    """The recipe as batched steps, or None when a transform or argument has no batched form."""
    steps = []
    for item in without_band_jitter(spec):  # applied to whole batches by the training loop
        if not isinstance(item, dict) or len(item) != 1:
            return None
        (name, kwargs), = item.items()
        kwargs = dict(kwargs or {})
        kwargs.pop("size", None)  # the output size is the model's tile size either way
        if name not in SUPPORTED or set(kwargs) - {"p", "scale", "ratio"}:
            return None
        default_p = 1.0 if name == "RandomResizedCrop" else 0.5
        steps.append(Step(
            name=name, p=float(kwargs.get("p", default_p)),
            scale=tuple(kwargs.get("scale", (0.08, 1.0))),  # type: ignore[arg-type]
            ratio=tuple(kwargs.get("ratio", (3 / 4, 4 / 3))),  # type: ignore[arg-type]
        ))
    return steps


def crop_boxes(
    n: int, *, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """(n, 4) crop boxes (x0, y0, w, h) in pixels, RandomResizedCrop's distribution."""
    area = height * width
    s = torch.empty(n, ATTEMPTS).uniform_(scale[0], scale[1], generator=generator) * area
    log_r = torch.empty(n, ATTEMPTS).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                              generator=generator)
    r = torch.exp(log_r)
    w = torch.sqrt(s * r).round()
    h = torch.sqrt(s / r).round()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = ok.float().argmax(1)
    w = w.gather(1, first[:, None])[:, 0]
    h = h.gather(1, first[:, None])[:, 0]
    # No valid try: the whole tile, with its ratio clipped into the range (centre crop).
    none = ~ok.any(1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(none, torch.tensor(float(fw)), w)
    h = torch.where(none, torch.tensor(float(fh)), h)
    u = torch.rand(n, 2, generator=generator)
    x0 = torch.floor(u[:, 0] * (width - w + 1))
    y0 = torch.floor(u[:, 1] * (height - h + 1))
    x0 = torch.where(none, (width - w) / 2, x0)
    y0 = torch.where(none, (height - h) / 2, y0)
    return torch.stack([x0, y0, w, h], 1)


def _crop_maps(boxes: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """Affine maps from output to input coordinates (normalised, align_corners=False)."""
    x0, y0, w, h = boxes.unbind(1)
    theta = torch.zeros(len(boxes), 3, 3)
    theta[:, 0, 0] = w / width
    theta[:, 1, 1] = h / height
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    theta[:, 2, 2] = 1
    return theta


def _step_maps(
    step: Step, n: int, *, height: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    eye = torch.eye(3).repeat(n, 1, 1)
    apply = torch.rand(n, generator=generator) < step.p
    if step.name == "RandomResizedCrop":
        boxes = crop_boxes(n, height=height, width=width, scale=step.scale, ratio=step.ratio,
                           generator=generator)
        theta = _crop_maps(boxes, height=height, width=width)
    elif step.name in ("HorizontalFlip", "VerticalFlip"):
        theta = eye.clone()
        axis = 0 if step.name == "HorizontalFlip" else 1
        theta[:, axis, axis] = -1
    else:  # RandomRotate90: k quarter turns, k uniform in 0..3
        k = torch.randint(0, 4, (n,), generator=generator).float() * (math.pi / 2)
        cos, sin = torch.cos(k).round(), torch.sin(k).round()
        theta = eye.clone()
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return torch.where(apply[:, None, None], theta, eye)


class BatchAugment:
    """Crops, flips and quarter turns of a (B, C, H, W) float batch in one resampling."""

    def __init__(self, steps: list[Step], *, tile_size: int, seed: int) -> None:
        self.steps, self.tile_size = steps, tile_size
        self.generator = torch.Generator().manual_seed(seed)  # maps are drawn on the host: tiny

    def maps(self, n: int, *, height: int, width: int) -> torch.Tensor:
        """(n, 2, 3) output→input maps: the steps composed in recipe order."""
        total = torch.eye(3).repeat(n, 1, 1)
        for step in self.steps:
            total = total @ _step_maps(step, n, height=height, width=width,
                                       generator=self.generator)
        return total[:, :2]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        return self.apply(x, self.maps(n, height=height, width=width))

    def apply(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Resample `x` through the (n, 2, 3) maps `theta`."""
        n, c = x.shape[:2]
        theta = theta.to(x.device, x.dtype)
        grid = F.affine_grid(theta, [n, c, self.tile_size, self.tile_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_batch_augmentation(
    spec: list[dict[str, Any]], *, tile_size: int, seed: int
) -> BatchAugment | None:
    steps = parse_spec(spec)
    return None if steps is None else BatchAugment(steps, tile_size=tile_size, seed=seed)
