"""The DeepCluster loop (thesis Algorithms 1 and 2), resumable from its run directory.

Each epoch: sample the subset → stage it → extract features → PCA-whiten + L2 → cluster
(no empty clusters) → re-initialise the top layer → train on the cluster ids with a
cluster-uniform sampler → checkpoint and metrics. Every random choice of epoch e is drawn from
generators seeded by (seed, e), so a resumed run repeats exactly what the interrupted one would
have done.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from domainclust.augment import AugmentedTiles, build_augmentation, seed_worker
from domainclust.backbones import auto_stem
from domainclust.config import Config
from domainclust.descriptors import compute_descriptors
from domainclust.device import available_cores, limit_cpu_threads, resolve_device
from domainclust.errors import DomainclustError
from domainclust.extract import extract_features
from domainclust.kmeans import kmeans
from domainclust.metrics import cluster_size_stats, nmi, nmi_on_common
from domainclust.model import DeepClusterNet, ModelSpec
from domainclust.pic import pic
from domainclust.report import report_after_pretrain
from domainclust.rundir import RunDir
from domainclust.sampling import ClusterUniformSampler, sample_subset
from domainclust.seeds import derive_seed
from domainclust.staging import stage_tiles
from domainclust.store import TileStore

CHECKPOINT_FORMAT = 1


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent seeds per (run seed, epoch, purpose)."""
    return derive_seed(seed, epoch, stream)


def model_spec(config: Config, store: TileStore) -> ModelSpec:
    tile_size = config.data.tile_size or store.tile_size
    stem = config.model.stem
    return ModelSpec(
        arch=config.model.arch,
        frontend=config.model.frontend,
        channels=store.channels,
        raw_channels=tuple(config.model.raw_channels),
        tile_size=tile_size,
        dropout=config.model.dropout,
        stem=auto_stem(tile_size) if stem == "auto" else stem,
        width=config.model.width,
    )


def cluster_descriptors(
    x: np.ndarray, config: Config, *, seed: int, device: torch.device
) -> dict[str, Any]:
    """Cluster ids plus the diagnostics the metrics log records."""
    c = config.cluster
    if c.method == "kmeans":
        r = kmeans(x, k=c.k, iterations=c.iterations, seed=seed, backend=c.backend, device=device)
        return {"labels": r.labels, "n_clusters": c.k, "objective": r.objective, "n_empty": r.n_empty}
    if c.method == "pic":
        r = pic(x, neighbors=c.pic_neighbors, seed=seed)
        return {"labels": r.labels, "n_clusters": r.n_clusters, "n_singletons": r.n_singletons,
                "pic_sigma": r.sigma}
    raise DomainclustError(f"unknown clustering '{c.method}'; choose kmeans or pic")


def build_optimizer(params: Any, *, config: Config) -> torch.optim.SGD:
    t = config.train
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def loader_workers(config: Config, device: torch.device) -> int:
    """Augmentation runs in the main process on CPU (workers would steal the compute cores);
    with a GPU, worker processes keep it fed."""
    if config.data.workers is not None:
        return config.data.workers
    return min(8, available_cores() - 1) if device.type == "cuda" else 0


def train_one_epoch(
    model: DeepClusterNet,
    loader: torch.utils.data.DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    head_optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: bool,
) -> float:
    """One pass over the cluster-uniform sampler; returns the mean loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    total, count = torch.zeros((), device=device), 0
    with tqdm(loader, desc="train", unit="batch", disable=not progress, leave=False) as bar:
        for step, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            head_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            head_optimizer.step()
            total += loss.detach() * len(x)  # stays on the device: no sync per step
            count += len(x)
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{float(total) / count:.3f}", refresh=False)
    return float(total) / max(count, 1)


def _check_checkpoint(state: dict[str, Any], spec: ModelSpec, store: TileStore, run: RunDir) -> None:
    saved = ModelSpec(**{**state["spec"], "channels": tuple(state["spec"]["channels"]),
                         "raw_channels": tuple(state["spec"]["raw_channels"])})
    if saved.channels != spec.channels:
        raise DomainclustError(
            f"checkpoint {run.checkpoint_path} was trained on channels {list(saved.channels)} but "
            f"store {store.path} has {list(spec.channels)}; use a matching store or a new --run-dir"
        )
    if saved != spec:
        raise DomainclustError(
            f"checkpoint {run.checkpoint_path} was built as {saved} but the config asks for {spec}"
        )


def pretrain(
    config: Config,
    run_dir: Path | str,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or resume) DeepCluster pretraining; returns the per-epoch metrics."""
    if not config.data.store:
        raise DomainclustError("no store given; pass --store PATH (or --set store=PATH)")
    limit_cpu_threads()
    device = resolve_device(config.device)
    store = TileStore(config.data.store)
    run = RunDir(run_dir)
    run.prepare(config)
    spec = model_spec(config, store)
    n_subset = min(config.data.subset_size or store.n, store.n)
    if config.cluster.method == "kmeans" and config.cluster.k > n_subset:
        raise DomainclustError(
            f"k={config.cluster.k} is larger than the {n_subset} tiles clustered per epoch "
            f"(store {store.path}); lower k or raise subset_size"
        )

    torch.manual_seed(config.seed)  # the random init is part of the run's identity
    model = DeepClusterNet(spec, n_clusters=config.cluster.k).to(device)
    trunk_params = [p for n, p in model.named_parameters() if not n.startswith("top.")]
    optimizer = build_optimizer(trunk_params, config=config)
    history: list[dict[str, Any]] = []
    start = 0
    state = run.load_checkpoint(map_location=device)
    if state is not None:
        _check_checkpoint(state, spec, store, run)
        model.reset_head(int(state["n_clusters"]))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start = int(state["epoch"]) + 1
        run.write_metrics(history)
        log(f"resuming {run.path} after epoch {start - 1}")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    for epoch in range(start, config.train.epochs):
        record = run_epoch(model, optimizer, store=store, run=run, config=config,
                           epoch=epoch, device=device, progress=progress)
        history.append(record)
        run.save_checkpoint({
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "spec": dataclasses.asdict(spec),
            "n_clusters": record["n_clusters"],
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "store": {"path": str(store.path), "channels": list(store.channels),
                      "modality": store.modality},
        })
        run.write_metrics(history)
        log(_summary(record))
    if config.report:
        report_after_pretrain(run.path, progress=progress, log=log)
    return history


def run_epoch(
    model: DeepClusterNet,
    optimizer: torch.optim.Optimizer,
    *,
    store: TileStore,
    run: RunDir,
    config: Config,
    epoch: int,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    subset = sample_subset(
        n_total=store.n, subset_size=config.data.subset_size, chunk_len=store.chunk_len,
        tiles_per_chunk=config.data.tiles_per_chunk,
        rng=np.random.default_rng(epoch_seed(config.seed, epoch, 0)),
    )
    tiles = stage_tiles(store, subset, cache=config.data.cache, cache_dir=run.cache_dir,
                        progress=progress)
    lap("stage")

    features = extract_features(model, tiles, store=store, batch_size=config.train.batch_size,
                                device=device, progress=progress)
    descriptors, _ = compute_descriptors(features, pca_dim=config.cluster.pca_dim,
                                         spill_dir=run.cache_dir)
    lap("extract")

    clusters = cluster_descriptors(descriptors, config, seed=epoch_seed(config.seed, epoch, 1),
                                   device=device)
    labels = clusters.pop("labels")
    k = clusters["n_clusters"]
    run.save_assignments(epoch, indices=subset, labels=labels)
    previous = run.load_assignments(epoch - 1) if epoch > 0 else None
    record: dict[str, Any] = {
        "epoch": epoch,
        "n_tiles": len(subset),
        **clusters,
        **cluster_size_stats(labels, k=k),
        "nmi_prev": nmi_on_common(*previous, subset, labels) if previous else None,
    }
    if store.has_labels:
        truth = store.labels[subset]
        known = truth >= 0  # adapters mark tiles without a label as -1
        record["nmi_labels"] = nmi(truth[known], labels[known]) if known.sum() > 1 else None
    lap("cluster")

    t = config.train
    seed = epoch_seed(config.seed, epoch, 2)
    torch.manual_seed(seed)  # the new top layer's init and dropout
    model.reset_head(k)
    head_optimizer = build_optimizer(model.top.parameters(), config=config)
    dataset = AugmentedTiles(
        tiles, labels, scale=store.attrs["scale"], offset=store.attrs["offset"],
        transform=build_augmentation(config.data.augment, tile_size=model.spec.tile_size,
                                     seed=seed),
    )
    n_draws = int(t.updates_factor * len(subset)) // t.batch_size * t.batch_size or len(subset)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=t.batch_size,
        sampler=ClusterUniformSampler(labels, n_draws=n_draws, seed=seed),
        num_workers=loader_workers(config, device), worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    record["loss"] = train_one_epoch(model, loader, optimizer=optimizer,
                                     head_optimizer=head_optimizer, device=device,
                                     progress=progress)
    lap("train")
    record["seconds"] = seconds
    return record


def _summary(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']}", f"loss {r['loss']:.3f}", f"clusters {r['n_clusters']}",
             f"size {r['cluster_size_min']}..{r['cluster_size_max']}"]
    if r.get("nmi_prev") is not None:
        parts.append(f"nmi(t-1) {r['nmi_prev']:.3f}")
    if r.get("nmi_labels") is not None:
        parts.append(f"nmi(labels) {r['nmi_labels']:.3f}")
    parts.append(f"{sum(r['seconds'].values()):.1f}s")
    return " | ".join(parts)
