"""torch.distributed on CPU with gloo: shards, the reduced covariance, and a 2-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from domainclust.config import resolve
from domainclust.distributed import Dist, shard
from domainclust.engine import deepcluster
from domainclust.engine.descriptors import compute_descriptors
from domainclust.engine.sampling import cluster_uniform_indices, rank_share

TINY = ["subset_size=128", "k=6", "batch_size=16", "pca_dim=16", "train.updates_factor=0.5",
        "arch=resnet18", "model.width=0.25", "report=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_cover_the_items_in_rank_order() -> None:
    for n, world in [(10, 3), (7, 2), (128, 4)]:
        parts = [shard(n, Dist(rank=r, world=world)) for r in range(world)]
        assert np.array_equal(np.concatenate([np.arange(n)[p] for p in parts]), np.arange(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_rank_shares_are_disjoint_parts_of_one_uniform_draw() -> None:
    labels = np.repeat(np.arange(4), [1000, 100, 10, 2])
    draw = cluster_uniform_indices(labels, n_draws=4000, rng=np.random.default_rng(0))
    shares = [rank_share(draw, rank=r, world=4) for r in range(4)]
    assert sum(len(s) for s in shares) == len(draw)
    assert np.array_equal(np.sort(np.concatenate(shares)), np.sort(draw))
    for s in shares:  # each rank alone is still uniform over clusters (1000 draws, 250 each)
        counts = np.bincount(labels[s], minlength=4)
        assert np.all(np.abs(counts - 250) <= 3 * np.sqrt(250))
    # Step i of the ranks (per-rank batch B/world) is the global draw's i-th batch of B.
    batch = 64
    step0 = np.concatenate([s[: batch // 4] for s in shares])
    assert np.array_equal(np.sort(step0), np.sort(draw[:batch]))


def _descriptor_worker(rank: int, world: int, port: int, x: np.ndarray, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    d = Dist(rank=rank, world=world)
    part = torch.from_numpy(x[shard(len(x), d)])
    desc, _ = compute_descriptors(part.split(50), pca_dim=8, on_device=True, dist=d)
    np.save(f"{out}.{rank}.npy", desc.numpy())
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters importing torch
def test_descriptors_from_reduced_covariance_equal_the_single_process_ones(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400, 24)) @ rng.standard_normal((24, 24)) + 5).astype(np.float32)
    single, _ = compute_descriptors(torch.from_numpy(x).split(50), pca_dim=8)
    mp.spawn(_descriptor_worker, args=(2, free_port(), x, str(tmp_path / "d")), nprocs=2)
    both = np.concatenate([np.load(tmp_path / f"d.{r}.npy") for r in range(2)])
    # Same whitening up to the sign of each component.
    signs = np.sign((both * single).sum(0))
    np.testing.assert_allclose(both * signs, single, atol=2e-4)


@pytest.mark.slow
def test_two_processes_match_one_train_and_resume_with_another_world_size(
    mnist_store, tmp_path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    overrides = [f"store={mnist_store}", *TINY]
    deepcluster.pretrain(resolve(overrides=[*overrides, "epochs=1"]), one, progress=False,
                         log=lambda _: None)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "domainclust", "pretrain", "--store", str(mnist_store), "--run-dir", str(two),
           "--quiet", *[a for s in [*TINY, "epochs=1"] for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 0 |") == 1  # only rank 0 logs

    with np.load(one / "assignments" / "epoch_0000.npz") as a, \
         np.load(two / "assignments" / "epoch_0000.npz") as b:
        assert np.array_equal(a["indices"], b["indices"])
        assert np.array_equal(a["labels"], b["labels"])
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and np.isfinite(json.loads(lines[0])["loss"])
    state = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and not any(k.startswith("module.") for k in state["model"])

    # The 2-process run resumes in 1 process.
    history = deepcluster.pretrain(resolve(overrides=[*overrides, "epochs=2"]), two,
                                   progress=False, log=lambda _: None)
    assert [r["epoch"] for r in history] == [0, 1]
    assert history[0] == json.loads(lines[0]) and history[1]["nmi_prev"] is not None


def test_two_processes_train_the_prototype_head_and_one_resumes_it(mnist_store, tmp_path) -> None:
    """Rank 0 alone holds the descriptors; every rank builds the same head from the broadcast
    centroids and the shared whitening."""
    run = tmp_path / "two"
    settings = [*TINY, "cluster.head=prototypes"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "domainclust", "pretrain", "--store", str(mnist_store), "--run-dir", str(run),
           "--quiet", *[a for s in [*settings, "epochs=1"] for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["top.weight"].shape == (6, 16)  # k prototypes in the whitened space
    history = deepcluster.pretrain(resolve(overrides=[f"store={mnist_store}", *settings,
                                                      "epochs=2"]), run,
                                   progress=False, log=lambda _: None)
    assert [r["epoch"] for r in history] == [0, 1] and np.isfinite(history[1]["loss"])
