"""Batched augmentation with torch ops (the GPU fast path), run on CPU."""

import numpy as np
import pytest
import torch

from domainclust.engine.batch_augment import (
    BatchAugment,
    Step,
    build_batch_augmentation,
    crop_boxes,
)
from domainclust.engine.device_batches import AugmentedBatches, StagedTiles


def ramp(n: int = 8, c: int = 2, size: int = 16) -> torch.Tensor:
    """Tiles whose pixels are all different, so any geometric change shows."""
    x = torch.arange(n * c * size * size, dtype=torch.float32).view(n, c, size, size)
    return x / x.max()


def test_identity_crop_returns_the_tiles() -> None:
    aug = BatchAugment([Step("RandomResizedCrop", scale=(1.0, 1.0), ratio=(1.0, 1.0))],
                       tile_size=16, seed=0)
    x = ramp()
    assert torch.allclose(aug(x), x, atol=1e-5)


def test_flips_and_quarter_turns_are_exact() -> None:
    x = ramp()
    h = BatchAugment([Step("HorizontalFlip", p=1.0)], tile_size=16, seed=0)(x)
    assert torch.allclose(h, x.flip(-1), atol=1e-5)
    v = BatchAugment([Step("VerticalFlip", p=1.0)], tile_size=16, seed=0)(x)
    assert torch.allclose(v, x.flip(-2), atol=1e-5)
    r = BatchAugment([Step("RandomRotate90", p=1.0)], tile_size=16, seed=0)(x)
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    for i in range(len(x)):
        assert any(torch.allclose(r[i], t[i], atol=1e-5) for t in turns)
    seen = {next(k for k, t in enumerate(turns) if torch.allclose(r[i], t[i], atol=1e-5))
            for i in range(len(x))}
    assert len(seen) > 1  # not always the same turn


def test_flip_probability_is_respected() -> None:
    x = ramp(n=400, c=1, size=4)
    h = BatchAugment([Step("HorizontalFlip", p=0.5)], tile_size=4, seed=1)(x)
    flipped = torch.tensor([torch.allclose(h[i], x[i].flip(-1), atol=1e-5) for i in range(400)])
    assert 150 < int(flipped.sum()) < 250


def test_crop_boxes_follow_the_scale_and_ratio_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(5000, height=64, width=64, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                       generator=g)
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 64).all() and (y0 + h <= 64).all()
    area = w * h / 64**2
    # Rounding to whole pixels widens the ranges slightly.
    assert area.min() >= 0.06 and area.max() <= 1.0
    assert (w / h).min() >= 0.7 and (w / h).max() <= 1.43
    assert area.std() > 0.2  # spread over the range, not one size
    assert x0.float().std() > 3 and y0.float().std() > 3  # positions vary


def test_crop_then_resize_matches_a_direct_crop() -> None:
    # A crop of the top-left quarter resized to 8 px: the same as slicing (exact pixels).
    aug = BatchAugment([Step("RandomResizedCrop", scale=(0.25, 0.25), ratio=(1.0, 1.0))],
                       tile_size=8, seed=0)
    x = ramp(n=64)
    theta = aug.maps(64, height=16, width=16)
    out = aug.apply(x, theta)
    # Find each sample's box from its map and compare with the slice.
    for i in range(64):
        x0 = int(round((theta[i, 0, 2].item() + 1) * 8 - 4))
        y0 = int(round((theta[i, 1, 2].item() + 1) * 8 - 4))
        assert torch.allclose(out[i], x[i, :, y0 : y0 + 8, x0 : x0 + 8], atol=1e-5)


def test_the_same_seed_gives_the_same_batch_and_another_seed_another() -> None:
    spec = [{"RandomResizedCrop": {"scale": [0.08, 1.0]}}, {"HorizontalFlip": {"p": 0.5}}]
    a = build_batch_augmentation(spec, tile_size=12, seed=4)(ramp())
    b = build_batch_augmentation(spec, tile_size=12, seed=4)(ramp())
    c = build_batch_augmentation(spec, tile_size=12, seed=5)(ramp())
    assert a.shape == (8, 2, 12, 12) and torch.equal(a, b) and not torch.equal(a, c)


def test_recipes_without_a_batched_form_are_refused() -> None:
    assert build_batch_augmentation([{"GaussianBlur": {}}], tile_size=8, seed=0) is None
    assert build_batch_augmentation([{"HorizontalFlip": {"p": 0.5, "interpolation": 1}}],
                                    tile_size=8, seed=0) is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_staged_batches_convert_with_scale_offset_and_follow_the_positions(dtype) -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, np.iinfo(dtype).max, (50, 2, 8, 8), dtype=dtype)
    scale, offset = np.array([0.5, 2.0]), np.array([1.0, -3.0])
    staged = StagedTiles(tiles, scale=scale, offset=offset, device=torch.device("cpu"))
    got = staged.take(torch.tensor([3, 7]))
    want = tiles[[3, 7]].astype(np.float32) * scale[None, :, None, None] + offset[None, :, None, None]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    labels = np.arange(50) % 5
    positions = rng.permutation(50)[:40]
    identity = build_batch_augmentation([], tile_size=8, seed=0)
    batches = list(AugmentedBatches(staged, labels, positions=positions, batch_size=16,
                                    augment=identity))
    assert len(batches) == 2 and all(len(x) == 16 for x, _ in batches)
    for b, (x, y) in enumerate(batches):
        index = positions[b * 16 : (b + 1) * 16]
        assert torch.equal(y, torch.from_numpy(labels[index]))
        np.testing.assert_allclose(x.numpy(), staged.take(torch.from_numpy(index)).numpy(),
                                   atol=1e-3)


@pytest.mark.slow
def test_pretrain_with_batched_augmentation_on_cpu(mnist_store, tmp_path) -> None:
    from domainclust.config import resolve
    from domainclust.engine import deepcluster

    overrides = [f"store={mnist_store}", "subset_size=200", "k=5", "batch_size=20", "pca_dim=16",
                 "data.batch_augment=batched", "train.updates_factor=0.5", "model.width=0.25",
                 "report=false"]
    history = deepcluster.pretrain(resolve(overrides=[*overrides, "epochs=2"]), tmp_path / "r",
                                   progress=False, log=lambda _: None)
    assert [r["epoch"] for r in history] == [0, 1]
    assert all(np.isfinite(r["loss"]) and r["cluster_size_min"] >= 1 for r in history)


def test_batch_augment_on_with_an_unbatchable_recipe_is_refused(mnist_store, tmp_path) -> None:
    from domainclust.config import resolve
    from domainclust.engine import deepcluster
    from domainclust.errors import DomainclustError

    config = resolve(overrides=[f"store={mnist_store}", "data.batch_augment=batched", "k=5",
                                "subset_size=100"])
    config.data.augment = [{"GaussianBlur": {}}]
    with pytest.raises(DomainclustError, match="without a batched form"):
        deepcluster.pretrain(config, tmp_path / "r", progress=False)
