"""Device detection and CPU thread limits: detect, don't configure."""

from __future__ import annotations

import os

import torch

from domainclust.errors import DomainclustError


def available_cores() -> int:
    """Cores this process may run on (respects affinity and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def limit_cpu_threads() -> int:
    """Cap torch and BLAS/OpenMP threads at the available cores.

    Oversubscription made eigh 4x slower on a 2-core machine (DESIGN.md).
    """
    from threadpoolctl import threadpool_limits

    cores = available_cores()
    torch.set_num_threads(cores)
    threadpool_limits(limits=cores)
    try:
        import faiss

        faiss.omp_set_num_threads(cores)
    except ImportError:  # pragma: no cover - faiss is a hard dependency
        pass
    return cores


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; an explicit name must be usable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DomainclustError(
            f"device '{name}' was requested but CUDA is not available here; use --set device=auto"
        )
    return device


def device_memory_budget(device: torch.device, *, fraction: float = 0.25) -> int:
    """Bytes of accelerator memory a stage may keep without a host copy (0 on CPU)."""
    if device.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    return int(fraction * free)
