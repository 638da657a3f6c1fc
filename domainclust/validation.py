"""The one check of a resolved config, run before `pretrain` writes anything to its run dir.

Types and allowed values come from the `Config` schema (the `Literal` types of `config.py`);
this adds the ranges of numeric settings, the device syntax, and the rules that need the
store or the process group: k against the tiles clustered per epoch, the global batch against
the number of processes, a tile size other than the store's only when resizing is asked
for. Every refusal is one line naming the key, the value and what is
allowed, so a corrected command can reuse the same run dir.
"""

from __future__ import annotations

from typing import Any

import torch

from domainclust import config as cfg
from domainclust.engine.band_jitter import parse_band_jitter
from domainclust.engine.batch_augment import build_batch_augmentation
from domainclust.errors import DomainclustError

# Settings that must be > 0 and >= 0; `None` (where the type allows it) means "not set".
POSITIVE = ("data.subset_size", "data.tiles_per_chunk", "data.tile_size", "model.width",
            "cluster.k", "cluster.pca_dim", "cluster.iterations", "cluster.pic_neighbors",
            "cluster.reassign_every", "cluster.temperature", "train.batch_size", "train.lr",
            "train.updates_factor")
NON_NEGATIVE = ("data.workers", "model.dropout", "train.epochs", "train.momentum",
                "train.weight_decay")
# How much `data.tile_size` may enlarge the store's tiles: interpolation adds no detail, and a
# side far above the store's only multiplies the memory of every batch.
MAX_UPSCALE = 4


def check_config(config: cfg.Config, *, n_tiles: int | None = None,
                 store_tile_size: int | None = None, world: int = 1) -> None:
    """Refuse a config `pretrain` cannot run, before any work.

    Args:
        config: the resolved config.
        n_tiles: tiles clustered per epoch (subset size clipped to the store); None skips the
            rules that need the store.
        store_tile_size: the side of the store's tiles; None skips the tile-size rule.
        world: processes sharing the run (torchrun's WORLD_SIZE).
    """
    values = cfg.to_dict(config)
    cfg.from_dict(values)  # types and allowed values, also for a Config built in Python
    for key in POSITIVE:
        _check_range(key, _get(values, key), low=0, inclusive=False)
    for key in NON_NEGATIVE:
        _check_range(key, _get(values, key), low=0, inclusive=True)
    if config.model.dropout >= 1:
        raise DomainclustError(f"model.dropout must be below 1, got {config.model.dropout}")
    _check_device(config.device)
    parse_band_jitter(config.data.augment)
    if config.data.batch_augment == "batched" and build_batch_augmentation(
            config.data.augment, tile_size=1, seed=0) is None:
        raise DomainclustError(
            "data.batch_augment=batched but the augment recipe has transforms without a batched "
            "form (batched: RandomResizedCrop, HorizontalFlip, VerticalFlip, RandomRotate90, "
            "BandJitter); "
            "use data.batch_augment=auto")
    if n_tiles is not None:
        _check_against_tiles(config, n_tiles=n_tiles)
    if store_tile_size is not None:
        _check_tile_size(config, store_tile_size=store_tile_size)
    if config.train.batch_size % world:
        raise DomainclustError(
            f"train.batch_size={config.train.batch_size} is not divisible by the {world} "
            "processes; it is the global batch, choose a multiple of --nproc-per-node x nodes")
    if n_tiles is not None and world > 1 and n_tiles < world:
        raise DomainclustError(f"{n_tiles} tiles per epoch cannot be shared by {world} processes")


def _get(values: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        values = values[part]
    return values


def _check_range(key: str, value: float | None, *, low: float, inclusive: bool) -> None:
    if value is None or value > low or (inclusive and value == low):
        return
    if isinstance(value, int):
        bound = f"at least {low if inclusive else low + 1}"
    else:
        bound = f"at least {low}" if inclusive else f"greater than {low}"
    raise DomainclustError(f"{key} must be {bound}, got {value}")


def _check_device(name: str) -> None:
    if name == "auto":
        return
    try:
        torch.device(name)
    except RuntimeError:
        raise DomainclustError(
            f"device must be auto or a torch device (cpu, cuda, cuda:N), got {name!r}") from None


def _check_against_tiles(config: cfg.Config, *, n_tiles: int) -> None:
    c = config.cluster
    if c.method == "kmeans" and c.k > n_tiles:
        raise DomainclustError(
            f"cluster.k={c.k} is larger than the {n_tiles} tiles clustered per epoch (store "
            f"{config.data.store}); lower k (--set k=...) to at most {n_tiles} or raise "
            "subset_size")
    if c.method == "pic" and c.pic_neighbors >= n_tiles:
        raise DomainclustError(
            f"cluster.pic_neighbors={c.pic_neighbors} needs more than that many tiles per "
            f"epoch, the store gives {n_tiles}; lower pic_neighbors or raise subset_size")


def _check_tile_size(config: cfg.Config, *, store_tile_size: int) -> None:
    size, most = config.data.tile_size, MAX_UPSCALE * store_tile_size
    if size is None or size == store_tile_size:
        return
    if not config.data.resize:
        raise DomainclustError(
            f"data.tile_size={size} differs from the store's {store_tile_size} px tiles (store "
            f"{config.data.store}); every tile would be resized, so ask for it with --set "
            f"resize=true, or leave tile_size unset for {store_tile_size}")
    if size > most:
        raise DomainclustError(
            f"data.tile_size={size} is more than {MAX_UPSCALE}x the store's {store_tile_size} px "
            f"tiles (store {config.data.store}); enlarging adds no detail, so set tile_size to at "
            f"most {most} (or leave it unset for {store_tile_size}) or re-ingest with larger tiles")
