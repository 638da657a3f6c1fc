"""torch.distributed for DeepCluster: process group from the torchrun environment, and the few
collectives the loop needs (shards, sums, gather to rank 0, broadcast).

Launched by `torchrun`, every process sees RANK / WORLD_SIZE / LOCAL_RANK; without them the
run is a single process and every helper here is the identity. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from threadpoolctl import threadpool_limits

from domainclust.device import available_cores
from domainclust.errors import DomainclustError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def world_size() -> int:
    """Processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    return world_size() > 1


def init_from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun described (once); returns it and this rank's device."""
    if not launched_by_torchrun():
        return SINGLE, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cpu":  # the processes on one machine share its cores
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        cores = max(1, available_cores() // local_world)
        torch.set_num_threads(cores)
        threadpool_limits(limits=cores)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DomainclustError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "lower --nproc-per-node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank), device


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shard(n: int, d: Dist) -> slice:
    """This rank's contiguous share of n items; shards in rank order cover 0..n-1."""
    bounds = np.linspace(0, n, d.world + 1).round().astype(int)
    return slice(int(bounds[d.rank]), int(bounds[d.rank + 1]))


def all_reduce_sum_(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum `t` over ranks, in place (float64 stays float64: the covariance is a sum)."""
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(x: torch.Tensor, d: Dist, *, device: torch.device) -> torch.Tensor | None:
    """Concatenate every rank's rows in rank order on rank 0 (None on the others)."""
    if not d.enabled:
        return x
    x = x.to(device).contiguous()
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(d.world)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=device))
    rows = [int(s) for s in sizes]
    padded = torch.zeros((max(rows), *x.shape[1:]), dtype=x.dtype, device=device)
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(d.world)] if d.is_main else None
    dist.gather(padded, parts, dst=0)
    if not d.is_main:
        return None
    return torch.cat([p[:r] for p, r in zip(parts, rows)])


def broadcast_object(obj: Any, d: Dist, *, device: torch.device) -> Any:
    """Rank 0's `obj` on every rank (numpy arrays and dicts pickle fine)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def broadcast_tensor_(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        dist.broadcast(t, src=0)
    return t


def run_on_main(fn: Any, d: Dist, *, device: torch.device) -> Any:
    """`fn()` on rank 0, its result broadcast to every rank. A DomainclustError raised there is
    raised on every rank (the others would otherwise wait forever at the next collective)."""
    if not d.enabled:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    if d.is_main:
        try:
            outcome = ("ok", fn())
        except DomainclustError as exc:
            outcome = ("error", str(exc))
    status, value = broadcast_object(outcome, d, device=device)
    if status == "error":
        raise DomainclustError(value)
    return value
