import numpy as np
import pytest

from domainclust.data.store import TileStore
from domainclust.engine.staging import choose_cache, stage_tiles
from domainclust.errors import DomainclustError


def test_ram_and_memmap_staging_hold_the_same_tiles(mnist_store, tmp_path) -> None:
    store = TileStore(mnist_store)
    idx = np.sort(np.random.default_rng(0).choice(store.n, 700, replace=False))
    ram = stage_tiles(store, idx, cache="ram", progress=False)
    mm = stage_tiles(store, idx, cache="memmap", cache_dir=tmp_path, progress=False)
    assert isinstance(mm, np.memmap) and (tmp_path / "subset.npy").exists()
    assert np.array_equal(ram, mm)
    direct = store.tiles[int(idx[5])]
    assert np.array_equal(ram[5], direct)


def test_auto_cache_is_ram_when_it_fits_memmap_otherwise_and_unknown_is_refused() -> None:
    assert choose_cache(1 << 20, "auto") == "ram"
    assert choose_cache(1 << 60, "auto") == "memmap"
    with pytest.raises(DomainclustError, match="data.cache"):
        choose_cache(1, "disk")
