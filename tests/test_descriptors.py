import numpy as np
import pytest
import torch

from domainclust.engine.descriptors import CovarianceAccumulator, compute_descriptors


def features(n: int = 3000, d: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Anisotropic, off-centre features: a large common offset tests the shifted accumulation.
    spectrum = torch.logspace(1, -2, d)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    return (torch.randn(n, d, generator=g) * spectrum) @ basis.T + 50.0


def reference(x: torch.Tensor, dim: int) -> np.ndarray:
    x = x.double()
    centred = x - x.mean(0)
    cov = centred.T @ centred / (len(x) - 1)
    w, v = torch.linalg.eigh(cov)
    w, v = w.flip(0)[:dim], v.flip(1)[:, :dim]
    y = centred @ v / torch.sqrt(w)
    return torch.nn.functional.normalize(y, dim=1).numpy()


def align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eigenvectors are defined up to sign: flip a's columns to match b's."""
    return a * np.sign((a * b).sum(0))


def test_covariance_matches_float64() -> None:
    x = features()
    acc = CovarianceAccumulator(block_rows=700, fold_every=2)
    for batch in x.split(256):
        acc.update(batch)
    mean, cov = acc.finalize()
    ref = torch.cov(x.double().T)
    assert torch.allclose(mean, x.double().mean(0), atol=1e-5)
    assert torch.allclose(cov.double(), ref, atol=1e-4 * ref.abs().max())


def test_whitening_matches_float64_reference() -> None:
    x = features()
    out, _ = compute_descriptors(x.split(500), pca_dim=32)
    ref = reference(x, 32)
    assert out.shape == (3000, 32) and out.dtype == np.float32
    assert np.abs(align_signs(out, ref) - ref).max() < 1e-3
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_fewer_features_than_dimensions_match_the_reference() -> None:
    x = features(n=300, d=512)  # N < D: whitening comes from the N×N Gram matrix
    out, _ = compute_descriptors(x.split(64), pca_dim=64)
    ref = reference(x, 64)
    assert np.abs(align_signs(out, ref) - ref).max() < 1e-3


def test_spilling_to_disk_gives_the_same_descriptors(tmp_path) -> None:
    x = features(n=2000)
    in_ram, _ = compute_descriptors(x.split(300), pca_dim=16)
    spill_dir = tmp_path / "run" / "cache"  # created on demand
    spilled, _ = compute_descriptors(x.split(300), pca_dim=16, memory_budget_bytes=50_000,
                                     spill_dir=spill_dir)
    assert np.array_equal(in_ram, spilled)
    assert not list(spill_dir.iterdir())  # the spill file is removed


def test_pca_dim_is_clipped_to_min_n_d() -> None:
    x = features(n=40, d=96)
    with pytest.warns(UserWarning, match="pca_dim=256 exceeds"):
        out, _ = compute_descriptors([x], pca_dim=256)
    assert out.shape == (40, 39)  # 40 centred points span 39 directions
    ref = reference(x, 39)
    assert np.abs(align_signs(out, ref) - ref).max() < 1e-2


def test_directions_without_variance_are_not_amplified() -> None:
    x = features(n=500, d=64)
    x[:, :32] = 0.0  # rank 32 data asked for 48 dimensions
    out, whitening = compute_descriptors([x], pca_dim=48)
    assert np.abs(out[:, 32:]).max() < 1e-3
    assert int((whitening.inverse_sqrt() > 0).sum()) == 32
