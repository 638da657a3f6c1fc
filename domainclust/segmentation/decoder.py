"""An FCN-style decoder on a trunk: class scores at the tile's own size from several stages.

Every conv stage of the backbone is projected to a common width by a 1x1 conv, upsampled to the
finest stage's map and summed (the skip connections of FCN-8s, over every stage); after a ReLU a
1x1 classifier gives class scores that are upsampled bilinearly to the tile size: a per-pixel
MLP on features of every scale, light enough to train from a few tiles on a CPU. The
decoder holds no BatchNorm, so its statistics never depend on the few shots it is trained on;
only the trunk's BatchNorm statistics are recomputed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from domainclust.networks.model import Trunk

DECODER_WIDTH = 32


def stage_channels(trunk: Trunk, *, tile_size: int) -> dict[str, int]:
    """Output channels of every conv stage of `trunk`, from one blank tile in eval mode."""
    param = next(trunk.parameters())
    x = torch.zeros(1, len(trunk.spec.channels), tile_size, tile_size, device=param.device)
    was_training = trunk.training
    trunk.eval()
    try:
        with torch.no_grad():
            out = trunk.backbone.forward_stages(trunk.frontend(x))
    finally:
        trunk.train(was_training)
    return {name: int(v.shape[1]) for name, v in out.items()}


class SegmentationNet(nn.Module):
    """`trunk` (front-end → backbone) with a decoder giving (N, classes, H, W) scores."""

    def __init__(self, trunk: Trunk, *, n_classes: int, width: int = DECODER_WIDTH) -> None:
        super().__init__()
        self.trunk = trunk
        size = trunk.spec.tile_size
        channels = stage_channels(trunk, tile_size=size)
        self.stages = tuple(channels)
        self.project = nn.ModuleDict({
            name: nn.Conv2d(c, width, kernel_size=1) for name, c in channels.items()})
        self.classify = nn.Conv2d(width, n_classes, kernel_size=1)
        for m in [*self.project.values(), self.classify]:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.trunk.backbone.forward_stages(self.trunk.frontend(x))

    def decode(self, maps: dict[str, torch.Tensor], *, size: tuple[int, int]) -> torch.Tensor:
        finest = max((maps[name].shape[-2:] for name in self.stages), key=lambda s: s[0] * s[1])
        fused = sum(F.interpolate(self.project[name](maps[name]), size=finest, mode="bilinear",
                                  align_corners=False) for name in self.stages)
        scores = self.classify(torch.relu(fused))
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), size=(x.shape[-2], x.shape[-1]))

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("trunk.")]


def decoder_factory(base: Trunk, *, frozen: bool, n_classes: int, width: int,
                    device: torch.device | str, seed: int) -> Callable[[], SegmentationNet]:
    """Fresh networks on `base` for each fit: the decoder initialised from `seed`, the trunk
    shared when frozen (it is not trained) and copied when fine-tuned."""

    def make() -> SegmentationNet:
        torch.manual_seed(seed)
        trunk = base if frozen else copy.deepcopy(base)
        return SegmentationNet(trunk, n_classes=n_classes, width=width).to(device)

    return make
