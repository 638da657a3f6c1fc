"""TileStore: the out-of-core zarr group every modality writes and the engine reads.

Layout (format 1)::

    store.zarr/
      tiles   (N, C, H, W)  uint8 | uint16 | float16, several tiles per chunk
      labels  (N,)          int64, optional (evaluation sets)
      meta/<name> (N, ...)  per-tile metadata: `source` index, `position`, adapter extras
      attrs: format_version, modality, channels, tile_size, dtype, scale, offset,
             provenance, count, complete, state

Tiles become floats as `tile * scale[c] + offset[c]`. A writer commits `count` only after
every array of a batch is written, so a crash never leaves a half-written tile visible, and
re-opening the writer truncates anything past the last commit and continues.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from domainclust.errors import DomainclustError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
STORAGE_DTYPES = ("uint8", "uint16", "float16")
TARGET_CHUNK_BYTES = 2 << 20  # a chunk of ~2 MiB amortises zarr's per-chunk cost
META_CHUNK = 4096  # rows per labels/meta chunk: appends rewrite the last chunk, keep it small


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


def default_chunk_tiles(channels: int, tile_size: int, dtype: str) -> int:
    tile_bytes = channels * tile_size * tile_size * np.dtype(dtype).itemsize
    return int(max(1, min(4096, TARGET_CHUNK_BYTES // tile_bytes)))


class TileStoreWriter:
    """Appends batches of tiles; safe to re-open after a crash and continue."""

    def __init__(
        self,
        path: Path | str,
        spec: StoreSpec,
        *,
        with_labels: bool = False,
        chunk_tiles: int | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        exists = (self.path / "zarr.json").exists()
        if exists and not overwrite:
            self.group = zarr.open_group(str(self.path), mode="r+")
            old = {k: self.group.attrs.get(k) for k in spec.attrs() if k != "provenance"}
            new = {k: v for k, v in spec.attrs().items() if k != "provenance"}
            if old != new:
                raise DomainclustError(
                    f"{self.path} already holds a store with different settings "
                    f"({_first_difference(old, new)}); choose another --out or delete it"
                )
            self._truncate(int(self.group.attrs.get("count", 0)))
        else:
            self.group = zarr.open_group(str(self.path), mode="w")
            c, s = len(spec.channels), spec.tile_size
            chunk = chunk_tiles or default_chunk_tiles(c, s, spec.dtype)
            codec = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
            self.group.create_array(
                "tiles", shape=(0, c, s, s), chunks=(chunk, c, s, s), dtype=spec.dtype,
                compressors=codec,
            )
            if with_labels:
                self.group.create_array("labels", shape=(0,), chunks=(META_CHUNK,), dtype="int64")
            self.group.require_group("meta")
            self.group.attrs.update({**spec.attrs(), "count": 0, "complete": False, "state": {}})

    @property
    def count(self) -> int:
        return int(self.group.attrs["count"])

    @property
    def state(self) -> dict[str, Any]:
        """Adapter-defined progress (e.g. which source files are done), committed with tiles."""
        return dict(self.group.attrs.get("state", {}))

    def append(
        self,
        tiles: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        meta: dict[str, np.ndarray] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Write one batch and commit it (with the adapter's `state`) in one step."""
        tiles = np.asarray(tiles)
        spec = self.spec
        expected = (len(spec.channels), spec.tile_size, spec.tile_size)
        if tiles.ndim != 4 or tiles.shape[1:] != expected:
            raise DomainclustError(f"tiles must be (n, {expected}), got {tiles.shape}")
        if tiles.dtype != np.dtype(spec.dtype):
            raise DomainclustError(f"tiles must be {spec.dtype}, got {tiles.dtype}")
        n = len(tiles)
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
                if self.count:
                    raise DomainclustError(f"meta '{name}' must be given from the first batch on")
                meta_group.create_array(
                    name, shape=(0, *values.shape[1:]),
                    chunks=(META_CHUNK, *values.shape[1:]), dtype=values.dtype,
                )
        if n:
            self.group["tiles"].append(tiles, axis=0)
            if labels is not None:
                self.group["labels"].append(np.asarray(labels, dtype=np.int64), axis=0)
            for name, values in (meta or {}).items():
                meta_group[name].append(np.asarray(values), axis=0)
        commit: dict[str, Any] = {"count": self.count + n}
        if state is not None:
            commit["state"] = state
        self.group.attrs.update(commit)

    def recorded(self, name: str) -> Any:
        """An attribute written by `record` (or `finish`), None if absent."""
        return self.group.attrs.get(name)

    def record(self, **attrs: Any) -> None:
        """Write attributes now, e.g. what the store is made from, before any tile."""
        self.group.attrs.update(attrs)

    def finish(self, **attrs: Any) -> None:
        """Mark the store complete; readers refuse incomplete stores."""
        self.group.attrs.update({**attrs, "complete": True})

    def _truncate(self, count: int) -> None:
        arrays = [self.group["tiles"]]
        if "labels" in self.group:
            arrays.append(self.group["labels"])
        arrays += [a for _, a in self.group["meta"].arrays()]
        for array in arrays:
            if array.shape[0] != count:
                array.resize((count, *array.shape[1:]))
        self.group.attrs["complete"] = False


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in new:
        if old.get(key) != new[key]:
            return f"{key}: stored {old.get(key)!r}, requested {new[key]!r}"
    return "unknown"


