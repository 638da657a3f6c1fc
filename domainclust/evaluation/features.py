"""Frozen features of any layer: the clustering feature, or a conv stage average-pooled to ~10k dims.

The paper pools each AlexNet conv output to 9–10k values for its linear probes (224 px:
conv1 6×6 pad 3 → 96·10·10, conv2 4×4 → 256·6·6, conv3/4 3×3 pad 1 → 384·5·5, conv5 2×2 →
256·6·6). `pool_grid` picks the same grids with adaptive average pooling, and never a grid finer
than the map itself, so small tiles keep their whole map. Everything runs in eval mode: BatchNorm
uses its running statistics and dropout is off.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from domainclust.data.store import TileStore
from domainclust.engine.extract import tile_batches
from domainclust.errors import DomainclustError

FEATURES = "features"  # the clustering feature: fc7 before ReLU (AlexNet/VGG), pooled trunk (ResNet)
TARGET_DIMS = 9600
GLOBAL_AVERAGE = 1  # a target that averages each stage over the tile: one value per channel
READ_BLOCK = 4096  # tiles read from the store at a time


def feature_aliases(arch: str) -> dict[str, str]:
    return {"fc7": FEATURES} if arch in ("alexnet", "vgg16") else {"pool": FEATURES}


def layer_label(arch: str, name: str) -> str:
    """How a layer is shown: the clustering feature as `fc7` (AlexNet/VGG) or `pool` (ResNet)."""
    if name != FEATURES:
        return name
    return "fc7" if arch in ("alexnet", "vgg16") else "pool"


def layer_names(model: nn.Module) -> tuple[str, ...]:
    """Layers a probe can tap: the conv stages of the backbone, then the clustering feature."""
    return (*model.backbone.stages, FEATURES)


def resolve_layers(model: nn.Module, layers: list[str] | None) -> list[str]:
    """Validated layer names (aliases such as `fc7` mapped); None means every conv stage."""
    known = layer_names(model)
    if not layers:
        return list(model.backbone.stages)
    aliases = feature_aliases(model.spec.arch)
    out = []
    for name in layers:
        name = aliases.get(name, name)
        if name not in known:
            choices = ", ".join([*known[:-1], *aliases, FEATURES])
            raise DomainclustError(f"unknown layer '{name}' for {model.spec.arch}; choose {choices}")
        out.append(name)
    return out


def pool_grid(channels: int, height: int, width: int, *, target: int = TARGET_DIMS) -> tuple[int, int]:
    """Output grid so that channels·h·w ≈ `target`, no finer than the map (h ≤ height, w ≤ width)."""
    side = max(1, round(math.sqrt(target / channels)))
    return min(side, height), min(side, width)


def pool_stage(x: torch.Tensor, *, target: int = TARGET_DIMS) -> torch.Tensor:
    """(B, C, H, W) → (B, C·h·w) adaptive-average-pooled features."""
    grid = pool_grid(x.shape[1], x.shape[2], x.shape[3], target=target)
    return torch.flatten(F.adaptive_avg_pool2d(x, grid), 1)


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor, *, layers: list[str],
                   target: int = TARGET_DIMS) -> dict[str, torch.Tensor]:
    """Features of `layers` for one float input batch (model in eval mode)."""
    out: dict[str, torch.Tensor] = {}
    stages = [n for n in layers if n != FEATURES]
    if stages:
        maps = model.backbone.forward_stages(model.frontend(x))
        for name in stages:
            out[name] = pool_stage(maps[name], target=target)
    if FEATURES in layers:
        out[FEATURES] = model.features(x)
    return out


@torch.no_grad()
def extract_layers(
    model: nn.Module,
    store: TileStore,
    *,
    indices: np.ndarray,
    layers: list[str],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    target: int = TARGET_DIMS,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """{layer: (len(indices), D) float32} in one pass over the tiles, in `indices` order."""
    device = torch.device(device)
    model.eval().to(device)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    indices = np.asarray(indices, dtype=np.int64)
    with tqdm(total=len(indices), desc="features", unit="tile", disable=not progress,
              leave=False) as bar:
        for start in range(0, len(indices), READ_BLOCK):
            tiles = store.read(indices[start : start + READ_BLOCK])
            for x in tile_batches(tiles, store=store, batch_size=batch_size, device=device,
                                  tile_size=model.spec.tile_size):
                with autocast:
                    feats = layer_features(model, x, layers=layers, target=target)
                for name, f in feats.items():
                    chunks[name].append(f.float().cpu().numpy())
                bar.update(len(x))
    return {name: np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
            for name, parts in chunks.items()}


def read_float_tiles(store: TileStore, indices: np.ndarray, *, tile_size: int) -> torch.Tensor:
    """(n, C, S, S) float32 tiles (store normalisation applied, resized to `tile_size`), on CPU."""
    tiles = store.read(np.asarray(indices, dtype=np.int64))
    batches = tile_batches(tiles, store=store, batch_size=max(1, len(tiles)),
                           device=torch.device("cpu"), tile_size=tile_size)
    return torch.cat(list(batches)) if len(tiles) else torch.zeros(0)
