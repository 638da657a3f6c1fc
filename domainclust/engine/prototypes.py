"""DeepCluster-v2's top layer from one clustering: the whitening and the normalised centroids."""

from __future__ import annotations

import numpy as np
import torch

from domainclust.engine.descriptors import Whitening
from domainclust.networks.model import PrototypeHead


def cluster_centroids(
    descriptors: np.ndarray | torch.Tensor, labels: np.ndarray, *, n_clusters: int
) -> torch.Tensor:
    """(n_clusters, d) unit-norm centroid directions of the descriptors, on the CPU."""
    x = torch.as_tensor(descriptors).float()
    ids = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    sums = torch.zeros((n_clusters, x.shape[1]), device=x.device).index_add_(0, ids, x)
    return torch.nn.functional.normalize(sums, dim=1).cpu()


def prototype_head(
    whitening: Whitening, centroids: torch.Tensor, *, temperature: float, relu: bool
) -> PrototypeHead:
    """The head that scores a feature as the clustering saw it against every centroid."""
    return PrototypeHead(mean=whitening.mean.cpu(), projection=whitening.projection().cpu(),
                         prototypes=centroids, temperature=temperature, relu=relu)
