"""Checks that need a CUDA device (marker `gpu`; skipped without one). Run on a GPU machine by
benchmarks/gpu_check.sh, which records which backends and wheels work there."""

import numpy as np
import pytest
import torch

from domainclust.clustering.backends import available, select_backend
from domainclust.clustering.kmeans import kmeans
from domainclust.engine.batch_augment import build_batch_augmentation
from domainclust.engine.descriptors import compute_descriptors
from domainclust.engine.device_batches import AugmentedBatches, StagedTiles

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def data(n: int = 20000, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, d))[rng.integers(0, 200, n)] + rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_report_backends_on_this_gpu() -> None:
    status = available(CUDA)
    print("backends on", torch.cuda.get_device_name(), status)  # gpu_check.sh keeps the log
    assert status["torch"] == "ok"


@pytest.mark.parametrize("name", ["torch", "faiss", "cuvs"])
def test_gpu_backends_match_faiss_cpu_quality(name: str) -> None:
    if available(CUDA)[name] != "ok":
        pytest.skip(f"{name} does not work on this GPU: {available(CUDA)[name]}")
    x = data()
    ref = kmeans(x, k=100, seed=0, backend="faiss", device=torch.device("cpu"))
    got = kmeans(torch.from_numpy(x).to(CUDA), k=100, seed=0, backend=name, device=CUDA)
    assert got.backend == name
    assert got.objective == pytest.approx(ref.objective, rel=0.01)
    assert np.bincount(got.labels, minlength=100).min() >= 1
    d, i = select_backend(name, device=CUDA).knn(torch.from_numpy(x).to(CUDA),
                                                 torch.from_numpy(x[:100]).to(CUDA), k=5)
    assert torch.equal(i[:, 0].cpu(), torch.arange(100))


def test_descriptors_stay_on_the_gpu() -> None:
    x = torch.from_numpy(data(5000, 512)).to(CUDA)
    out, w = compute_descriptors(x.split(512), pca_dim=64, on_device=True,
                                 device_budget_bytes=1 << 30)
    assert out.device.type == "cuda" and out.shape == (5000, 64)
    cpu, _ = compute_descriptors(x.cpu().split(512), pca_dim=64)
    signs = np.sign((out.cpu().numpy() * cpu).sum(0))
    np.testing.assert_allclose(out.cpu().numpy() * signs, cpu, atol=1e-3)


def test_batches_are_made_on_the_gpu_from_uint8_tiles() -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (512, 3, 64, 64), dtype=np.uint8)
    staged = StagedTiles(tiles, scale=np.full(3, 1 / 255), offset=np.zeros(3), device=CUDA)
    assert staged.data.device.type == "cuda" and staged.data.dtype == torch.uint8
    aug = build_batch_augmentation([{"RandomResizedCrop": {}}, {"HorizontalFlip": {}}],
                                   tile_size=56, seed=0)
    batches = AugmentedBatches(staged, np.arange(512) % 10, positions=rng.permutation(512),
                               batch_size=128, augment=aug)
    for x, y in batches:
        assert x.device.type == "cuda" and x.shape == (128, 3, 56, 56) and y.device.type == "cuda"
        assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_pretrain_epoch_on_the_gpu(mnist_store, tmp_path) -> None:
    from domainclust.config import resolve
    from domainclust.engine import deepcluster

    history = deepcluster.pretrain(
        resolve(overrides=[f"store={mnist_store}", "subset_size=1000", "k=10", "epochs=2",
                           "batch_size=128", "pca_dim=32"]),
        tmp_path / "gpu", progress=False, log=print)
    assert [r["epoch"] for r in history] == [0, 1] and np.isfinite(history[-1]["loss"])
