"""How well clusters match labels (thesis diagnostics): NMI to labels, and the ratio of
intra-class edges in the 10-NN graph of the descriptors (PCA-whitened, L2-normalised features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from domainclust.clustering.kmeans import kmeans
from domainclust.data.store import TileStore
from domainclust.engine.descriptors import compute_descriptors
from domainclust.engine.metrics import nmi
from domainclust.evaluation.features import FEATURES, extract_layers
from domainclust.evaluation.inputs import open_inputs
from domainclust.rundir import RunDir


def descriptors_of(features: np.ndarray, *, pca_dim: int) -> np.ndarray:
    """The clustering descriptors: PCA-whitened to `pca_dim` (clipped to the data), L2-normed."""
    pca_dim = min(pca_dim, features.shape[1], len(features) - 1)
    desc, _ = compute_descriptors([torch.from_numpy(features)], pca_dim=pca_dim)
    return desc


def nmi_to_labels(features: np.ndarray, labels: np.ndarray, *, pca_dim: int, seed: int) -> float:
    """NMI between labels and k-means (k = number of classes) on whitened descriptors."""
    desc = descriptors_of(features, pca_dim=pca_dim)
    k = len(np.unique(labels))
    return nmi(labels, kmeans(desc, k=k, seed=seed).labels)


def intra_class_edge_ratio(descriptors: np.ndarray, labels: np.ndarray, *, k: int = 10) -> float:
    """Fraction of the edges of the k-NN graph (cosine, self excluded) joining same-class points."""
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(k, len(x) - 1)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)
    # Drop each point itself (normally the first hit; with duplicates it may come later).
    rows = np.arange(len(x))[:, None]
    not_self = idx != rows
    keep = np.where(not_self.all(1)[:, None], np.arange(k + 1) < k, not_self)
    neighbours = idx[keep].reshape(len(x), k)
    return float((labels[neighbours] == labels[:, None]).mean())


@dataclass
class ClusterEvalResult:
    n_tiles: int
    n_classes: int
    pca_dim: int
    nmi_kmeans: float  # k-means with k = number of classes on the descriptors
    edge_ratio: float  # intra-class edges in the `neighbours`-NN graph
    neighbours: int
    nmi_assignments: float | None  # the run's last-epoch clusters (same store only)
    assignments_epoch: int | None
    n_assigned: int
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [("NMI, k-means (k = classes) on descriptors", f"{self.nmi_kmeans:.3f}"),
                (f"intra-class edges in the {self.neighbours}-NN graph", f"{self.edge_ratio:.3f}")]
        if self.nmi_assignments is not None:
            name = (f"NMI, learned clusters of epoch {self.assignments_epoch} "
                    f"({self.n_assigned} tiles)")
            rows.append((name, f"{self.nmi_assignments:.3f}"))
        title = (f"clusters of {self.checkpoint} ({self.n_tiles} labelled tiles, "
                 f"{self.n_classes} classes, PCA {self.pca_dim})")
        lines = [title, "| measure | value |", "|---|---:|"]
        return "\n".join(lines + [f"| {a} | {b} |" for a, b in rows])


def learned_assignments(run_dir: Path | None, trained_store: str | None,
                        store: TileStore, epoch: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's cluster ids of `epoch`, when the run trained on this very store."""
    if run_dir is None or epoch is None or not trained_store:
        return None
    if Path(trained_store).resolve() != store.path.resolve():
        return None
    return RunDir(run_dir).load_assignments(epoch)


def evaluate_clusters(
    checkpoint: Path | str,
    store_path: Path | str,
    *,
    pca_dim: int | None = None,
    neighbours: int = 10,
    seed: int = 0,
    labels_path: Path | str | None = None,
    max_tiles: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = False,
) -> ClusterEvalResult:
    """NMI and intra-class edge ratio of the checkpoint's descriptors on a labelled store."""
    inputs = open_inputs(checkpoint, store_path, labels_path=labels_path, device=device)
    dev, store, labels, trained = inputs.device, inputs.store, inputs.labels, inputs.trained
    if pca_dim is None:
        pca_dim = RunDir(trained.run_dir).load_config().cluster.pca_dim if trained.run_dir else 256
    tiles = np.flatnonzero(labels >= 0)
    if max_tiles is not None and len(tiles) > max_tiles:
        tiles = np.sort(np.random.default_rng(seed).choice(tiles, size=max_tiles, replace=False))
    feats = extract_layers(trained.model, store, indices=tiles, layers=[FEATURES],
                           batch_size=batch_size, device=dev, progress=progress)[FEATURES]
    desc = descriptors_of(feats, pca_dim=pca_dim)
    y = labels[tiles]
    n_classes = len(np.unique(y))
    result = ClusterEvalResult(
        n_tiles=len(tiles), n_classes=n_classes, pca_dim=desc.shape[1],
        nmi_kmeans=nmi(y, kmeans(desc, k=n_classes, seed=seed).labels),
        edge_ratio=intra_class_edge_ratio(desc, y, k=neighbours), neighbours=neighbours,
        nmi_assignments=None, assignments_epoch=None, n_assigned=0,
        checkpoint=str(trained.source))
    epoch = trained.info.get("epoch")
    found = learned_assignments(trained.run_dir, trained.info.get("store", {}).get("path"),
                                store, epoch)
    if found is not None:
        idx, cluster_ids = found
        ok = labels[idx] >= 0
        result.nmi_assignments = nmi(labels[idx][ok], cluster_ids[ok])
        result.assignments_epoch, result.n_assigned = epoch, int(ok.sum())
    return result
