"""The per-sample (albumentations) training path: uint8 tiles augmented as they are, others
as float."""

import numpy as np
import pytest
import torch

from domainclust.data.normalise import to_input
from domainclust.engine.augment import AugmentedTiles, build_augmentation

SCALE, OFFSET = (0.02, 0.5), (-1.0, 0.25)


def tiles(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(8, 2, 24, 24)).astype(dtype)


def batch(t: np.ndarray, spec: list, *, seed: int = 3) -> torch.Tensor:
    ds = AugmentedTiles(t, np.arange(len(t)), scale=SCALE, offset=OFFSET,
                        transform=build_augmentation(spec, tile_size=16, seed=seed))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(t), collate_fn=ds.collate)))
    assert x.dtype == torch.float32 and y.tolist() == list(range(len(t)))
    return x


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_flip_gives_the_flipped_float_input(dtype) -> None:
    t = tiles(dtype)
    x = batch(t, [{"CenterCrop": {}}, {"HorizontalFlip": {"p": 1.0}}])
    want = to_input(torch.from_numpy(t[:, :, 4:20, 4:20].astype(np.float32)), scale=SCALE,
                    offset=OFFSET).flip(-1)
    assert torch.allclose(x, want, atol=1e-6)


def test_uint8_tiles_augmented_natively_match_the_float_path() -> None:
    spec = [{"RandomResizedCrop": {"scale": [0.3, 1.0]}}, {"HorizontalFlip": {"p": 0.5}}]
    native = batch(tiles(np.uint8), spec)
    as_float = batch(tiles(np.uint16), spec)  # same seed: same crops, resized in float
    quantum = torch.tensor(SCALE).view(1, -1, 1, 1)
    assert ((native - as_float).abs() <= quantum * 1.01).all()  # interpolation rounding only
    assert not torch.allclose(native, batch(tiles(np.uint8), spec, seed=4))
