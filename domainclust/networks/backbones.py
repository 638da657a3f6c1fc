"""Backbones of any input channel count, each with a stem that fits the tile size.

The paper's networks are built for 224 px: AlexNet's 11x11/4 conv and three max-pools, or a
ResNet's 7x7/2 conv and max-pool, leave a 32 px tile with a 1x1 map from the middle of the
network on, and such a network cannot learn layout. Every family therefore has three stems:
`imagenet` (the paper's, exact at 224 px), `stride2` (64-128 px) and `stride1` (28-63 px);
`auto_stem` picks one from the tile size. `geometry` gives the spatial size of every stage, and
`check_geometry` refuses a network whose last map would be smaller than 2x2.

Each backbone returns the clustering feature: fc7 *before* its ReLU for AlexNet/VGG, the
global-pooled trunk for ResNet. `stages` names the conv outputs that evaluation probes can tap.
"""

from __future__ import annotations

import torch
from torch import nn

from domainclust.config import ARCHS, STEMS, one_of
from domainclust.errors import DomainclustError

MIN_TILE = 28
MIN_MAP = 2  # the last spatial map must be at least this many pixels on a side


def auto_stem(tile_size: int) -> str:
    """The stem for a tile size: the paper's above 128 px, smaller strides below."""
    if tile_size > 128:
        return "imagenet"
    return "stride2" if tile_size >= 64 else "stride1"


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


def _scaled(channels: int, width: float) -> int:
    return max(8, round(channels * width))


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2)


