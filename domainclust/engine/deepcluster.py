"""The DeepCluster loop (thesis Algorithms 1 and 2), resumable from its run directory.

Each epoch: sample the subset → stage it → extract features → PCA-whiten + L2 → cluster
(no empty clusters) → re-initialise the top layer (`cluster.head: prototypes`: set it to the
centroids) → train on the cluster ids with a cluster-uniform sampler → checkpoint and metrics.
The paper's ablations are settings:
`cluster.reassign_every` (epochs between re-clusterings; in between, the subset, the ids and
the head stay), `cluster.features` (post-ReLU) and `train.sampler` (plain). Every random
choice of epoch e is drawn from generators seeded by (seed, e), so a resumed run repeats
exactly what the interrupted one would have done.

Under torchrun every rank stages the subset, extracts its shard, and the whitening statistics
are reduced across ranks; rank 0 clusters and broadcasts the ids; each rank trains on its part
of one global cluster-uniform draw (DDP); rank 0 alone writes the run directory. With CUDA,
the staged subset lives on the GPU and batches are augmented there (`data.batch_augment`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from domainclust import distributed
from domainclust.clustering.kmeans import kmeans
from domainclust.clustering.pic import pic
from domainclust.config import Config
from domainclust.data.store import TileStore
from domainclust.device import (
    available_cores,
    device_memory_budget,
    limit_cpu_threads,
    resolve_device,
)
from domainclust.distributed import SINGLE, Dist
from domainclust.engine.augment import AugmentedTiles, build_augmentation, seed_worker
from domainclust.engine.band_jitter import JitteredBatches, parse_band_jitter
from domainclust.engine.batch_augment import build_batch_augmentation
from domainclust.engine.descriptors import Whitening, compute_descriptors
from domainclust.engine.device_batches import AugmentedBatches, StagedTiles
from domainclust.engine.extract import extract_features
from domainclust.engine.metrics import cluster_size_stats, nmi, nmi_on_common
from domainclust.engine.prototypes import cluster_centroids, prototype_head
from domainclust.engine.sampling import EpochSampler, rank_share, sample_subset, training_draw
from domainclust.engine.staging import stage_tiles
from domainclust.engine.warmstart import apply_init, init_record, read_init
from domainclust.errors import DomainclustError
from domainclust.networks.backbones import auto_stem
from domainclust.networks.export import spec_from_dict
from domainclust.networks.model import DeepClusterNet, ModelSpec
from domainclust.report import report_after_pretrain
from domainclust.rundir import RunDir, absolute_store, atomic_write_text
from domainclust.seeds import derive_seed
from domainclust.validation import check_config

CHECKPOINT_FORMAT = 1
INIT_RECORD = "init.json"  # R/init.json: the network the trunk started from, channel map


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
    r = pic(x, neighbors=c.pic_neighbors, seed=seed, backend=c.backend, device=device)
    return {"labels": r.labels, "n_clusters": r.n_clusters, "n_singletons": r.n_singletons,
            "pic_sigma": r.sigma}


def build_optimizer(params: Any, *, config: Config) -> torch.optim.SGD:
    t = config.train
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def loader_workers(config: Config, device: torch.device) -> int:
    """Augmentation runs in the main process on CPU (workers would steal the compute cores);
    with a GPU, worker processes keep it fed."""
    if config.data.workers is not None:
        return config.data.workers
    return min(8, available_cores() - 1) if device.type == "cuda" else 0


def use_batch_augment(config: Config, device: torch.device) -> bool:
    """Whole-batch augmentation on the device: automatic with CUDA when the recipe has a
    batched form; `batched` forces it (also on CPU; `check_config` refuses it for a recipe
    without one), `albumentations` keeps the per-sample path."""
    mode = config.data.batch_augment
    supported = build_batch_augmentation(config.data.augment, tile_size=1, seed=0) is not None
    return mode == "batched" or (mode == "auto" and supported and device.type == "cuda")


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    *,
    optimizer: torch.optim.Optimizer,
    head_optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: bool,
    dist: Dist = SINGLE,
) -> float:
    """One pass over the cluster-uniform sampler; returns the mean loss (over all ranks)."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    total, count = torch.zeros((), device=device), 0
    with tqdm(loader, desc="train", unit="batch", disable=not progress, leave=False) as bar:
        for step, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
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
    sums = torch.stack([total.double(), torch.tensor(float(count), device=device).double()])
    distributed.all_reduce_sum_(sums, dist)
    return float(sums[0]) / max(float(sums[1]), 1.0)


