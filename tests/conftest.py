"""Shared fixtures: the real MNIST subset as a TileStore, built once per session."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# The per-installation key salt of the whole session (and its subprocesses) lives in a fresh
# folder, not in the user's configuration.
os.environ["DOMAINCLUST_CONFIG_DIR"] = tempfile.mkdtemp(prefix="domainclust-config-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5000 real MNIST digits with labels (32 px, 1 channel, uint8)."""
    from domainclust.modalities.mnist import ingest

    path = tmp_path_factory.mktemp("mnist") / "store.zarr"
    ingest([], path, options={}, workers=1, progress=False)
    return path
