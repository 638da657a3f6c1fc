"""TileStore: the out-of-core zarr group every modality writes and the engine reads.

Layout (format 1)::

    store.zarr/
      tiles   (N, C, H, W)  uint8 | uint16 | float16, several tiles per chunk (optionally
                            several chunks per zarr v3 shard, so millions of tiles are few files)
      labels  (N,)          int64, optional (evaluation sets)
      masks   (N, H, W)     uint8 | int16, optional: a class per pixel of every tile, chunked
                            (and sharded) along N like `tiles`; `mask_ignore` marks
                            unlabelled pixels
      meta/<name> (N, ...)  per-tile metadata: `source` index, `position`, adapter extras
      commits.jsonl         the writer's append-only commit log (one JSON line per commit)
      attrs: format_version, modality, channels, tile_size, dtype, scale, offset,
             provenance, count, complete; with masks also mask_ignore (the stored value of
             an unlabelled pixel) and mask_classes (class names by id, or null)
             ingest adds items and ingest_options (the options its tiles depend on)

Tiles become floats as `tile * scale[c] + offset[c]`. A writer appends a commit line only
after every array of a batch is written, so a crash never leaves a half-written tile visible,
and re-opening the writer truncates anything past the last commit and continues. A commit
costs the same at the millionth item as at the first: it appends one line, it never rewrites
what earlier commits wrote. `count` and `complete` reach `zarr.json` when the writer finishes.

A store opens for reading from a local path or an fsspec URL (`http(s)://`, `s3://`, `gs://`,
`file://`); remote reads go chunk by chunk through the same chunk-aware path as local ones,
and a remote read that fails is tried again for a few seconds, then named by its URL
(`domainclust.data.remote`).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from domainclust.data.lock import StoreLock
from domainclust.data.remote import retrying
from domainclust.errors import DomainclustError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

FORMAT_VERSION = 1
STORAGE_DTYPES = ("uint8", "uint16", "float16")
MASK_IGNORE = {"uint8": 255, "int16": -1}  # mask dtype → the stored value of unlabelled pixels
TARGET_CHUNK_BYTES = 2 << 20  # a chunk of ~2 MiB amortises zarr's per-chunk cost
META_CHUNK = 4096  # rows per labels/meta chunk: appends rewrite the last chunk, keep it small
LOG_NAME = "commits.jsonl"
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://", "file://")
REMOTE_READ_THREADS = 16  # remote chunk reads wait on the network, not the CPU


@dataclass(frozen=True)
class StoreSpec:
    """What a writer declares about its tiles."""

    modality: str
    channels: tuple[str, ...]
    tile_size: int
    dtype: str
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise DomainclustError(f"storage dtype must be one of {STORAGE_DTYPES}, got {self.dtype}")
        if not (len(self.scale) == len(self.offset) == len(self.channels) > 0):
            raise DomainclustError("scale, offset and channels must have one entry per channel")
        if self.tile_size < 1:
            raise DomainclustError(f"tile size must be positive, got {self.tile_size}")

    def attrs(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "modality": self.modality,
            "channels": list(self.channels),
            "tile_size": self.tile_size,
            "dtype": self.dtype,
            "scale": [float(s) for s in self.scale],
            "offset": [float(o) for o in self.offset],
            "provenance": self.provenance,
        }


def mask_dtype_for(n_classes: int | None) -> str:
    """The mask dtype for class ids 0..n_classes-1: uint8 when they fit beside the ignore
    value, else int16; int16 when the number of classes is not known."""
    return "uint8" if n_classes is not None and n_classes <= MASK_IGNORE["uint8"] else "int16"


def default_chunk_tiles(channels: int, tile_size: int, dtype: str) -> int:
    tile_bytes = channels * tile_size * tile_size * np.dtype(dtype).itemsize
    return int(max(1, min(4096, TARGET_CHUNK_BYTES // tile_bytes)))


class CommitLog:
    """An append-only JSON-lines file: one line per commit, fsynced before the commit counts.

    A line torn by a crash (no newline, or not JSON) is not a commit: `replay` drops it and
    cuts the file back to the last whole line, so the next append starts clean.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def replay(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        entries: list[dict[str, Any]] = []
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entries.append(json.loads(line))
            except ValueError:
                break
            good += len(line)
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return entries

    def append(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across commits
        self._file.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def reset(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TileStoreWriter:
    """Appends batches of tiles; safe to re-open after a crash and continue.

    A writer creates a store only at a new path or in an empty folder, and re-opens (or, with
    `overwrite`, replaces) only a store domainclust wrote: anything else at `path` is refused
    and left untouched. One writer at a time: it holds the store's lock until `finish` or
    `close`, and a second writer is refused, naming the holder.

    Each commit may carry a `record` (a small JSON-able dict, e.g. which source item it
    finished); `records` replays them on re-open. `state` is the latest snapshot a commit
    carried, for writers whose whole progress fits in a few bytes.
    """

    def __init__(
        self,
        path: Path | str,
        spec: StoreSpec,
        *,
        with_labels: bool = False,
        with_masks: bool = False,
        mask_dtype: str | None = None,
        mask_classes: list[str] | None = None,
        chunk_tiles: int | None = None,
        shard_chunks: int | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.with_masks = with_masks
        self.mask_dtype = mask_dtype or mask_dtype_for(None if mask_classes is None
                                                       else len(mask_classes))
        if with_masks and self.mask_dtype not in MASK_IGNORE:
            raise DomainclustError(f"mask dtype must be one of {tuple(MASK_IGNORE)}, "
                                   f"got {self.mask_dtype}")
        if with_masks and mask_classes is not None and not len(mask_classes) <= _max_class(
                self.mask_dtype) + 1:
            raise DomainclustError(f"{len(mask_classes)} mask classes do not fit "
                                   f"{self.mask_dtype} masks")
        self.mask_classes = None if mask_classes is None else [str(c) for c in mask_classes]
        self.log = CommitLog(self.path / LOG_NAME)
        self.records: list[dict[str, Any]] = []
        self._state: dict[str, Any] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = StoreLock(self.path)
        self.lock.acquire()  # before looking: another writer may be creating it right now
        try:
            # A store of ours without its tiles array was interrupted while being created.
            started = (self.path / "tiles" / "zarr.json").is_file()
            if is_our_store(self.path) and started and not overwrite:
                self._resume()
            else:
                self._create(with_labels=with_labels, chunk_tiles=chunk_tiles,
                             shard_chunks=shard_chunks)
                if with_masks:
                    self._create_masks()
        except BaseException:
            self.close()
            raise

    def _resume(self) -> None:
        self.group = zarr.open_group(str(self.path), mode="r+")
        old = {k: self.group.attrs.get(k) for k in self.spec.attrs() if k != "provenance"}
        new = {k: v for k, v in self.spec.attrs().items() if k != "provenance"}
        if old != new:
            raise DomainclustError(
                f"{self.path} already holds a store with different settings "
                f"({_first_difference(old, new)}); choose another --out or delete it"
            )
        stored = _mask_settings(self.group)
        wanted = ({"dtype": self.mask_dtype, "ignore": MASK_IGNORE[self.mask_dtype],
                   "classes": self.mask_classes} if self.with_masks else None)
        if stored != wanted:
            raise DomainclustError(
                f"{self.path} already holds a store with different mask settings (stored "
                f"{stored}, requested {wanted}); choose another --out or delete it"
            )
        self._count = self._replay()
        self._truncate(self._count)

    def _create_masks(self) -> None:
        tiles = self.group["tiles"]
        s = self.spec.tile_size
        shards = None if tiles.shards is None else (tiles.shards[0], s, s)
        self.group.create_array(
            "masks", shape=(0, s, s), chunks=(tiles.chunks[0], s, s), shards=shards,
            dtype=self.mask_dtype, compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        )
        self.group.attrs.update({"mask_ignore": MASK_IGNORE[self.mask_dtype],
                                 "mask_classes": self.mask_classes})

    def _create(self, *, with_labels: bool, chunk_tiles: int | None,
                shard_chunks: int | None) -> None:
        # `mode="w"` empties the folder: `is_our_store` has made sure it is empty or ours.
        spec = self.spec
        self.group = zarr.open_group(str(self.path), mode="w",
                                     attributes={**spec.attrs(), "count": 0, "complete": False})
        self.log.reset()
        c, s = len(spec.channels), spec.tile_size
        chunk = chunk_tiles or default_chunk_tiles(c, s, spec.dtype)
        shards = None if not shard_chunks or shard_chunks <= 1 else (chunk * shard_chunks, c, s, s)
        codec = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
        self.group.create_array(
            "tiles", shape=(0, c, s, s), chunks=(chunk, c, s, s), shards=shards,
            dtype=spec.dtype, compressors=codec,
        )
        if with_labels:
            self.group.create_array("labels", shape=(0,), chunks=(META_CHUNK,), dtype="int64")
        self.group.require_group("meta")
        self._count = 0

    def _replay(self) -> int:
        entries = self.log.replay()
        if not entries:  # a store from before the commit log: its progress sits in the attrs
            self._state = dict(self.group.attrs.get("state", {}))
            return int(self.group.attrs.get("count", 0))
        for entry in entries:
            if "record" in entry:
                self.records.append(entry["record"])
            if "state" in entry:
                self._state = entry["state"]
        return int(entries[-1]["count"])

    @property
    def count(self) -> int:
        """Tiles committed so far."""
        return self._count

    @property
    def state(self) -> dict[str, Any]:
        """The latest adapter-defined snapshot a commit carried."""
        return dict(self._state)

    @property
    def write_unit(self) -> int:
        """Tiles per shard (or per chunk when unsharded): the unit one writer owns at a time."""
        tiles = self.group["tiles"]
        return int((tiles.shards or tiles.chunks)[0])

    def append(
        self,
        tiles: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        meta: dict[str, np.ndarray] | None = None,
        state: dict[str, Any] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Write one batch and commit it (with its `record`/`state`) in one step.

        `masks` (n, H, W): a class id (>= 0) per pixel, negative for unlabelled pixels; a store
        made `with_masks` needs them with every batch.
        """
        tiles = np.asarray(tiles)
        self.check_tiles(tiles)
        n = len(tiles)
        if self.with_masks != (masks is not None):
            raise DomainclustError(
                "this store " + ("needs masks for every batch" if self.with_masks else "has no masks")
            )
        stored_masks = self.pack_masks(masks, n=n) if masks is not None else None
        self._check_rows(n, labels=labels, meta=meta)
        if n:
            self.group["tiles"].append(tiles, axis=0)
            if stored_masks is not None:
                self.group["masks"].append(stored_masks, axis=0)
        self._commit(n, labels=labels, meta=meta, state=state, record=record)

    def check_tiles(self, tiles: np.ndarray) -> None:
        spec = self.spec
        expected = (len(spec.channels), spec.tile_size, spec.tile_size)
        if tiles.ndim != 4 or tiles.shape[1:] != expected:
            raise DomainclustError(f"tiles must be (n, {expected}), got {tiles.shape}")
        if tiles.dtype != np.dtype(spec.dtype):
            raise DomainclustError(f"tiles must be {spec.dtype}, got {tiles.dtype}")

    def pack_masks(self, masks: np.ndarray, *, n: int) -> np.ndarray:
        """`masks` as stored: (n, H, W) in the mask dtype, negative values → `mask_ignore`;
        refused when the shape is off or a class id does not fit the dtype."""
        masks = np.asarray(masks)
        s = self.spec.tile_size
        if masks.shape != (n, s, s):
            raise DomainclustError(f"masks must be ({n}, {s}, {s}) for {n} tiles of {s} px, "
                                   f"got {masks.shape}")
        if masks.dtype == bool:
            masks = masks.astype(np.uint8)
        if not np.issubdtype(masks.dtype, np.integer):
            raise DomainclustError(f"masks must hold integer class ids, got {masks.dtype}")
        top = _max_class(self.mask_dtype)
        if masks.size and int(masks.max()) > top:
            raise DomainclustError(f"mask class {int(masks.max())} does not fit {self.mask_dtype} "
                                   f"masks (ids 0..{top}); create the store with mask_dtype='int16'")
        ignore = MASK_IGNORE[self.mask_dtype]
        return np.where(masks < 0, ignore, masks).astype(self.mask_dtype)

    def reserve(self, stop: int) -> None:
        """Grow `tiles` to `stop` rows so that other processes can write whole chunks or
        shards past the last commit; nothing there counts until `commit_written`."""
        for array in self._row_arrays(per_tile=True):
            if stop > array.shape[0]:
                array.resize((stop, *array.shape[1:]))

    def commit_written(
        self,
        n: int,
        *,
        labels: np.ndarray | None = None,
        meta: dict[str, np.ndarray] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Commit `n` tiles (and their masks) that another process already wrote at `count`
        onwards."""
        if self._count + n > self.group["tiles"].shape[0]:
            raise DomainclustError(f"cannot commit {n} tiles past the reserved end of {self.path}")
        self._check_rows(n, labels=labels, meta=meta)
        self._commit(n, labels=labels, meta=meta, state=None, record=record)

    def _check_rows(
        self, n: int, *, labels: np.ndarray | None, meta: dict[str, np.ndarray] | None
    ) -> None:
        has_labels = "labels" in self.group
        if has_labels != (labels is not None):
            raise DomainclustError(
                "this store " + ("needs labels for every batch" if has_labels else "has no labels")
            )
        meta_group = self.group["meta"]
        existing = set(meta_group.array_keys())
        if n and existing and set(meta or {}) != existing:
            raise DomainclustError(
                f"every batch must carry the same meta arrays: stored {sorted(existing)}, "
                f"got {sorted(meta or {})}"
            )
        for name, values in (meta or {}).items():
            values = np.asarray(values)
            if len(values) != n:
                raise DomainclustError(f"meta '{name}' has {len(values)} rows for {n} tiles")
            if name not in meta_group:
                if self._count:
                    raise DomainclustError(f"meta '{name}' must be given from the first batch on")
                meta_group.create_array(
                    name, shape=(0, *values.shape[1:]),
                    chunks=(META_CHUNK, *values.shape[1:]), dtype=values.dtype,
                )

    def _commit(
        self,
        n: int,
        *,
        labels: np.ndarray | None,
        meta: dict[str, np.ndarray] | None,
        state: dict[str, Any] | None,
        record: dict[str, Any] | None,
    ) -> None:
        if n:
            if labels is not None:
                self.group["labels"].append(np.asarray(labels, dtype=np.int64), axis=0)
            for name, values in (meta or {}).items():
                self.group["meta"][name].append(np.asarray(values), axis=0)
        entry: dict[str, Any] = {"count": self._count + n}
        if state is not None:
            entry["state"] = state
            self._state = state
        if record is not None:
            entry["record"] = record
            self.records.append(record)
        self.log.append(entry)  # the commit point
        self._count += n

    def recorded(self, name: str) -> Any:
        """An attribute written by `record` (or `finish`), None if absent."""
        return self.group.attrs.get(name)

    def record(self, **attrs: Any) -> None:
        """Write attributes now, e.g. what the store is made from, before any tile."""
        self.group.attrs.update(attrs)

    def finish(self, **attrs: Any) -> None:
        """Mark the store complete (readers refuse incomplete stores) and let go of it."""
        self.log.close()
        self._truncate(self._count)  # rows reserved for parallel writes but never committed
        self.group.attrs.update({**attrs, "count": self._count, "complete": True})
        self.close()

    def close(self) -> None:
        """Stop writing without finishing: what is committed stays, and a re-run resumes."""
        self.log.close()
        self.lock.release()

    def _row_arrays(self, *, per_tile: bool = False) -> list[Any]:
        """The arrays with one row per tile: `tiles` and `masks` (written in chunks by
        parallel writers), then, unless `per_tile`, labels and meta."""
        arrays = [self.group[name] for name in ("tiles", "masks") if name in self.group]
        if not per_tile:
            if "labels" in self.group:
                arrays.append(self.group["labels"])
            arrays += [a for _, a in self.group["meta"].arrays()]
        return arrays

    def _truncate(self, count: int) -> None:
        for array in self._row_arrays():
            if array.shape[0] != count:
                array.resize((count, *array.shape[1:]))
        self.group.attrs["complete"] = False


def _max_class(dtype: str) -> int:
    """The largest class id a mask dtype holds beside its ignore value."""
    return MASK_IGNORE[dtype] - 1 if MASK_IGNORE[dtype] > 0 else int(np.iinfo(dtype).max)


def _mask_settings(group: Any) -> dict[str, Any] | None:
    """A store's mask dtype, ignore value and classes, None without masks."""
    if "masks" not in group:
        return None
    return {"dtype": str(group["masks"].dtype), "ignore": group.attrs.get("mask_ignore"),
            "classes": group.attrs.get("mask_classes")}


def is_our_store(path: Path) -> bool:
    """True for a store domainclust wrote, False for a path free to create one at (absent, or an
    empty folder); anything else is somebody's data and is refused, never emptied."""
    if not path.exists():
        return False
    if not path.is_dir():
        raise DomainclustError(f"{path} is a file, not a TileStore; choose another --out")
    meta = path / "zarr.json"
    if meta.is_file():
        try:
            attrs = json.loads(meta.read_text()).get("attributes", {})
        except (OSError, ValueError):
            attrs = {}
        if "format_version" in attrs and "modality" in attrs:
            return True
        raise DomainclustError(
            f"{path} is a zarr store that domainclust did not write; it is left as it is: "
            "choose another --out"
        )
    entries = sorted(p.name for p in path.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise DomainclustError(
            f"{path} is an existing folder that is not a TileStore ({len(entries)} entries: "
            f"{shown}); domainclust writes only into a new folder or a store it made, so it is "
            "left as it is: choose another --out"
        )
    return False


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in new:
        if old.get(key) != new[key]:
            return f"{key}: stored {old.get(key)!r}, requested {new[key]!r}"
    return "unknown"


def is_url(path: Path | str) -> bool:
    return isinstance(path, str) and path.startswith(URL_SCHEMES)


def _check_range_requests(url: str, storage_options: dict[str, Any] | None) -> None:
    """Reading inside a shard takes byte-range requests; a server that ignores them answers
    with whole files, which zarr would decode as garbage (a checksum error at best)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    try:
        answer = fs.cat_file(f"{root.rstrip('/')}/zarr.json", start=0, end=4)
    except Exception:  # noqa: BLE001 - a server confused by ranges fails in its own ways
        answer = b""
    if len(answer) != 4:
        raise DomainclustError(
            f"the server of {url} ignores HTTP Range requests, which reading a sharded store "
            "needs; serve it from an object store (s3://, gs://) or a server that supports "
            "ranges (nginx, Apache), or ingest the store without --shard-chunks"
        )


class TileStore:
    """Read side of a TileStore: a local folder, or an fsspec URL (read-only)."""

    def __init__(self, path: Path | str, *, storage_options: dict[str, Any] | None = None) -> None:
        self.remote = is_url(path)
        self.path: Path | str = path if self.remote else Path(path)
        if not self.remote and not Path(path).exists():
            raise DomainclustError(
                f"store {self.path} does not exist; create one with `domainclust ingest`"
            )

        def open_group() -> tuple[Any, Any]:
            group = zarr.open_group(
                str(self.path), mode="r", storage_options=storage_options if self.remote else None
            )
            return group, group["tiles"]

        try:
            self.group, self.tiles = self._io(open_group)
        except (zarr.errors.GroupNotFoundError, KeyError, ValueError, FileNotFoundError):
            raise DomainclustError(
                f"{self.path} is not a domainclust TileStore (no zarr group with a 'tiles' array); "
                "create one with `domainclust ingest`"
            ) from None
        except (OSError, ImportError) as exc:  # unreachable server, missing fsspec backend
            raise DomainclustError(f"cannot open store {self.path}: {exc}") from None
        attrs = dict(self.group.attrs)
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise DomainclustError(
                f"{self.path} has TileStore format {version!r}; this domainclust reads {FORMAT_VERSION}"
            )
        if not attrs.get("complete", False):
            raise DomainclustError(
                f"{self.path} is incomplete (its ingest was interrupted); run the same ingest "
                "command again to resume it"
            )
        self.attrs = attrs
        self.n = int(attrs["count"])
        self.channels: tuple[str, ...] = tuple(attrs["channels"])
        self.tile_size = int(attrs["tile_size"])
        self.modality: str = attrs["modality"]
        # The unit of a read (an inner chunk when sharded: shards allow partial reads).
        self.chunk_len = int(self.tiles.chunks[0])
        if self.remote and self.tiles.shards is not None:
            _check_range_requests(str(self.path), storage_options)
        self._scale = np.asarray(attrs["scale"], dtype=np.float32)
        self._offset = np.asarray(attrs["offset"], dtype=np.float32)
        self._channel_index: np.ndarray | None = None  # set on a `with_channels` view

    def __len__(self) -> int:
        return self.n

    def _io(self, call: Callable[[], T]) -> T:
        """`call()`, a read of the store: retried while a remote store is briefly unreachable,
        then a one-line error naming its URL (`domainclust.data.remote`)."""
        return retrying(call, url=str(self.path)) if self.remote else call()

    def with_channels(self, channels: tuple[str, ...], *, needed_by: str) -> TileStore:
        """A view whose tiles hold `channels` in that order, picked out of each chunk as it is
        read (nothing is copied); itself when they are its own. A channel the store lacks is
        refused, naming it and `needed_by`."""
        from domainclust.data.channels import select_channels

        mapping = select_channels(wanted=channels, available=self.channels,
                                  needed_by=needed_by, held_by=f"store {self.path}")
        if mapping.identity:
            return self
        idx = np.asarray(mapping.source, dtype=np.int64)
        base = self._channel_index
        view = copy.copy(self)
        view._channel_index = idx if base is None else base[idx]
        view.channels = tuple(channels)
        view._scale, view._offset = self._scale[idx], self._offset[idx]
        view.attrs = {**self.attrs, "channels": list(channels),
                      "scale": [self.attrs["scale"][i] for i in idx],
                      "offset": [self.attrs["offset"][i] for i in idx]}
        return view

    @property
    def tile_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one tile as `read` returns it."""
        return (len(self.channels), *self.tiles.shape[2:])

    @property
    def has_labels(self) -> bool:
        return self._io(lambda: "labels" in self.group)

    @property
    def labels(self) -> np.ndarray | None:
        return self._io(lambda: self.group["labels"][: self.n]) if self.has_labels else None

    @property
    def has_masks(self) -> bool:
        """Whether every tile has a per-pixel mask (`read_masks`)."""
        return self._io(lambda: "masks" in self.group)

    @property
    def mask_ignore(self) -> int | None:
        """The stored value of an unlabelled mask pixel (None without masks)."""
        return int(self.attrs["mask_ignore"]) if self.has_masks else None

    @property
    def mask_classes(self) -> list[str] | None:
        """Class names by id when the source gave them, else None."""
        return self.attrs.get("mask_classes") if self.has_masks else None

    def read_masks(self, indices: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """(len(indices), H, W) masks of the tiles at `indices`, as stored (unlabelled pixels
        hold `mask_ignore`), reading each touched chunk once."""
        if not self.has_masks:
            raise DomainclustError(f"store {self.path} has no masks; ingest it with masks "
                                   "(e.g. geotiff labels=..., ct/mri/rgb masks=...)")
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n):
            raise DomainclustError(f"tile index out of range for {self.path} ({self.n} tiles)")
        masks = self.group["masks"]
        out = np.empty((len(indices), *masks.shape[1:]), dtype=masks.dtype)
        for _, block, where in self._chunk_reads(indices, threads=threads or self.read_threads,
                                                 array=masks):
            out[where] = block
        return out

    def meta(self, name: str) -> np.ndarray:
        return self._io(lambda: self.group["meta"][name][: self.n])

    def meta_names(self) -> list[str]:
        """The store's meta arrays (listing: local stores)."""
        return sorted(name for name, _ in self.group["meta"].arrays())

    def has_meta(self, name: str) -> bool:
        """Whether meta array `name` exists (no listing needed: works on remote stores)."""
        try:
            self._io(lambda: self.group["meta"][name])
        except KeyError:
            return False
        return True

    @property
    def read_threads(self) -> int:
        return REMOTE_READ_THREADS if self.remote else 4

    def read(self, indices: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """Tiles at `indices` (in that order), reading each touched chunk once."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.tile_shape), dtype=self.tiles.dtype)
        self.read_into(out, indices, threads=threads)
        return out

    def read_into(
        self, out: np.ndarray, indices: np.ndarray, *, threads: int | None = None,
        progress: Any = None,
    ) -> None:
        """Fill `out` (RAM or memmap) with the tiles at `indices`, reading each chunk once."""
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n):
            raise DomainclustError(f"tile index out of range for {self.path} ({self.n} tiles)")
        threads = threads or self.read_threads
        for _, block, where in self._chunk_reads(indices, threads=threads):
            out[where] = block
            if progress is not None:
                progress.update(len(where))

    def _chunk_reads(
        self, indices: np.ndarray, *, threads: int, array: Any = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        array = self.tiles if array is None else array
        chunk_ids = indices // self.chunk_len
        order = np.argsort(chunk_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk_ids[order])) + 1
        groups = np.split(order, bounds) if len(order) else []

        def load(where: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
            chunk = int(chunk_ids[where[0]])
            start = chunk * self.chunk_len
            stop = min(start + self.chunk_len, self.n)
            block = self._io(lambda: array[start:stop])
            rows = indices[where] - start
            if self._channel_index is not None and array is self.tiles:
                return start, block[np.ix_(rows, self._channel_index)], where
            return start, block[rows], where

        pool = ThreadPoolExecutor(max_workers=max(1, threads))
        try:
            yield from pool.map(load, groups)
        finally:  # after a failed read, the chunks not yet started are not read at all
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk_len)

    def to_float(self, tiles: torch.Tensor) -> torch.Tensor:
        """Storage dtype → float32 through the store's per-channel scale/offset."""
        # Not at module level: ingest workers import this module without torch.
        from domainclust.data.normalise import to_input

        return to_input(tiles, scale=self._scale, offset=self._offset)


def write_subset(store: TileStore, indices: np.ndarray, path: Path) -> TileStore:
    """A local store holding only `indices` of `store`, with their labels, masks and records
    (e.g. the tiles pretraining may see); a finished one at `path` is reused."""
    done = path / "zarr.json"
    if not (done.exists() and json.loads(done.read_text()).get("attributes", {}).get("complete")):
        a = store.attrs
        spec = StoreSpec(modality=a["modality"], channels=tuple(a["channels"]),
                         tile_size=a["tile_size"], dtype=a["dtype"], scale=tuple(a["scale"]),
                         offset=tuple(a["offset"]), provenance=a.get("provenance", {}))
        masks = store.group["masks"] if store.has_masks else None
        writer = TileStoreWriter(path, spec, with_labels=store.has_labels,
                                 with_masks=store.has_masks,
                                 mask_dtype=None if masks is None else str(masks.dtype),
                                 mask_classes=store.mask_classes, overwrite=True)
        stored = store.read_masks(indices) if masks is not None else None
        writer.append(store.read(indices),
                      labels=store.labels[indices] if store.has_labels else None,
                      masks=None if stored is None else np.where(
                          stored == store.mask_ignore, -1, stored.astype(np.int64)),
                      meta={name: store.meta(name)[indices] for name in store.meta_names()})
        writer.finish()
    return TileStore(path)