def _check_checkpoint(state: dict[str, Any], spec: ModelSpec, store: TileStore, run: RunDir) -> None:
    saved = spec_from_dict(state["spec"], source=run.checkpoint_path)
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
    """Run (or resume) DeepCluster pretraining; returns the per-epoch metrics.

    The config is checked against the store before the run dir is written, so a refused
    setting can be corrected on the same run dir. A local store is recorded by its absolute
    path, so the run dir names it from any working directory. Launched by torchrun, each
    process joins the process group (gloo on CPU, nccl on CUDA).
    """
    if not config.data.store:
        raise DomainclustError("no store given; pass --store PATH (or --set store=PATH)")
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, store=absolute_store(config.data.store)))
    config = resumed_init(config, RunDir(run_dir), log=log)
    store = TileStore(config.data.store)
    check_config(config, n_tiles=min(config.data.subset_size or store.n, store.n),
                 store_tile_size=store.tile_size, world=distributed.world_size())
    limit_cpu_threads()
    d, device = distributed.init_from_env(resolve_device(config.device))
    try:
        return _pretrain(config, RunDir(run_dir), store=store, device=device, dist=d,
                         progress=progress and d.is_main, log=log if d.is_main else _quiet)
    finally:
        distributed.shutdown(d)


def _quiet(_: str) -> None:
    pass


def resumed_init(config: Config, run: RunDir, *, log: Callable[[str], None]) -> Config:
    """`model.init` made absolute; a run dir with checkpoints resumes them, so the init it
    recorded stays (a different one given now is ignored, and said so)."""
    init = config.model.init and os.path.abspath(config.model.init)
    if run.checkpoint_path.exists() and run.config_path.exists():
        recorded = run.load_config().model.init
        if init and init != recorded:
            log(f"{run.path} has checkpoints: resuming them, not model.init {init}")
        init = recorded
    return dataclasses.replace(config, model=dataclasses.replace(config.model, init=init))


