"""Fixtures shared by the evaluation tests, loaded with `pytest_plugins = ["test_evaluation_fixtures"]`.

A small labelled store cut from the real MNIST subset, one tiny DeepCluster run trained on it
with `pretrain`, and its single-repeat low-shot evaluation, each built once per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domainclust.config import resolve
from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.engine.deepcluster import pretrain

PER_CLASS = 60  # 600 digits: enough for every protocol, small enough for 2 cores


def write_store(path: Path, tiles: np.ndarray, *, labels: np.ndarray | None,
                channels: tuple[str, ...] = ("gray",), scale: float = 1 / 255) -> Path:
    """A complete TileStore of uint8 `tiles` (with `labels` when given)."""
    spec = StoreSpec(modality="mnist", channels=channels, tile_size=tiles.shape[-1],
                     dtype="uint8", scale=(scale,) * len(channels), offset=(0.0,) * len(channels))
    writer = TileStoreWriter(path, spec, with_labels=labels is not None)
    writer.append(tiles, labels=labels)
    writer.finish()
    return path


def build_small_store(mnist_store: Path, root: Path) -> Path:
    source = TileStore(mnist_store)
    labels = source.labels
    rng = np.random.default_rng(0)
    chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS,
                                                replace=False) for c in range(10)]))
    return write_store(root / "small.zarr", source.read(chosen), labels=labels[chosen])


@pytest.fixture(scope="session")
def small_store(mnist_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 real MNIST digits (60 per class) with labels, 32 px, 1 channel."""
    return build_small_store(mnist_store, tmp_path_factory.mktemp("eval_store"))


@pytest.fixture(scope="session")
def tiny_run(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir with a real (tiny) DeepCluster checkpoint trained on `small_store`."""
    run = tmp_path_factory.mktemp("eval_run") / "run"
    config = resolve(recipe={"data": {"augment": [{"HorizontalFlip": {"p": 0.5}}]}},
                     overrides=[f"store={small_store}", "subset_size=300", "k=10", "epochs=1",
                                "batch_size=50", "pca_dim=16", "model.width=0.25"])
    pretrain(config, run, progress=False, log=lambda _: None)
    return run


@pytest.fixture(scope="session")
def single_repeat_eval(tiny_run: Path, small_store: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `write_finetune` fills from the real low-shot protocol run once (one repeat:
    no confidence intervals) on `tiny_run`."""
    from domainclust.evaluation import low_shot
    from domainclust.evaluation.results import write_finetune

    out = tmp_path_factory.mktemp("single_repeat")
    result = low_shot(tiny_run, small_store, shots=[1], repeats=1, max_test=40, device="cpu")
    write_finetune(result, out)
    return out
