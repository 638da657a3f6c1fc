"""A labelled training store and a separate test store (ImageNet train / val): what the
reference protocols score on, and the linear probes of `linear.py` run that way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation.data import store_labels
from domainclust.evaluation.features import extract_layers, layer_label, resolve_layers
from domainclust.evaluation.grids import PROBE_WEIGHT_DECAYS
from domainclust.evaluation.inputs import EvalInputs, open_inputs
from domainclust.evaluation.models import align_store
from domainclust.evaluation.probes.linear import LinearProbeResult, ProbeRow, fit_probe


@dataclass
class HeldOut:
    """The network and training store (`inputs`), and the test store with its labels."""

    inputs: EvalInputs
    test_store: TileStore
    test_labels: np.ndarray

    @property
    def train_indices(self) -> np.ndarray:
        return np.flatnonzero(self.inputs.labels >= 0)

    @property
    def test_indices(self) -> np.ndarray:
        return np.flatnonzero(self.test_labels >= 0)


def open_heldout(checkpoint: Path | str, train_store: Path | str, test_store: Path | str, *,
                 device: str, load_on: str | None = None) -> HeldOut:
    """Open both stores, refusing a test store whose channels or classes the training store
    does not share."""
    inputs = open_inputs(checkpoint, train_store, labels_path=None, device=device,
                         load_on=load_on)
    test = align_store(inputs.trained.spec, TileStore(test_store), source=inputs.trained.source)
    labels = store_labels(test)
    unseen = sorted(set(np.unique(labels[labels >= 0])) - set(np.unique(inputs.labels)))
    if unseen:
        raise DomainclustError(f"test store {test.path} has class(es) {unseen[:5]} that the "
                               f"training store {inputs.store.path} has no example of")
    return HeldOut(inputs=inputs, test_store=test, test_labels=labels)


def evaluate_linear_heldout(
    checkpoint: Path | str,
    train_store: Path | str,
    test_store: Path | str,
    *,
    layers: list[str] | None = None,
    weight_decays: tuple[float, ...] = PROBE_WEIGHT_DECAYS,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> LinearProbeResult:
    """Linear probe top-1 per frozen conv layer: fit on `train_store`, scored on `test_store`."""
    h = open_heldout(checkpoint, train_store, test_store, device=device)
    model, dev = h.inputs.trained.model, h.inputs.device
    names = resolve_layers(model, layers)
    train, test = h.train_indices, h.test_indices
    start = time.perf_counter()
    f_train = extract_layers(model, h.inputs.store, indices=train, layers=names,
                             batch_size=batch_size, device=dev, progress=progress)
    f_test = extract_layers(model, h.test_store, indices=test, layers=names,
                            batch_size=batch_size, device=dev, progress=progress)
    extract_seconds = time.perf_counter() - start
    y_train, y_test = h.inputs.labels[train], h.test_labels[test]
    rows = []
    for name in names:
        start = time.perf_counter()
        a, b = f_train.pop(name), f_test.pop(name)
        probe, wd = fit_probe(a, y_train, weight_decays=tuple(weight_decays), seed=seed,
                              device=dev)
        rows.append(ProbeRow(layer=layer_label(model.spec.arch, name), dim=int(a.shape[1]),
                             weight_decay=wd, train_top1=probe.accuracy(a, y_train),
                             top1=probe.accuracy(b, y_test),
                             seconds=round(time.perf_counter() - start, 2)))
    return LinearProbeResult(rows=rows, n_train=len(train), n_test=len(test),
                             split=f"train {h.inputs.store.path} / test {h.test_store.path}",
                             checkpoint=str(h.inputs.trained.source),
                             extra={"extract_seconds": round(extract_seconds, 2)})
