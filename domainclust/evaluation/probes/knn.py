"""Weighted k-NN accuracy of frozen features (cosine similarity), on any layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from domainclust.evaluation.data import store_split
from domainclust.evaluation.features import FEATURES, extract_layers, layer_label, resolve_layers
from domainclust.evaluation.inputs import open_inputs
from domainclust.engine.extract import extract_features
from domainclust.networks.model import DeepClusterNet
from domainclust.data.store import TileStore


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


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(unit_rows(train))
    sims, idx = index.search(unit_rows(test), min(k, len(train)))
    classes = np.unique(train_labels)
    votes = np.zeros((len(test), len(classes)))
    cls_idx = np.searchsorted(classes, train_labels[idx])
    np.add.at(votes, (np.arange(len(test))[:, None], cls_idx), np.exp(sims / temperature))
    return float((classes[votes.argmax(1)] == test_labels).mean())


@dataclass
class KnnResult:
    layer: str
    dim: int
    k: int
    temperature: float
    accuracy: float
    n_train: int
    n_test: int
    split: str
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"k-NN (k={self.k}, T={self.temperature}) on {self.layer} ({self.dim} dims): "
                f"top-1 {100 * self.accuracy:.2f}% [{self.n_train} train / {self.n_test} test; "
                f"split: {self.split}]")


def evaluate_knn(
    checkpoint: Path | str,
    store_path: Path | str,
    *,
    layers: list[str] | None = None,
    k: int = 20,
    temperature: float = 0.07,
    test_fraction: float = 0.2,
    seed: int = 0,
    split_path: Path | str | None = None,
    split_by: str = "auto",
    labels_path: Path | str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = False,
) -> list[KnnResult]:
    """k-NN accuracy of the checkpoint's frozen features on a labelled store, one per layer."""
    inputs = open_inputs(checkpoint, store_path, labels_path=labels_path, device=device)
    dev, store, labels, trained = inputs.device, inputs.store, inputs.labels, inputs.trained
    split = store_split(store, labels, split_path=split_path,
                        test_fraction=test_fraction, seed=seed, split_by=split_by)
    names = resolve_layers(trained.model, layers or [FEATURES])
    both = np.concatenate([split.train, split.test])
    feats = extract_layers(trained.model, store, indices=both, layers=names,
                           batch_size=batch_size, device=dev, progress=progress)
    n = len(split.train)
    results = []
    for name in names:
        f = feats[name]
        acc = knn_accuracy(f[:n], labels[split.train], f[n:], labels[split.test], k=k,
                           temperature=temperature)
        results.append(KnnResult(
            layer=layer_label(trained.spec.arch, name), dim=int(f.shape[1]), k=k,
            temperature=temperature, accuracy=acc, n_train=n, n_test=len(split.test),
            split=split.source, checkpoint=str(trained.source)))
    return results
