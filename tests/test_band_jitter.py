"""Spectral augmentation (BandJitter): per-band gain and offset and band dropout on the
standardised batch, wired into both training paths and checked with the config."""

import numpy as np
import pytest
import torch

from domainclust.engine.band_jitter import BandJitter, parse_band_jitter, without_band_jitter
from domainclust.errors import DomainclustError


def batch(bands: int = 6) -> torch.Tensor:
    return torch.randn(16, bands, 8, 8, generator=torch.Generator().manual_seed(0))


def per_band_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares y = a x + b per sample and band: a, b and the largest residual."""
    xs, ys = x.flatten(2).double().numpy(), y.flatten(2).double().numpy()
    xm, ym = xs.mean(-1, keepdims=True), ys.mean(-1, keepdims=True)
    a = ((xs - xm) * (ys - ym)).sum(-1) / ((xs - xm) ** 2).sum(-1)
    b = ym[..., 0] - a * xm[..., 0]
    return a, b, np.abs(ys - (a[..., None] * xs + b[..., None])).max()


def draw(jitter: BandJitter, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return jitter(x, generator=torch.Generator().manual_seed(seed))


def test_gain_and_offset_are_one_affine_map_per_tile_and_band_within_the_ranges() -> None:
    x = batch()
    y = draw(BandJitter(gain=0.2, offset=0.3), x)
    a, b, residual = per_band_fit(x, y)
    assert residual < 1e-5
    assert ((a >= 0.8 - 1e-6) & (a <= 1.2 + 1e-6)).all() and np.abs(b).max() <= 0.3 + 1e-6
    assert a.std() > 0.05 and b.std() > 0.05  # drawn per tile and band, not one for all
    assert torch.equal(y, draw(BandJitter(gain=0.2, offset=0.3), x))
    assert not torch.equal(y, draw(BandJitter(gain=0.2, offset=0.3), x, seed=2))


def test_drop_sets_exactly_one_band_of_a_dropped_tile_to_its_mean() -> None:
    x = batch()
    y = draw(BandJitter(gain=0, offset=0, drop=1.0), x)
    zero = (y == 0).flatten(2).all(-1)
    assert zero.sum(1).tolist() == [1] * len(x)
    assert torch.equal(y[~zero], x[~zero])
    assert len(set(zero.int().argmax(1).tolist())) > 1  # the band is drawn per tile


def test_p_zero_and_a_one_band_tile_under_drop_leave_the_batch_as_it_was() -> None:
    x = batch()
    assert torch.equal(draw(BandJitter(gain=0.5, offset=0.5, p=0.0), x), x)
    one = batch(bands=1)
    assert torch.equal(draw(BandJitter(gain=0, offset=0, drop=1.0), one), one)


@pytest.mark.parametrize(("args", "message"), [
    ({"gain": 1.5}, "gain must be in"),
    ({"drop": -0.1}, "drop must be in"),
    ({"offset": "a lot"}, "must be numbers"),
    ({"sigma": 0.1}, "takes gain, offset, drop, p"),
])
def test_bad_arguments_are_refused_naming_the_argument(args, message) -> None:
    with pytest.raises(DomainclustError, match=message):
        parse_band_jitter([{"HorizontalFlip": {}}, {"BandJitter": args}])


def test_the_other_transforms_never_see_the_jitter_entry() -> None:
    from domainclust.engine.augment import build_augmentation
    from domainclust.engine.batch_augment import build_batch_augmentation

    spec = [{"HorizontalFlip": {"p": 0.5}}, {"BandJitter": {"gain": 0.1}}]
    assert without_band_jitter(spec) == spec[:1]
    assert parse_band_jitter(spec) == BandJitter(gain=0.1)
    assert parse_band_jitter(spec[:1]) is None
    assert build_batch_augmentation(spec, tile_size=8, seed=0) is not None  # still batched
    assert len(build_augmentation(spec, tile_size=8, seed=0).transforms) == 1
    with pytest.raises(DomainclustError, match="given 2 times"):
        parse_band_jitter([*spec, {"BandJitter": {}}])


def test_the_config_check_refuses_a_bad_jitter_before_anything_is_written(mnist_store,
                                                                           tmp_path) -> None:
    from domainclust.config import resolve
    from domainclust.engine import deepcluster

    config = resolve(overrides=[f"store={mnist_store}", "k=5", "subset_size=100"])
    config.data.augment = [{"BandJitter": {"gain": 2}}]
    with pytest.raises(DomainclustError, match="BandJitter gain must be in"):
        deepcluster.pretrain(config, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("batched", [False, True])
def test_training_batches_are_the_same_batches_band_jittered(mnist_store, batched) -> None:
    """Both training paths: the jittered batch is the plain one under a per-tile affine map."""
    from domainclust.config import resolve
    from domainclust.data.store import TileStore
    from domainclust.distributed import SINGLE
    from domainclust.engine.deepcluster import training_batches
    from domainclust.engine.device_batches import StagedTiles

    store = TileStore(mnist_store)
    tiles = np.asarray(store.tiles[:64])
    labels = np.arange(64) % 4
    staged = StagedTiles(tiles, scale=store.attrs["scale"], offset=store.attrs["offset"],
                         device=torch.device("cpu")) if batched else None

    def first(augment: list) -> torch.Tensor:
        config = resolve(overrides=[f"store={mnist_store}", "batch_size=16"])
        config.data.augment = augment
        batches = training_batches(tiles, staged, labels, store=store, config=config,
                                   tile_size=28, seed=5, device=torch.device("cpu"), dist=SINGLE)
        return next(iter(batches))[0]

    flips = [{"HorizontalFlip": {"p": 0.5}}]
    plain = first(flips)
    jittered = first([*flips, {"BandJitter": {"gain": 0.3, "offset": 0.5}}])
    a, b, residual = per_band_fit(plain, jittered)
    assert residual < 1e-4
    assert np.abs(a - 1).max() > 0.05 and np.abs(b).max() > 0.05
    assert ((a > 0.7 - 1e-4) & (a < 1.3 + 1e-4)).all() and np.abs(b).max() <= 0.5 + 1e-4