class _Stages(nn.Module):
    """A backbone's `forward_stages` as a module's forward (for a meta-tensor pass)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.b = backbone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.b.forward_stages(x)


def _meta_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    """`module(x)` computed on shapes only (meta tensors), without touching its real weights."""
    state = {k: torch.empty_like(v, device="meta") for k, v in module.state_dict().items()}
    return torch.func.functional_call(module, state, (x,))


def _final_side(layers: list[nn.Module], *, in_channels: int, tile_size: int) -> int:
    """Side of the map `layers` leave at `tile_size`; 0 when a layer finds nothing left."""
    x = torch.zeros(2, in_channels, tile_size, tile_size, device="meta")  # 2: BatchNorm in train mode
    try:
        return int(_meta_forward(nn.Sequential(*layers), x).shape[-1])
    except RuntimeError:  # a pool or conv larger than the map that reaches it
        return 0


class _ConvThenClassifier(nn.Module):
    """Conv stages in order, then a pool and the fully connected classifier (AlexNet, VGG)."""

    stages: tuple[str, ...] = ()
    convs: nn.ModuleDict
    pool: nn.Module
    classifier: nn.Sequential

    def _build_classifier(self, *, channels: int, in_channels: int, tile_size: int,
                          dropout: float, head_dropout: bool) -> None:
        side = _final_side([*self.convs.values(), self.pool], in_channels=in_channels,
                           tile_size=tile_size)
        self.final_side = side
        if side < MIN_MAP:  # build_backbone refuses this network; skip the impossible classifier
            return
        # Pooling to the map's own size is the identity at `tile_size`; it lets the same
        # weights run on other sizes without silently tiling one position over the grid.
        self.pool = nn.Sequential(self.pool, nn.AdaptiveAvgPool2d(side))
        layers: list[nn.Module] = [nn.Dropout(dropout)] if head_dropout else []
        layers += [nn.Linear(channels * side * side, 4096), nn.ReLU(inplace=True),
                   nn.Dropout(dropout), nn.Linear(4096, 4096)]
        self.classifier = nn.Sequential(*layers)
        self.feature_dim = 4096

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


class AlexNetBN(_ConvThenClassifier):
    """AlexNet with BatchNorm as in DESIGN.md: no LRN, no groups.

    `imagenet` is the paper's network (conv1 11x11/4, 3x3/2 max-pools after conv1, conv2,
    conv5). The small-tile stems replace conv1 by a 5x5/2 (`stride2`) or 3x3/1 (`stride1`)
    conv and conv2's 5x5 by 3x3, keeping the widths and the three pools.
    """

    stages = ("conv1", "conv2", "conv3", "conv4", "conv5")

    def __init__(self, *, in_channels: int, tile_size: int, stem: str = "imagenet",
                 width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in (96, 256, 384, 384, 256))
        conv1 = {"imagenet": (11, 4, 2), "stride2": (5, 2, 2), "stride1": (3, 1, 1)}[stem]
        conv2 = (5, 2) if stem == "imagenet" else (3, 1)
        self.convs = nn.ModuleDict(
            {
                "conv1": nn.Sequential(*_conv_bn(in_channels, c1, *conv1)),
                "conv2": nn.Sequential(_pool(), *_conv_bn(c1, c2, conv2[0], 1, conv2[1])),
                "conv3": nn.Sequential(_pool(), *_conv_bn(c2, c3, 3, 1, 1)),
                "conv4": nn.Sequential(*_conv_bn(c3, c4, 3, 1, 1)),
                "conv5": nn.Sequential(*_conv_bn(c4, c5, 3, 1, 1)),
            }
        )
        self.pool = _pool()
        self._build_classifier(channels=c5, in_channels=in_channels, tile_size=tile_size,
                               dropout=dropout, head_dropout=True)
        _init_weights(self)


_VGG16 = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


class VGG16BN(_ConvThenClassifier):
    """VGG16 with BatchNorm; fc7 before ReLU is the feature.

    `imagenet` pools 2x2 before blocks 2-5 and before the classifier (/32); `stride2` drops
    the last pool (/16), `stride1` also the first (/8).
    """

    stages = ("block1", "block2", "block3", "block4", "block5")

    def __init__(self, *, in_channels: int, tile_size: int, stem: str = "imagenet",
                 width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        first_pool = stem != "stride1"
        blocks = {}
        cin = in_channels
        for i, widths in enumerate(_VGG16):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if i > 1 or (i == 1 and first_pool) else []
            for w in widths:
                layers += _conv_bn(cin, _scaled(w, width), 3, 1, 1)
                cin = _scaled(w, width)
            blocks[f"block{i + 1}"] = nn.Sequential(*layers)
        self.convs = nn.ModuleDict(blocks)
        self.pool = nn.MaxPool2d(2, 2) if stem == "imagenet" else nn.Identity()
        self._build_classifier(channels=cin, in_channels=in_channels, tile_size=tile_size,
                               dropout=dropout, head_dropout=False)
        _init_weights(self)


class ResNetTrunk(nn.Module):
    """MONAI's 2-D ResNet without its fc layer.

    `imagenet`: 7x7/2 conv + max-pool (/32); `stride2`: 3x3/2 conv, no max-pool (/16);
    `stride1`: 3x3/1 conv, no max-pool (/8, the CIFAR ResNet stem).
    """

    stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, *, depth: int, in_channels: int, tile_size: int,
                 stem: str = "imagenet", width: float = 1.0) -> None:
        super().__init__()
        from monai.networks.nets import resnet18, resnet50

        size, stride = {"imagenet": (7, 2), "stride2": (3, 2), "stride1": (3, 1)}[stem]
        factory = {18: resnet18, 50: resnet50}[depth]
        self.net = factory(
            spatial_dims=2, n_input_channels=in_channels, conv1_t_size=size,
            conv1_t_stride=stride, no_max_pool=stem != "imagenet", widen_factor=width,
            feed_forward=False,
        )
        self.feature_dim = int((512 if depth == 18 else 2048) * width)
        self.net.no_max_pool = stem != "imagenet"
        self.final_side = _final_side(self._trunk(), in_channels=in_channels, tile_size=tile_size)

    def _stem(self) -> list[nn.Module]:
        n = self.net
        return [n.conv1, n.bn1, n.act] + ([] if n.no_max_pool else [n.maxpool])

    def _trunk(self) -> list[nn.Module]:
        return [*self._stem(), *(getattr(self.net, s) for s in self.stages)]

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for m in self._stem():
            x = m(x)
        out = {}
        for name in self.stages:
            x = getattr(self.net, name)(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # MONAI skips its max-pool itself when no_max_pool is set


def build_backbone(*, arch: str, in_channels: int, tile_size: int, stem: str = "imagenet",
                   width: float = 1.0, dropout: float = 0.5) -> nn.Module:
    """The backbone for `arch` with `stem`, refusing one whose last map would be below 2x2."""
    if stem not in STEMS:
        raise DomainclustError(f"unknown stem '{stem}'; choose auto, {one_of(STEMS)}")
    check_tile_size(tile_size)
    if arch == "alexnet":
        net: nn.Module = AlexNetBN(in_channels=in_channels, tile_size=tile_size, stem=stem,
                                   width=width, dropout=dropout)
    elif arch == "vgg16":
        net = VGG16BN(in_channels=in_channels, tile_size=tile_size, stem=stem, width=width,
                      dropout=dropout)
    elif arch in ("resnet18", "resnet50"):
        net = ResNetTrunk(depth=int(arch[6:]), in_channels=in_channels, tile_size=tile_size,
                          stem=stem, width=width)
    else:
        raise DomainclustError(f"unknown architecture '{arch}'; choose {one_of(ARCHS)}")
    if net.final_side < MIN_MAP:
        raise DomainclustError(
            f"{arch} with the {stem} stem leaves its last stage less than 2x2 pixels "
            f"({net.final_side}x{net.final_side}) at {tile_size} px: it would see a single "
            "position and could not learn layout. Use the "
            f"'{auto_stem(tile_size)}' stem for {tile_size} px tiles (--set model.stem=auto) or "
            "larger tiles"
        )
    return net


def geometry(backbone: nn.Module, *, in_channels: int, tile_size: int) -> dict[str, int]:
    """Side in pixels of every conv stage's output map for a square tile of `tile_size`."""
    x = torch.zeros(2, in_channels, tile_size, tile_size, device="meta")  # 2: BatchNorm in train mode
    return {name: int(m.shape[-1]) for name, m in _meta_forward(_Stages(backbone), x).items()}


def check_tile_size(tile_size: int) -> None:
    if tile_size < MIN_TILE:
        raise DomainclustError(
            f"tile size {tile_size} px is below the {MIN_TILE} px the backbones need; "
            f"re-ingest with a larger tile size or set tile_size to at least {MIN_TILE}"
        )


def head_init_(layer: nn.Linear) -> nn.Linear:
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)
    return layer
