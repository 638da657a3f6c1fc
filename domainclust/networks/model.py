"""The DeepCluster network: fixed front-end → backbone → ReLU → replaceable top layer.

The top layer is DeepCluster's linear classifier, re-initialised at every clustering, or
DeepCluster-v2's prototypes: the cluster centroids themselves, so the head agrees with the
clustering from the first step instead of starting from noise."""

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


class PrototypeHead(nn.Module):
    """Cosine similarity to one prototype per cluster over a temperature (DeepCluster-v2).

    The feature is whitened as the clustering saw it (`mean`, `projection` = PCA components
    scaled by 1/sqrt(eigenvalue)) and L2-normalised; the prototypes start as the normalised
    centroids and are trained with the trunk. Everything it needs is in its state dict, so a
    checkpoint rebuilds it (`DeepClusterNet.load_weights`).
    """

    def __init__(self, *, mean: torch.Tensor, projection: torch.Tensor,
                 prototypes: torch.Tensor, temperature: float | torch.Tensor,
                 relu: bool | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("projection", projection.detach().float().clone())
        self.register_buffer("temperature", torch.as_tensor(temperature, dtype=torch.float32))
        self.register_buffer("relu", torch.as_tensor(relu, dtype=torch.bool))  # post-ReLU input
        self.post_relu = bool(relu)  # read in forward without a device sync
        self.weight = nn.Parameter(prototypes.detach().float().clone())

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def like(cls, weights: dict[str, torch.Tensor], *, prefix: str) -> PrototypeHead:
        """The head saved under `prefix` in a state dict."""
        w = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        return cls(mean=w["mean"], projection=w["projection"], prototypes=w["weight"],
                   temperature=w["temperature"], relu=w["relu"])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.relu(features) if self.post_relu else features
        z = nn.functional.normalize((x.float() - self.mean) @ self.projection, dim=1)
        return z @ nn.functional.normalize(self.weight, dim=1).T / self.temperature


class DeepClusterNet(Trunk):
    """The trunk with DeepCluster's replaceable top layer (one output per cluster)."""

    top: nn.Linear | PrototypeHead

    def __init__(self, spec: ModelSpec, *, n_clusters: int) -> None:
        super().__init__(spec)
        self.top = head_init_(nn.Linear(self.backbone.feature_dim, n_clusters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        if isinstance(self.top, PrototypeHead):
            return self.top(features)  # it whitens the feature the clustering saw
        return self.top(torch.relu(features))

    def reset_head(self, n_clusters: int) -> None:
        """A fresh top layer for this epoch's pseudo-labels (re-initialised every epoch)."""
        device = self.top.weight.device
        self.top = head_init_(nn.Linear(self.feature_dim, n_clusters)).to(device)

    def set_prototypes(self, head: PrototypeHead) -> None:
        """This clustering's prototypes as the top layer."""
        self.top = head.to(self.top.weight.device)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """A checkpoint's state dict, the top layer rebuilt in the kind and shape it was saved."""
        if "top.projection" in weights:
            self.set_prototypes(PrototypeHead.like(weights, prefix="top."))
        else:
            self.reset_head(int(weights["top.weight"].shape[0]))
        self.load_state_dict(weights)
