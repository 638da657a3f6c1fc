"""Feature quality without training a classifier: weighted k-NN accuracy and NMI to labels."""

from __future__ import annotations

import faiss
import numpy as np
import torch

from domainclust.descriptors import compute_descriptors
from domainclust.extract import extract_features
from domainclust.kmeans import kmeans
from domainclust.metrics import nmi
from domainclust.model import DeepClusterNet
from domainclust.store import TileStore


def embed_store(
    model: DeepClusterNet,
    store: TileStore,
    *,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    device: torch.device,
    progress: bool = True,
) -> np.ndarray:
    """(N, D) float32 clustering features of the store's tiles (all, or `indices`)."""
    indices = np.arange(store.n) if indices is None else np.asarray(indices)
    tiles = store.read(indices)
    batches = extract_features(model, tiles, store=store, batch_size=batch_size, device=device,
                               progress=progress)
    return np.concatenate([b.cpu().numpy() for b in batches])


def knn_accuracy(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Cosine k-NN with votes weighted by exp(similarity / temperature) (Wu et al. 2018)."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    index = faiss.IndexFlatIP(train.shape[1])
    index.add(unit(train))
    sims, idx = index.search(unit(test), min(k, len(train)))
    classes = np.unique(train_labels)
    votes = np.zeros((len(test), len(classes)))
    cls_idx = np.searchsorted(classes, train_labels[idx])
    np.add.at(votes, (np.arange(len(test))[:, None], cls_idx), np.exp(sims / temperature))
    return float((classes[votes.argmax(1)] == test_labels).mean())


def nmi_to_labels(features: np.ndarray, labels: np.ndarray, *, pca_dim: int, seed: int) -> float:
    """NMI between labels and k-means (k = number of classes) on whitened descriptors."""
    desc, _ = compute_descriptors([torch.from_numpy(features)], pca_dim=pca_dim)
    k = len(np.unique(labels))
    return nmi(labels, kmeans(desc, k=k, seed=seed).labels)


def split_indices(n: int, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
