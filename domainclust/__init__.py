"""domainclust: DeepCluster self-supervised pretraining on unlabeled domain imagery.

Heavy modules (torch, the training loop) load on first use, so ingest workers that only need
the store start quickly.
"""

from __future__ import annotations

from typing import Any

from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.errors import DomainclustError

__all__ = [
    "DomainclustError", "StoreSpec", "TileStore", "TileStoreWriter", "load_backbone", "pretrain",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "pretrain":
        from domainclust.engine.deepcluster import pretrain

        return pretrain
    if name == "load_backbone":
        from domainclust.networks.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'domainclust' has no attribute {name!r}")
