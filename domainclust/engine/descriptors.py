"""Streaming descriptors: features → PCA-whitening → L2-normalisation, never holding N×D.

Pass 1 accumulates the mean and the D×D covariance batch by batch (shifted by the first
batch's mean against cancellation) and spills the raw features to disk when they do not fit
the memory budget; pass 2 projects them. Only N×pca_dim descriptors stay in memory.
The covariance + eigh route replaces faiss `PCAMatrix`, which takes minutes on 4096-d features.
Across torch.distributed ranks the covariance is a sum: each rank accumulates its shard, the
sums are all-reduced, rank 0 fits the whitening and every rank projects its own shard.
On a GPU the features and descriptors stay in GPU memory while they fit a budget.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from domainclust.distributed import SINGLE, Dist, all_reduce_sum_, broadcast_object
from domainclust.errors import DomainclustError

EPS = 1e-12
REL_TOL = 1e-6  # eigenvalues below this fraction of the largest count as zero


@dataclass
class Whitening:
    """x ↦ (x - mean) @ components / sqrt(eigenvalues), then L2-normalised."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (D, d), columns sorted by decreasing eigenvalue
    eigenvalues: torch.Tensor  # (d,)

    def inverse_sqrt(self) -> torch.Tensor:
        """1/sqrt(eigenvalue), and 0 for directions with no variance (rank-deficient data):
        whitening would otherwise blow numerical noise up to unit variance."""
        w = self.eigenvalues
        keep = w > REL_TOL * w.max()
        return torch.where(keep, 1.0 / torch.sqrt(w.clamp_min(EPS)), torch.zeros_like(w))

    def projection(self) -> torch.Tensor:
        """(D, d) components scaled by 1/sqrt(eigenvalue): x ↦ (x - mean) @ projection."""
        return self.components * self.inverse_sqrt().to(self.components.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dev, dtype = x.device, self.components.dtype
        y = (x.to(dtype) - self.mean.to(dev)) @ self.projection().to(dev)
        return torch.nn.functional.normalize(y.float(), dim=1)


class CovarianceAccumulator:
    """Running mean and covariance of feature batches.

    Rows are shifted by the first batch's mean (against cancellation), gathered into blocks
    of `block_rows`, and each block's Gram matrix is added in place into one float32 triangle
    (BLAS syrk on CPU: half the flops of a matmul, no D×D temporaries per batch). Every
    `fold_every` blocks the float32 triangle is folded into a float64 total.
    """

    def __init__(self, *, block_rows: int = 4096, fold_every: int = 32) -> None:
        self.block_rows, self.fold_every = block_rows, fold_every
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.gram64: torch.Tensor | None = None
        self.gram32: torch.Tensor | None = None
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0
        self.blocks = 0

    def update(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or len(x) == 0:
            return
        if self.shift is None:
            self.start(x.mean(0, dtype=torch.float64))
        xs = x.float() - self.shift.to(x.device, torch.float32)
        self.sum += xs.sum(0, dtype=torch.float64)
        self.n += len(x)
        self.pending.append(xs)
        self.pending_rows += len(xs)
        if self.pending_rows >= self.block_rows:
            self._flush()

    def start(self, shift: torch.Tensor) -> None:
        """Fix the shift (ranks that reduce their sums together must share one)."""
        self.shift = shift.double()
        d, dev = len(shift), shift.device
        self.sum = torch.zeros(d, dtype=torch.float64, device=dev)
        self.gram64 = torch.zeros(d, d, dtype=torch.float64, device=dev)
        self.gram32 = torch.zeros(d, d, dtype=torch.float32, device=dev)

    def all_reduce(self, d: Dist) -> None:
        """Sum count, shifted sum and Gram matrix over ranks (all must share the shift)."""
        self._flush()
        self._fold()
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device)
        for t in (n, self.sum, self.gram64):
            all_reduce_sum_(t, d)
        self.n = int(n.item())

    def _flush(self) -> None:
        if not self.pending:
            return
        block = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending, self.pending_rows = [], 0
        if block.device.type == "cpu":
            # upper triangle of gram32 += blockᵀ block, in place (gram32 is symmetric storage,
            # so its transpose is the Fortran-ordered matrix BLAS wants).
            out = scipy.linalg.blas.ssyrk(
                alpha=1.0, a=block.numpy().T, trans=0, lower=0, beta=1.0,
                c=self.gram32.numpy().T, overwrite_c=True,
            )
            if not np.shares_memory(out, self.gram32.numpy()):
                self.gram32.copy_(torch.from_numpy(out.T))
        else:
            self.gram32.addmm_(block.T, block)
        self.blocks += 1
        if self.blocks % self.fold_every == 0:
            self._fold()

    def _fold(self) -> None:
        self.gram64 += self.gram32.double()
        self.gram32.zero_()

    def unflushed_rows(self) -> torch.Tensor | None:
        """All rows (shifted), when no block has been folded into the covariance yet."""
        if self.blocks or not self.pending:
            return None
        return torch.cat(self.pending)

    def finalize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and covariance (D, D) with the unbiased (n-1) normaliser."""
        if self.n < 2:
            raise DomainclustError("PCA needs at least 2 feature vectors")
        self._flush()
        self._fold()
        # The eigensolver works in float32; building the covariance there, in place, keeps the
        # peak memory at a few D×D float32 buffers. The shift keeps the mean term small.
        cov = self.gram64.float()
        self.gram64 = self.gram32 = None
        if cov.device.type == "cpu":  # syrk filled the upper triangle (row-major view: lower)
            cov.tril_()
            cov += cov.tril(-1).T
        mean_shifted = self.sum / self.n
        m = mean_shifted.float()
        cov.addr_(m, m, alpha=-float(self.n)).div_(self.n - 1)
        return (self.shift + mean_shifted), cov


def _clip_dim(pca_dim: int, *, n: int, d: int) -> int:
    limit = min(n - 1, d)
    if pca_dim > limit:
        warnings.warn(
            f"pca_dim={pca_dim} exceeds what {n} features of dimension {d} support; using {limit}",
            stacklevel=3,
        )
    return min(pca_dim, limit)


def fit_whitening_from_rows(rows: torch.Tensor, *, pca_dim: int) -> Whitening:
    """The same whitening from the N×N Gram matrix, for N < D (cheaper than the D×D covariance)."""
    n, d = rows.shape
    pca_dim = _clip_dim(pca_dim, n=n, d=d)
    x = rows.double()
    mean = x.mean(0)
    centred = x - mean
    w, u = torch.linalg.eigh(centred @ centred.T)
    w, u = w.flip(0)[:pca_dim].clamp_min(0), u.flip(1)[:, :pca_dim]
    components = centred.T @ u / torch.sqrt(w.clamp_min(EPS))
    return Whitening(mean=mean, components=components, eigenvalues=w / (n - 1))


def fit_whitening(mean: torch.Tensor, cov: torch.Tensor, *, pca_dim: int, n: int) -> Whitening:
    """Top-`pca_dim` eigenvectors of the covariance.

    `pca_dim` is clipped to min(N - 1, D): N centred points span at most N - 1 directions.
    """
    d = cov.shape[0]
    pca_dim = _clip_dim(pca_dim, n=n, d=d)
    if cov.device.type == "cpu":
        # Only the top eigenpairs (LAPACK syevr): several times faster than a full eigh at D=4096.
        w, v = scipy.linalg.eigh(
            cov.float().numpy(), subset_by_index=[d - pca_dim, d - 1], driver="evr",
            overwrite_a=True, check_finite=False,
        )
        w, v = torch.from_numpy(w.copy()), torch.from_numpy(v.copy())
    else:
        w, v = torch.linalg.eigh(cov.float())
        w, v = w[-pca_dim:], v[:, -pca_dim:]
    w, v = w.flip(0).clamp_min(0).double(), v.flip(1).double()
    return Whitening(mean=mean.double(), components=v, eigenvalues=w)


class _Spill:
    """Raw feature batches kept in RAM, or in a float32 file once they exceed the budget."""

    def __init__(self, budget_bytes: int, spill_dir: Path | None, *, device_budget: int = 0) -> None:
        self.budget, self.spill_dir = budget_bytes, spill_dir
        self.device_budget = device_budget  # bytes kept on an accelerator without a host copy
        self.device_batches: list[torch.Tensor] = []
        self.device_nbytes = 0
        self.batches: list[torch.Tensor] = []
        self.nbytes = 0
        self.file = None
        self.rows: list[int] = []
        self.dim = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        if (x.device.type != "cpu" and not self.batches and self.file is None
                and self.device_nbytes + x.numel() * 4 <= self.device_budget):
            self.device_batches.append(x)
            self.device_nbytes += x.numel() * 4
            return
        x = x.cpu()
        self.dim = x.shape[1]
        if self.file is None and self.nbytes + x.numel() * 4 > self.budget:
            if self.spill_dir is not None:
                self.spill_dir.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in batches()
                dir=self.spill_dir, prefix="features-", suffix=".f32"
            )
            for b in self.batches:
                self._write(b)
            self.batches = []
        if self.file is None:
            self.batches.append(x)
            self.nbytes += x.numel() * 4
        else:
            self._write(x)

    def _write(self, x: torch.Tensor) -> None:
        self.file.write(x.numpy().tobytes())
        self.rows.append(len(x))

    def batches_back(self) -> Iterator[torch.Tensor]:
        yield from self.device_batches
        if self.file is None:
            yield from self.batches
            return
        self.file.flush()
        with open(self.file.name, "rb") as f:
            for rows in self.rows:
                flat = np.fromfile(f, dtype=np.float32, count=rows * self.dim)
                yield torch.from_numpy(flat.reshape(rows, self.dim))
        self.file.close()


def _shared_shift(first: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of every rank's first batch: one shift for all ranks."""
    shift = first.mean(0, dtype=torch.float64)
    return all_reduce_sum_(shift, d) / d.world


def _fit(acc: CovarianceAccumulator, *, pca_dim: int, d: Dist) -> Whitening:
    if d.enabled:
        acc.all_reduce(d)
        whitening = None
        if d.is_main:
            mean, cov = acc.finalize()
            w = fit_whitening(mean, cov, pca_dim=pca_dim, n=acc.n)
            whitening = (w.mean.cpu(), w.components.cpu(), w.eigenvalues.cpu())
        # One fit for all ranks: eigenvector signs must agree across the shards' descriptors.
        mean, components, eigenvalues = broadcast_object(whitening, d, device=acc.sum.device)
        dev = acc.sum.device
        return Whitening(mean=mean.to(dev), components=components.to(dev),
                         eigenvalues=eigenvalues.to(dev))
    rows = acc.unflushed_rows()
    if rows is not None and len(rows) < rows.shape[1]:
        whitening = fit_whitening_from_rows(rows, pca_dim=pca_dim)
        whitening.mean = whitening.mean + acc.shift  # rows were shifted by the first batch's mean
        return whitening
    mean, cov = acc.finalize()
    return fit_whitening(mean, cov, pca_dim=pca_dim, n=acc.n)


def compute_descriptors(
    batches: Iterable[torch.Tensor],
    *,
    pca_dim: int,
    memory_budget_bytes: int = 64 << 20,
    spill_dir: Path | None = None,
    device_budget_bytes: int = 0,
    on_device: bool = False,
    dist: Dist = SINGLE,
) -> tuple[np.ndarray | torch.Tensor, Whitening]:
    """(N, pca_dim) float32 unit-norm descriptors of a stream of (b, D) feature batches.

    With `on_device` the descriptors come back as a tensor where the features were (a GPU
    stays fed without a host copy); `device_budget_bytes` of raw features may stay there too.
    Under torch.distributed each rank passes its shard and gets its shard's descriptors,
    projected with the whitening fitted on all shards.
    """
    acc = CovarianceAccumulator()
    spill = _Spill(memory_budget_bytes, spill_dir, device_budget=device_budget_bytes)
    stream = iter(batches)
    if dist.enabled:
        first = next(stream, None)
        if first is None:
            raise DomainclustError(f"rank {dist.rank} has no features to describe")
        acc.start(_shared_shift(first.float(), dist))
        stream = _chain(first, stream)
    for x in stream:
        acc.update(x)
        spill.add(x)
    whitening = _fit(acc, pca_dim=pca_dim, d=dist)
    dev = whitening.components.device
    n_local = sum(spill.rows) + sum(len(b) for b in spill.batches + spill.device_batches)
    out = torch.empty((n_local, whitening.components.shape[1]), dtype=torch.float32,
                      device=dev if on_device else "cpu")
    row = 0
    for x in spill.batches_back():
        y = whitening(x.to(dev))
        out[row : row + len(y)] = y.to(out.device)
        row += len(y)
    return (out if on_device else out.numpy()), whitening


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest
