"""`domainclust demo`: the bundled MNIST subset, pretrained on CPU, against raw pixels and random init.

The labelled tiles are split as `eval knn` splits them; pretraining sees only the training part
(without its labels), and every row is scored on the held-out part. Which layer a network is
scored on is chosen on a validation part of the training tiles, the same way for random init
and the pretrained network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domainclust.config import Config, resolve
from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore, write_subset
from domainclust.device import resolve_device
from domainclust.engine.deepcluster import model_spec, pretrain
from domainclust.evaluation.data import Split, store_split, stratified_split
from domainclust.evaluation.features import (
    extract_layers,
    layer_label,
    layer_names,
    read_float_tiles,
)
from domainclust.evaluation.probes.knn import knn_accuracy
from domainclust.networks.model import DeepClusterNet
from domainclust.rundir import RunDir, atomic_write_text

DEMO_MODALITY = "mnist"
TEST_FRACTION = 0.2


def knn_row(features: dict[str, np.ndarray], labels: np.ndarray, *, split: Split,
            inner: Split, names: dict[str, str]) -> dict[str, Any]:
    """The layer with the best validation k-NN accuracy, and its accuracy on the test tiles.

    `features[layer]` rows follow the order of `split.train` then `split.test`; `inner`
    splits positions 0..len(split.train) into fitting and validation parts."""
    n = len(split.train)
    y_train, y_test = labels[split.train], labels[split.test]
    val = {layer: knn_accuracy(f[inner.train], y_train[inner.train], f[inner.test],
                               y_train[inner.test]) for layer, f in features.items()}
    best = max(val, key=val.get)
    f = features[best]
    return {"knn_accuracy": knn_accuracy(f[:n], y_train, f[n:], y_test),
            "layer": names.get(best, best), "validation": {names.get(k, k): v
                                                            for k, v in val.items()}}


def evaluate_rows(models: dict[str, DeepClusterNet], store: TileStore, *, split: Split,
                  seed: int, device: torch.device, progress: bool) -> dict[str, dict[str, Any]]:
    labels = store.labels
    both = np.concatenate([split.train, split.test])
    inner = stratified_split(labels[split.train], test_fraction=TEST_FRACTION, seed=seed + 1)
    size = next(iter(models.values())).spec.tile_size
    pixels = torch.flatten(read_float_tiles(store, both, tile_size=size), 1).numpy()
    rows = {"raw_pixels": knn_row({"pixels": pixels}, labels, split=split, inner=inner,
                                  names={})}
    for name, model in models.items():
        layers = list(layer_names(model))
        feats = extract_layers(model, store, indices=both, layers=layers, device=device,
                               progress=progress)
        rows[name] = knn_row(feats, labels, split=split, inner=inner,
                             names={k: layer_label(model.spec.arch, k) for k in layers})
    return rows


def format_table(rows: dict[str, dict[str, Any]], *, n_test: int) -> str:
    title = (f"k-NN accuracy on {n_test} digits held out of pretraining (layer chosen on "
             "validation tiles)")
    lines = [title, "| features | layer | k-NN accuracy |", "|---|---|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['layer']} | {100 * r['knn_accuracy']:.1f}% |")
    return "\n".join(lines)


def run_demo(
    run_dir: Path | str,
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    modality = get_modality(DEMO_MODALITY)
    store_path = run_dir / "store.zarr"
    log(f"ingesting the bundled MNIST subset into {store_path}")
    modality.ingest([], store_path, options={}, workers=1, progress=progress)
    store = TileStore(store_path)
    config: Config = resolve(recipe=modality.load_recipe(), overrides=[*(overrides or [])])
    split = store_split(store, store.labels, split_path=None, test_fraction=TEST_FRACTION,
                        seed=config.seed)
    pool = write_subset(store, split.train, run_dir / "pretrain.zarr")
    log(f"pretraining on the {pool.n} training digits; {len(split.test)} held out")
    config = resolve(recipe=modality.load_recipe(),
                     overrides=[f"store={pool.path}", *(overrides or [])])
    pretrain(config, run_dir, progress=progress, log=log)

    device = resolve_device(config.device)
    spec = model_spec(config, pool)
    torch.manual_seed(config.seed)
    random_init = DeepClusterNet(spec, n_clusters=config.cluster.k).to(device)
    state = RunDir(run_dir).load_checkpoint(map_location=device)
    trained = DeepClusterNet(spec, n_clusters=int(state["n_clusters"]))
    trained.load_weights(state["model"])
    log("evaluating raw pixels, the random-init and the pretrained network")
    rows = evaluate_rows({"random_init": random_init, "pretrained": trained.to(device)}, store,
                         split=split, seed=config.seed, device=device, progress=progress)
    table = format_table(rows, n_test=len(split.test))
    atomic_write_text(run_dir / "demo.json", json.dumps(
        {**rows, "split": split.source, "epochs": config.train.epochs}, indent=2))
    atomic_write_text(run_dir / "demo.md", table + "\n")
    log(table)
    return rows
