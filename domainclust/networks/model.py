"""The DeepCluster network: fixed front-end → backbone → ReLU → replaceable top layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from domainclust.errors import DomainclustError
from domainclust.networks.backbones import build_backbone, head_init_
from domainclust.networks.frontends import GradientFrontEnd


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network from a checkpoint."""

    arch: str
    frontend: str
    channels: tuple[str, ...]
    raw_channels: tuple[str, ...]
    tile_size: int
    dropout: float = 0.5
    stem: str = "imagenet"  # resolved, never "auto": see backbones.auto_stem
    width: float = 1.0  # conv width multiplier (1: the paper's widths)

    def raw_indices(self) -> tuple[int, ...]:
        missing = [c for c in self.raw_channels if c not in self.channels]
        if missing:
            raise DomainclustError(
                f"raw channel(s) {missing} are not among the store's channels {list(self.channels)}"
            )
        return tuple(self.channels.index(c) for c in self.raw_channels)


class Trunk(nn.Module):
    """Fixed front-end → backbone: the part of the network that pretraining produces."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.frontend = GradientFrontEnd(
            kind=spec.frontend, in_channels=len(spec.channels), raw=spec.raw_indices()
        )
        self.backbone = build_backbone(
            arch=spec.arch, in_channels=self.frontend.out_channels, tile_size=spec.tile_size,
            stem=spec.stem, width=spec.width, dropout=spec.dropout,
        )

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The clustering feature (pre-ReLU fc7 / pooled trunk)."""
        return self.backbone(self.frontend(x))


class DeepClusterNet(Trunk):
    """The trunk with DeepCluster's replaceable top layer (one output per cluster)."""

    def __init__(self, spec: ModelSpec, *, n_clusters: int) -> None:
        super().__init__(spec)
        self.top = head_init_(nn.Linear(self.backbone.feature_dim, n_clusters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(torch.relu(self.features(x)))

    def reset_head(self, n_clusters: int) -> None:
        """A fresh top layer for this epoch's pseudo-labels (re-initialised every epoch)."""
        device = self.top.weight.device
        self.top = head_init_(nn.Linear(self.feature_dim, n_clusters)).to(device)
