"""`domainclust demo`: ingest the bundled MNIST subset, pretrain on CPU, compare with random init."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from domainclust.config import Config, resolve
from domainclust.deepcluster import model_spec, pretrain
from domainclust.device import resolve_device
from domainclust.evaluation import embed_store, knn_accuracy, nmi_to_labels, split_indices
from domainclust.modality import get_modality
from domainclust.model import DeepClusterNet
from domainclust.rundir import RunDir, atomic_write_text
from domainclust.store import TileStore

DEMO_MODALITY = "mnist"


def evaluate_model(
    model: DeepClusterNet, store: TileStore, config: Config, *, progress: bool
) -> dict[str, float]:
    device = next(model.parameters()).device
    features = embed_store(model, store, device=device, progress=progress)
    labels = store.labels
    train, test = split_indices(store.n, test_fraction=0.2, seed=config.seed)
    return {
        "knn_accuracy": knn_accuracy(features[train], labels[train], features[test], labels[test]),
        "nmi_labels": nmi_to_labels(features, labels, pca_dim=config.cluster.pca_dim,
                                    seed=config.seed),
    }


def format_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| features | k-NN accuracy | NMI to labels |", "|---|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['knn_accuracy']:.1f}% | {r['nmi_labels']:.3f} |")
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
    config = resolve(recipe=modality.load_recipe(),
                     overrides=[f"store={store_path}", *(overrides or [])])
    store = TileStore(store_path)

    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    random_init = DeepClusterNet(model_spec(config, store), n_clusters=config.cluster.k).to(device)
    log("evaluating the randomly initialised network")
    rows = {"random init": evaluate_model(random_init, store, config, progress=progress)}

    pretrain(config, run_dir, progress=progress, log=log)
    state = RunDir(run_dir).load_checkpoint(map_location=device)
    trained = DeepClusterNet(model_spec(config, store), n_clusters=int(state["n_clusters"]))
    trained.load_state_dict(state["model"])
    log("evaluating the pretrained network")
    rows[f"DeepCluster, {config.train.epochs} epochs"] = evaluate_model(
        trained.to(device), store, config, progress=progress
    )
    table = format_table(rows)
    atomic_write_text(run_dir / "demo.json", json.dumps(rows, indent=2))
    atomic_write_text(run_dir / "demo.md", table + "\n")
    log(table)
    return rows
