"""The mnist adapter on the real Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`) and on
the bundled MNIST CSV: stored tiles against pixels decoded here by hand, and bad files refused."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from domainclust.modalities.mnist import ingest
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed at {FASHION}: apt-get install dataset-fashion-mnist")


def decode(path: Path, header: int) -> np.ndarray:
    """The values after the IDX header, read independently of the adapter."""
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=header)


@pytest.fixture(scope="module")
def t10k() -> tuple[np.ndarray, np.ndarray]:
    photos = decode(FASHION / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    return photos, decode(FASHION / "t10k-labels-idx1-ubyte.gz", 8)


@needs_fashion
def test_folder_stores_train_then_test_pixels_and_labels(tmp_path: Path, t10k) -> None:
    out = tmp_path / "fashion.zarr"
    result = ingest([FASHION], out, options={"limit": 300}, progress=False)
    store = TileStore(out)
    train = decode(FASHION / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    train_labels = decode(FASHION / "train-labels-idx1-ubyte.gz", 8)
    assert len(train) == 60000 and len(t10k[0]) == 10000
    tiles, labels = store.read(np.arange(store.n)), store.labels
    assert result["tiles_written"] == store.n == 600 and tiles.shape == (600, 1, 32, 32)
    assert np.array_equal(tiles[:300, 0, 2:30, 2:30], train[:300])
    assert np.array_equal(tiles[300:, 0, 2:30, 2:30], t10k[0][:300])
    border = tiles.copy()
    border[:, :, 2:30, 2:30] = 0
    assert not border.any()  # padded 28 -> 32 with zeros
    assert np.array_equal(labels, np.concatenate([train_labels[:300], t10k[1][:300]]))
    assert np.array_equal(store.meta("set"), np.repeat([0, 1], 300))
    assert np.array_equal(store.meta("position")[:, 0], np.tile(np.arange(300), 2))
    assert not store.meta("source").any()  # photos stand alone: splits stay stratified
    provenance = store.attrs["provenance"]
    assert provenance["sets"] == ["train", "t10k"] and provenance["limit"] == 300
    assert provenance["files"][1] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert str(FASHION) not in json.dumps(provenance)


@needs_fashion
def test_cli_ingests_one_images_file_with_its_labels(tmp_path: Path, t10k) -> None:
    out = tmp_path / "t10k.zarr"
    result = CliRunner().invoke(app, ["ingest", "--modality", "mnist", "--quiet", "--out",
                                      str(out), "--set", "limit=50",
                                      str(FASHION / "t10k-images-idx3-ubyte.gz")])
    assert result.exit_code == 0, result.output
    store = TileStore(out)
    assert store.attrs["provenance"]["sets"] == ["t10k"]
    assert np.array_equal(store.read(np.arange(50))[:, 0, 2:30, 2:30], t10k[0][:50])
    assert np.array_equal(store.labels, t10k[1][:50])
    with pytest.raises(DomainclustError, match="other sources or another limit"):
        ingest([FASHION / "t10k-images-idx3-ubyte.gz"], out, options={"limit": 60},
               progress=False)


def write_copy(folder: Path, images: bytes, labels: bytes) -> Path:
    """An uncompressed images file and its labels beside it, as a broken download might leave."""
    folder.mkdir()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(images)
    return path


@needs_fashion
@pytest.mark.parametrize("damage, reason", [
    ("magic", "magic number is 00000802"),
    ("truncated", "truncated or padded"),
    ("labels", "holds 9999 labels for the 10000 photos"),
    ("side", "27x29 photos"),
    ("gzip", "cannot be read"),
])
def test_damaged_files_are_refused_naming_the_file(tmp_path: Path, damage: str,
                                                   reason: str) -> None:
    images = gzip.decompress((FASHION / "t10k-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    named = "t10k-images-idx3-ubyte"
    if damage == "magic":
        images = b"\x00\x00\x08\x02" + images[4:]
    elif damage == "truncated":
        images = images[:-100]
    elif damage == "labels":
        labels = labels[:4] + (9999).to_bytes(4, "big") + labels[8:-1]
        named = "t10k-labels-idx1-ubyte"
    elif damage == "side":
        images = images[:8] + (27).to_bytes(4, "big") + (29).to_bytes(4, "big") + images[16:]
        images = images[: 16 + 10000 * 27 * 29]
    path = write_copy(tmp_path / "copy", images, labels)
    if damage == "gzip":
        gz = path.with_name(path.name + ".gz")
        gz.write_bytes((FASHION / "t10k-images-idx3-ubyte.gz").read_bytes()[:100_000])
        path.unlink()
        path, named = gz, gz.name
    with pytest.raises(DomainclustError, match=reason) as err:
        ingest([tmp_path / "copy"], tmp_path / "s.zarr", options={}, progress=False)
    assert named in str(err.value)


@needs_fashion
def test_missing_labels_and_bad_limit_are_refused(tmp_path: Path) -> None:
    shutil.copy(FASHION / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(DomainclustError, match="no labels file beside it.*t10k-labels-idx1"):
        ingest([tmp_path / "t10k-images-idx3-ubyte.gz"], tmp_path / "s.zarr", options={},
               progress=False)
    with pytest.raises(DomainclustError, match="give the images file"):
        ingest([FASHION / "t10k-labels-idx1-ubyte.gz"], tmp_path / "s.zarr", options={},
               progress=False)
    with pytest.raises(DomainclustError, match="limit must be a positive"):
        ingest([FASHION], tmp_path / "s.zarr", options={"limit": 0}, progress=False)


def test_bundled_csv_is_one_set(mnist_store: Path) -> None:
    store = TileStore(mnist_store)
    assert store.n == 5000 and store.attrs["provenance"]["sets"] == ["mnist_5k"]
    assert not store.meta("set").any() and not store.meta("source").any()