class TileStore:
    """Read side of a TileStore."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DomainclustError(
                f"store {self.path} does not exist; create one with `domainclust ingest`"
            )
        try:
            self.group = zarr.open_group(str(self.path), mode="r")
            self.tiles = self.group["tiles"]
        except (zarr.errors.GroupNotFoundError, KeyError, ValueError):
            raise DomainclustError(
                f"{self.path} is not a domainclust TileStore (no zarr group with a 'tiles' array); "
                "create one with `domainclust ingest`"
            ) from None
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
        self.chunk_len = int(self.tiles.chunks[0])
        self._scale = np.asarray(attrs["scale"], dtype=np.float32)
        self._offset = np.asarray(attrs["offset"], dtype=np.float32)

    def __len__(self) -> int:
        return self.n

    @property
    def has_labels(self) -> bool:
        return "labels" in self.group

    @property
    def labels(self) -> np.ndarray | None:
        return self.group["labels"][: self.n] if self.has_labels else None

    def meta(self, name: str) -> np.ndarray:
        return self.group["meta"][name][: self.n]

    def meta_names(self) -> list[str]:
        return sorted(name for name, _ in self.group["meta"].arrays())

    def read(self, indices: np.ndarray, *, threads: int = 4) -> np.ndarray:
        """Tiles at `indices` (in that order), reading each touched chunk once."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.tiles.shape[1:]), dtype=self.tiles.dtype)
        self.read_into(out, indices, threads=threads)
        return out

    def read_into(
        self, out: np.ndarray, indices: np.ndarray, *, threads: int = 4, progress: Any = None
    ) -> None:
        """Fill `out` (RAM or memmap) with the tiles at `indices`, chunk by chunk."""
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n):
            raise DomainclustError(f"tile index out of range for {self.path} ({self.n} tiles)")
        for start, block, where in self._chunk_reads(indices, threads=threads):
            out[where] = block
            if progress is not None:
                progress.update(len(where))

    def _chunk_reads(
        self, indices: np.ndarray, *, threads: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        chunk_ids = indices // self.chunk_len
        order = np.argsort(chunk_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk_ids[order])) + 1
        groups = np.split(order, bounds) if len(order) else []

        def load(where: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
            chunk = int(chunk_ids[where[0]])
            start = chunk * self.chunk_len
            stop = min(start + self.chunk_len, self.n)
            block = self.tiles[start:stop]
            return start, block[indices[where] - start], where

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            yield from pool.map(load, groups)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk_len)

    def to_float(self, tiles: torch.Tensor) -> torch.Tensor:
        """Storage dtype → float32 through the store's per-channel scale/offset."""
        # Not at module level: ingest workers import this module without torch.
        from domainclust.normalise import to_input

        return to_input(tiles, scale=self._scale, offset=self._offset)
