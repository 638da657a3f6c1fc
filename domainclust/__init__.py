"""domainclust: DeepCluster self-supervised pretraining on unlabeled domain imagery."""

from domainclust.config import Config
from domainclust.deepcluster import pretrain
from domainclust.errors import DomainclustError
from domainclust.store import StoreSpec, TileStore, TileStoreWriter

__all__ = ["Config", "DomainclustError", "StoreSpec", "TileStore", "TileStoreWriter", "pretrain"]
__version__ = "0.1.0"
