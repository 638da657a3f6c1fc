"""k-means and k-NN backends behind one interface, chosen by what is installed and works here.

`faiss` (CPU, or GPU when the installed faiss has GPUs), `cuvs` (NVIDIA cuVS, an optional
extra, CUDA only) and `torch` (always there, CUDA or CPU). `select_backend` probes a backend
once per (name, device) on a tiny problem before relying on it: a wheel can import fine and
still have no kernels for the GPU at hand (the community faiss-gpu-cu12 wheel on sm_90).
A backend that fails its probe is skipped with a message naming the error.
"""

from __future__ import annotations

import functools
import warnings
from typing import Protocol

import numpy as np
import torch

from domainclust.config import BACKENDS, one_of
from domainclust.errors import DomainclustError

NAMES = tuple(b for b in BACKENDS if b != "auto")  # the implementations
# Preference when `auto`: on a GPU the GPU-native libraries first; on CPU faiss (its BLAS
# k-means is faster than torch's on CPU), torch last because it always works.
AUTO_ORDER = {"cuda": ("cuvs", "faiss", "torch"), "cpu": ("faiss", "torch")}


class Backend(Protocol):
    """What every backend provides. Inputs are float32 (N, d) on `device` or on the host."""

    name: str
    device: torch.device

    def kmeans(
        self, x: torch.Tensor, *, k: int, iterations: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (N,) int64 and centroids (k, d) float32, on `device`; may leave clusters
        empty (the caller repairs them)."""
        ...

    def knn(
        self, database: torch.Tensor, queries: torch.Tensor, *, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared L2 distances and indices (Q, k) of each query's k nearest database rows."""
        ...


def _build(name: str, device: torch.device) -> Backend:
    if name == "torch":
        from domainclust.clustering.backends.torch_backend import TorchBackend

        return TorchBackend(device)
    if name == "faiss":
        from domainclust.clustering.backends.faiss_backend import FaissBackend

        return FaissBackend(device)
    if name == "cuvs":
        from domainclust.clustering.backends.cuvs_backend import CuvsBackend

        return CuvsBackend(device)
    raise DomainclustError(f"unknown k-means/k-NN backend '{name}'; choose auto, {', '.join(NAMES)}")


def _probe(backend: Backend) -> None:
    """A tiny k-means and k-NN whose answer is known; raises when the backend is unusable."""
    rng = np.random.default_rng(0)
    centers = np.repeat(np.eye(4, 8, dtype=np.float32) * 10, 16, axis=0)
    x = torch.from_numpy(centers + rng.standard_normal((64, 8)).astype(np.float32) * 0.1)
    x = x.to(backend.device)
    labels, centroids = backend.kmeans(x, k=4, iterations=10, seed=0)
    if labels.shape != (64,) or centroids.shape != (4, 8):
        raise RuntimeError(f"k-means returned shapes {tuple(labels.shape)}, {tuple(centroids.shape)}")
    _, idx = backend.knn(x, x[:4], k=1)
    if idx.cpu().view(-1).tolist() != [0, 1, 2, 3]:
        raise RuntimeError("k-NN did not find each query itself")


@functools.cache
def _probed(name: str, device: torch.device) -> Backend | str:
    """The working backend, or a one-line reason why not (cached: probe once per process)."""
    try:
        backend = _build(name, device)
        _probe(backend)
    except DomainclustError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use this backend here
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {first}"
    return backend


def select_backend(name: str = "auto", *, device: torch.device | None = None) -> Backend:
    """The backend `name` on `device`, or with `auto` the first that works in `AUTO_ORDER`.

    An explicit name that does not work here is an error (the user asked for it); with `auto`
    each failure is reported as a warning and the next backend is tried. torch never fails.
    """
    device = torch.device(device or "cpu")
    if name != "auto":
        if name not in NAMES:
            raise DomainclustError(
                f"unknown k-means/k-NN backend '{name}'; choose {one_of(BACKENDS)}")
        got = _probed(name, device)
        if isinstance(got, str):
            raise DomainclustError(
                f"backend '{name}' does not work on {device} here ({got}); "
                "use --set cluster.backend=auto"
            )
        return got
    for candidate in AUTO_ORDER.get(device.type, ("torch",)):
        got = _probed(candidate, device)
        if not isinstance(got, str):
            return got
        if candidate != "cuvs" or "ModuleNotFoundError" not in got:  # cuvs is optional
            warnings.warn(f"k-means backend {candidate} unusable on {device} ({got}); "
                          "falling back", stacklevel=2)
    raise AssertionError("the torch backend always works")  # pragma: no cover


def available(device: torch.device | None = None) -> dict[str, str]:
    """Each backend's status on `device`: 'ok' or the reason it does not work."""
    device = torch.device(device or "cpu")
    out = {}
    for name in NAMES:
        got = _probed(name, device)
        out[name] = got if isinstance(got, str) else "ok"
    return out