def _pretrain(
    config: Config,
    run: RunDir,
    *,
    store: TileStore,
    device: torch.device,
    dist: Dist,
    progress: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    spec = model_spec(config, store)
    torch.manual_seed(config.seed)  # the random init is part of the run's identity
    # Built before the run dir is written: they refuse tiles, channels or a recipe that do not fit.
    model = DeepClusterNet(spec, n_clusters=config.cluster.k)
    started = None
    if config.model.init and not run.checkpoint_path.exists():
        started = start_from(model, config.model.init, log=log)
    model = model.to(device)
    build_augmentation(config.data.augment, tile_size=spec.tile_size, seed=0)
    distributed.run_on_main(lambda: run.prepare(config), dist, device=device)
    if started is not None and dist.is_main:
        atomic_write_text(run.path / INIT_RECORD, json.dumps(started, indent=2) + "\n")
    trunk_params = [p for n, p in model.named_parameters() if not n.startswith("top.")]
    optimizer = build_optimizer(trunk_params, config=config)
    history: list[dict[str, Any]] = []
    start = 0
    state = run.load_checkpoint(map_location=device)
    if state is not None:  # any world size resumes any other: the state is the same
        _check_checkpoint(state, spec, store, run)
        started = state.get("init")
        model.load_weights(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start = int(state["epoch"]) + 1
        if dist.is_main:
            run.write_metrics(history)
        log(f"resuming {run.path} after epoch {start - 1}")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    for epoch in range(start, config.train.epochs):
        record = run_epoch(model, optimizer, store=store, run=run, config=config,
                           epoch=epoch, device=device, progress=progress, dist=dist)
        history.append(record)
        if dist.is_main:
            save_epoch(run, model=model, optimizer=optimizer, spec=spec, store=store,
                       record=record, history=history, init=started)
        distributed.barrier(dist)
        log(_summary(record))
    if config.report and dist.is_main:
        report_after_pretrain(run.path, progress=progress, log=log)
    return history


def save_epoch(
    run: RunDir,
    *,
    model: DeepClusterNet,
    optimizer: torch.optim.Optimizer,
    spec: ModelSpec,
    store: TileStore,
    record: dict[str, Any],
    history: list[dict[str, Any]],
    init: dict[str, Any] | None = None,
) -> None:
    run.save_checkpoint({
        "format": CHECKPOINT_FORMAT,
        "epoch": record["epoch"],
        "spec": dataclasses.asdict(spec),
        "n_clusters": record["n_clusters"],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": history,
        "store": {"path": str(store.path), "channels": list(store.channels),
                  "modality": store.modality},
        "init": init,  # what the trunk started from (`start_from`), None: random init
    })
    run.write_metrics(history)


def start_from(model: DeepClusterNet, init: str, *, log: Callable[[str], None]
               ) -> dict[str, Any]:
    """Load `init`'s trunk into `model` (conv1 matched by channel name); returns the record."""
    source = read_init(init)
    mapping = apply_init(model, source)
    log(f"trunk from {source.file}; channels: {mapping.describe()}")
    return init_record(source, mapping)


class _Laps:
    """Seconds per stage of an epoch."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.clock, 3)
        self.clock = now


def stage_epoch(
    store: TileStore, *, run: RunDir, config: Config, epoch: int, device: torch.device,
    dist: Dist, progress: bool,
) -> tuple[np.ndarray, np.ndarray, StagedTiles | None]:
    """This epoch's subset indices, its tiles staged locally, and (fast path) on the device."""
    assigned = epoch - epoch % config.cluster.reassign_every  # the subset of the last clustering
    subset = sample_subset(
        n_total=store.n, subset_size=config.data.subset_size, chunk_len=store.chunk_len,
        tiles_per_chunk=config.data.tiles_per_chunk,
        rng=np.random.default_rng(epoch_seed(config.seed, assigned, 0)),
    )
    cache_dir = run.cache_dir / f"rank{dist.rank}" if dist.enabled else run.cache_dir
    tiles = stage_tiles(store, subset, cache=config.data.cache, cache_dir=cache_dir,
                        progress=progress)
    staged = None
    if use_batch_augment(config, device):
        staged = StagedTiles(tiles, scale=store.attrs["scale"], offset=store.attrs["offset"],
                             device=device)
    return subset, tiles, staged


def describe_epoch(
    model: DeepClusterNet, tiles: np.ndarray, staged: StagedTiles | None, *, store: TileStore,
    run: RunDir, config: Config, device: torch.device, dist: Dist, progress: bool,
) -> tuple[np.ndarray | torch.Tensor | None, Whitening]:
    """Descriptors of the whole subset on rank 0 (None on the other ranks) and the whitening
    (on every rank); each rank extracts its shard and the whitening is fitted on the covariance
    summed over ranks."""
    part = distributed.shard(len(tiles), dist)
    source = staged.shard(part) if staged is not None else tiles[part]
    features = extract_features(model, source, store=store, batch_size=config.train.batch_size,
                                device=device, progress=progress,
                                relu=config.cluster.features == "post-relu")
    cuda = device.type == "cuda"
    descriptors, whitening = compute_descriptors(
        features, pca_dim=config.cluster.pca_dim, spill_dir=run.cache_dir,
        device_budget_bytes=device_memory_budget(device), on_device=cuda or dist.enabled,
        dist=dist,
    )
    if not dist.enabled:
        return descriptors, whitening
    return distributed.gather_rows(descriptors, dist, device=device), whitening


def cluster_epoch(
    descriptors: np.ndarray | torch.Tensor | None, subset: np.ndarray, *, store: TileStore,
    run: RunDir, config: Config, epoch: int, device: torch.device, dist: Dist,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rank 0 clusters, saves the assignments and computes the metrics; every rank gets the
    cluster ids and the record."""

    def on_main() -> tuple[np.ndarray, dict[str, Any]]:
        clusters = cluster_descriptors(descriptors, config,
                                       seed=epoch_seed(config.seed, epoch, 1), device=device)
        labels = clusters.pop("labels")
        run.save_assignments(epoch, indices=subset, labels=labels)
        previous = run.load_assignments(epoch - 1) if epoch > 0 else None
        record: dict[str, Any] = {
            "epoch": epoch,
            "n_tiles": len(subset),
            **clusters,
            **cluster_size_stats(labels, k=clusters["n_clusters"]),
            "nmi_prev": nmi_on_common(*previous, subset, labels) if previous else None,
        }
        if store.has_labels:
            truth = store.labels[subset]
            known = truth >= 0  # adapters mark tiles without a label as -1
            record["nmi_labels"] = nmi(truth[known], labels[known]) if known.sum() > 1 else None
        return labels, record

    return distributed.run_on_main(on_main, dist, device=device)


def keep_assignments(
    subset: np.ndarray, *, run: RunDir, epoch: int, n_clusters: int, device: torch.device,
    dist: Dist,
) -> tuple[np.ndarray, dict[str, Any]]:
    """An epoch between re-clusterings: the previous epoch's ids, carried forward on disk so a
    resumed run finds them."""

    def on_main() -> tuple[np.ndarray, dict[str, Any]]:
        kept = run.load_assignments(epoch - 1)
        if kept is None or not np.array_equal(kept[0], subset):
            raise DomainclustError(f"{run.path} lacks the cluster ids of epoch {epoch - 1} for "
                                   "this subset; it cannot skip re-clustering at this epoch")
        labels = kept[1]
        run.save_assignments(epoch, indices=subset, labels=labels)
        return labels, {"epoch": epoch, "n_tiles": len(subset), "n_clusters": n_clusters,
                        "reassigned": False, **cluster_size_stats(labels, k=n_clusters)}

    return distributed.run_on_main(on_main, dist, device=device)


def training_batches(
    tiles: np.ndarray, staged: StagedTiles | None, labels: np.ndarray, *, store: TileStore,
    config: Config, tile_size: int, seed: int, device: torch.device, dist: Dist,
) -> Any:
    """This rank's batches: its share of one global draw (uniform over clusters unless
    `train.sampler` says plain), augmented on the device (fast path) or by albumentations in a
    DataLoader, then band-jittered when the recipe asks for it."""
    t = config.train
    n_draws = int(t.updates_factor * len(labels)) // t.batch_size * t.batch_size or len(labels)
    batch = t.batch_size // dist.world
    # Each rank's own augmentation stream; rank 0 keeps the single-process one.
    aug_seed = seed if dist.is_main else seed * 1000 + dist.rank
    draw = training_draw(labels, n_draws=n_draws, rng=np.random.default_rng(seed),
                         sampler=t.sampler)
    positions = rank_share(draw, rank=dist.rank, world=dist.world)
    if staged is not None:
        batches: Any = AugmentedBatches(
            staged, labels, positions=positions, batch_size=batch,
            augment=build_batch_augmentation(config.data.augment, tile_size=tile_size,
                                             seed=aug_seed),
        )
    else:
        dataset = AugmentedTiles(
            tiles, labels, scale=store.attrs["scale"], offset=store.attrs["offset"],
            transform=build_augmentation(config.data.augment, tile_size=tile_size,
                                         seed=aug_seed),
        )
        batches = torch.utils.data.DataLoader(
            dataset, batch_size=batch, sampler=EpochSampler(positions),
            collate_fn=dataset.collate, num_workers=loader_workers(config, device),
            worker_init_fn=seed_worker, pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
    jitter = parse_band_jitter(config.data.augment)
    return batches if jitter is None else JitteredBatches(batches, jitter=jitter, seed=aug_seed)


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
    dist: Dist = SINGLE,
) -> dict[str, Any]:
    lap = _Laps()
    subset, tiles, staged = stage_epoch(store, run=run, config=config, epoch=epoch,
                                        device=device, dist=dist, progress=progress)
    lap("stage")
    reassign = epoch % config.cluster.reassign_every == 0
    head = None
    if reassign:
        descriptors, whitening = describe_epoch(model, tiles, staged, store=store, run=run,
                                                config=config, device=device, dist=dist,
                                                progress=progress)
        lap("extract")
        labels, record = cluster_epoch(descriptors, subset, store=store, run=run, config=config,
                                       epoch=epoch, device=device, dist=dist)
        if config.cluster.head == "prototypes":
            centroids = distributed.run_on_main(
                lambda: cluster_centroids(descriptors, labels, n_clusters=record["n_clusters"]),
                dist, device=device)
            head = prototype_head(whitening, centroids, temperature=config.cluster.temperature,
                                  relu=config.cluster.features == "post-relu")
        del descriptors
        lap("cluster")
    else:
        labels, record = keep_assignments(subset, run=run, epoch=epoch,
                                          n_clusters=model.top.out_features, device=device,
                                          dist=dist)

    seed = epoch_seed(config.seed, epoch, 2)
    torch.manual_seed(seed)  # the new top layer's init and dropout
    if head is not None:
        model.set_prototypes(head)
    elif reassign:
        model.reset_head(record["n_clusters"])
    if dist.rank:
        torch.manual_seed(seed * 1000 + dist.rank)  # own dropout masks; the head is rank 0's
    head_optimizer = build_optimizer(model.top.parameters(), config=config)
    batches = training_batches(tiles, staged, labels, store=store, config=config,
                               tile_size=model.spec.tile_size, seed=seed, device=device,
                               dist=dist)
    record["loss"] = train_one_epoch(wrap_ddp(model, device=device, dist=dist), batches,
                                     optimizer=optimizer, head_optimizer=head_optimizer,
                                     device=device, progress=progress, dist=dist)
    lap("train")
    record["seconds"] = lap.seconds
    return record


def wrap_ddp(model: DeepClusterNet, *, device: torch.device, dist: Dist) -> nn.Module:
    """DistributedDataParallel over the model as it is this epoch (its head is new each epoch,
    so it is wrapped again; wrapping broadcasts rank 0's parameters)."""
    if not dist.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)


def _summary(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']}", f"loss {r['loss']:.3f}", f"clusters {r['n_clusters']}",
             f"size {r['cluster_size_min']}..{r['cluster_size_max']}"]
    if r.get("nmi_prev") is not None:
        parts.append(f"nmi(t-1) {r['nmi_prev']:.3f}")
    if r.get("nmi_labels") is not None:
        parts.append(f"nmi(labels) {r['nmi_labels']:.3f}")
    parts.append(f"{sum(r['seconds'].values()):.1f}s")
    return " | ".join(parts)
