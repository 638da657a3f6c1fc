"""What every evaluation starts from: the device, the labelled store and a checked network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from domainclust.data.store import TileStore
from domainclust.device import limit_cpu_threads, resolve_device
from domainclust.evaluation.data import store_labels
from domainclust.evaluation.models import Trained, align_store, load_trained


@dataclass
class EvalInputs:
    device: torch.device
    store: TileStore
    labels: np.ndarray
    trained: Trained


def open_inputs(
    checkpoint: Path | str,
    store_path: Path | str,
    *,
    labels_path: Path | str | None,
    device: str,
    load_on: str | None = None,
    log: Callable[[str], None] = print,
) -> EvalInputs:
    """Cap CPU threads, resolve the device, open the store and its labels, and load the network
    (on `load_on`, default the device); the store is read with the network's channels, matched
    by name (`align_store`), and one that lacks a channel the network needs is refused."""
    limit_cpu_threads()
    dev = resolve_device(device)
    store = TileStore(store_path)
    labels = store_labels(store, labels_path=labels_path)
    trained = load_trained(checkpoint, device=load_on or dev)
    store = align_store(trained.spec, store, source=trained.source, log=log)
    return EvalInputs(device=dev, store=store, labels=labels, trained=trained)
