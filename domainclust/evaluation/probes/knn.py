"""Weighted cosine k-NN on frozen features, on any layer: the accuracy of a labelled bank, and the
layer and k of a low-shot bank chosen by leave-one-out on its shots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from domainclust.data.store import TileStore
from domainclust.engine.extract import extract_features
from domainclust.evaluation.data import store_split
from domainclust.evaluation.features import FEATURES, extract_layers, layer_label, resolve_layers
from domainclust.evaluation.grids import LOW_SHOT_DEFAULT_K, LOW_SHOT_KS
from domainclust.evaluation.inputs import open_inputs
from domainclust.networks.model import DeepClusterNet


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


def knn_predict(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    leave_one_out: bool = False,
) -> np.ndarray:
    """The label of each query by cosine k-NN over the bank, votes weighted by
    exp(similarity / temperature) (Wu et al. 2018). With `leave_one_out` the queries are the
    bank itself and each row's own entry does not vote, so k is scored on the bank alone."""
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(unit_rows(bank))
    sims, idx = index.search(unit_rows(queries), min(k + int(leave_one_out), len(bank)))
    weights = np.exp(sims / temperature)
    if leave_one_out:
        own = idx == np.arange(len(queries))[:, None]
        own[~own.any(1), -1] = True  # an exact duplicate outranked it: drop the k+1-th instead
        weights[own] = 0.0
    classes = np.unique(bank_labels)
    votes = np.zeros((len(queries), len(classes)))
    cls_idx = np.searchsorted(classes, bank_labels[idx])
    np.add.at(votes, (np.arange(len(queries))[:, None], cls_idx), weights)
    return classes[votes.argmax(1)]


def knn_accuracy(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 of `knn_predict` with `train` as the bank."""
    pred = knn_predict(train, train_labels, test, k=k, temperature=temperature)
    return float((pred == test_labels).mean())


@dataclass(frozen=True)
class NeighbourChoice:
    """What leave-one-out on the shots picked (or the defaults, `validated=False`)."""

    layer: str
    k: int
    validated: bool
    score: float | None = None


def choose_neighbours(
    features: dict[str, np.ndarray], y: np.ndarray, *, default_layer: str,
    ks: tuple[int, ...] = LOW_SHOT_KS, temperature: float = 0.07,
) -> NeighbourChoice:
    """Layer and k with the best leave-one-out top-1 on the shots (first one on ties). With one
    shot per class a left-out shot has no neighbour of its class, so nothing can be validated
    and the default layer and k are used for every method alike."""
    if np.unique(y, return_counts=True)[1].min() < 2:
        return NeighbourChoice(layer=default_layer, k=LOW_SHOT_DEFAULT_K, validated=False)
    best: NeighbourChoice | None = None
    for layer, x in features.items():
        for k in (k for k in ks if k < len(y)):
            pred = knn_predict(x, y, x, k=k, temperature=temperature, leave_one_out=True)
            score = float((pred == y).mean())
            if best is None or score > best.score:
                best = NeighbourChoice(layer=layer, k=k, validated=True, score=score)
    assert best is not None
    return best


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
