"""Backbones of any input channel count and any tile size >= 32 px.

Each returns the clustering feature: fc7 *before* its ReLU for AlexNet/VGG, the global-pooled
trunk for ResNet. `stages` names the conv outputs that evaluation probes (issue 4) can tap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from domainclust.errors import DomainclustError

ARCHS = ("alexnet", "vgg16", "resnet18", "resnet50")
MIN_TILE = 32


class SafeMaxPool(nn.Module):
    """3x3/2 max-pool that shrinks its window on maps smaller than 3 px.

    At 224 px it is exactly the paper's pool; at 32 px it keeps AlexNet's 1x1 conv5 map from
    vanishing instead of raising.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = min(3, x.shape[-2], x.shape[-1])
        return F.max_pool2d(x, kernel_size=kernel, stride=2, ceil_mode=True)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AlexNetBN(nn.Module):
    """AlexNet with BatchNorm as in DESIGN.md: no LRN, no groups, adaptive pool before fc6."""

    stages = ("conv1", "conv2", "conv3", "conv4", "conv5")

    def __init__(self, *, in_channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.convs = nn.ModuleDict(
            {
                "conv1": nn.Sequential(*_conv_bn(in_channels, 96, 11, 4, 2)),
                "conv2": nn.Sequential(SafeMaxPool(), *_conv_bn(96, 256, 5, 1, 2)),
                "conv3": nn.Sequential(SafeMaxPool(), *_conv_bn(256, 384, 3, 1, 1)),
                "conv4": nn.Sequential(*_conv_bn(384, 384, 3, 1, 1)),
                "conv5": nn.Sequential(*_conv_bn(384, 256, 3, 1, 1)),
            }
        )
        self.pool = nn.Sequential(SafeMaxPool(), nn.AdaptiveAvgPool2d(6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
        )
        self.feature_dim = 4096
        _init_weights(self)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, block in self.convs.items():
            x = block(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.convs.values():
            x = block(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


_VGG16 = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


class VGG16BN(nn.Module):
    """VGG16 with BatchNorm; fc7 before ReLU is the feature."""

    stages = ("block1", "block2", "block3", "block4", "block5")

    def __init__(self, *, in_channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        blocks = {}
        cin = in_channels
        for i, widths in enumerate(_VGG16):
            layers: list[nn.Module] = [] if i == 0 else [nn.MaxPool2d(2, 2)]
            for width in widths:
                layers += _conv_bn(cin, width, 3, 1, 1)
                cin = width
            blocks[f"block{i + 1}"] = nn.Sequential(*layers)
        self.convs = nn.ModuleDict(blocks)
        self.pool = nn.Sequential(nn.MaxPool2d(2, 2), nn.AdaptiveAvgPool2d(7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
        )
        self.feature_dim = 4096
        _init_weights(self)

    forward_stages = AlexNetBN.forward_stages
    forward = AlexNetBN.forward


class ResNetTrunk(nn.Module):
    """MONAI's 2-D ResNet (ImageNet stem: 7x7/2 conv + max-pool) without its fc layer."""

    stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, *, depth: int, in_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import resnet18, resnet50

        factory = {18: resnet18, 50: resnet50}[depth]
        self.net = factory(
            spatial_dims=2, n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
            feed_forward=False,
        )
        self.feature_dim = 512 if depth == 18 else 2048

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.act(n.bn1(n.conv1(x))))
        out = {}
        for name in self.stages:
            x = getattr(n, name)(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(*, arch: str, in_channels: int, dropout: float = 0.5) -> nn.Module:
    if arch == "alexnet":
        return AlexNetBN(in_channels=in_channels, dropout=dropout)
    if arch == "vgg16":
        return VGG16BN(in_channels=in_channels, dropout=dropout)
    if arch in ("resnet18", "resnet50"):
        return ResNetTrunk(depth=int(arch[6:]), in_channels=in_channels)
    raise DomainclustError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHS)}")


def check_tile_size(tile_size: int) -> None:
    if tile_size < MIN_TILE:
        raise DomainclustError(
            f"tile size {tile_size} px is below the {MIN_TILE} px the backbones need; "
            "re-ingest with a larger tile size or set tile_size to at least 32"
        )


def head_init_(layer: nn.Linear) -> nn.Linear:
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)
    return layer

