"""The ingest engine: source items → adapter reads (in worker processes) → TileStore.

An adapter says what its items are (`discover`), what the store holds (`spec`), and how one
item becomes tiles (`read`, run in a worker process). The engine owns what every adapter needs
the same way: parallel reads, progress, the ingest report, and resuming after an interruption
(each item's tiles are committed together with a record of the item, one line of the store's
commit log, so a re-run skips finished items and never duplicates or loses tiles). Reads run in
this process, in worker processes, or on a Dask cluster (`domainclust.dask_ingest`).
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from domainclust.atomic import atomic_write_text
from domainclust.errors import DomainclustError
from domainclust.store import StoreSpec, TileStoreWriter

REPORT_NAME = "ingest_report.json"


@dataclass
class SourceItem:
    """One unit of work: a file, a DICOM series, a window of a scene, an RGB/depth pair."""

    key: str  # stable across runs: the resume bookkeeping uses it
    paths: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TileBatch:
    tiles: np.ndarray  # (n, C, H, W) in the store's dtype
    labels: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_tiles: int = 0  # tiles dropped inside the item (background, nodata), for the report
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (name, reason) of
    # files that failed inside an item that groups several files


class Skip(Exception):
    """Raised by `Adapter.read` for an item that cannot be used; the reason goes in the report."""


class Adapter(Protocol):
    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]: ...

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec: ...

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool: ...

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch: ...


@dataclass
class Bookkeeping:
    """What an ingest has done so far, folded from the commit records of its store."""

    done: dict[str, int] = field(default_factory=dict)  # key → tiles written
    skipped: dict[str, str] = field(default_factory=dict)  # key → reason
    skipped_files: dict[str, list] = field(default_factory=dict)  # key → [[name, why]]
    dropped: int = 0

    @classmethod
    def replay(cls, records: list[dict[str, Any]], *, legacy: dict[str, Any]) -> Bookkeeping:
        """`legacy`: the single state snapshot of a store written before the commit log."""
        book = cls(done=dict(legacy.get("done", {})), skipped=dict(legacy.get("skipped", {})),
                   skipped_files=dict(legacy.get("skipped_files", {})),
                   dropped=int(legacy.get("tiles_dropped", 0)))
        for record in records:
            book.apply(record)
        return book

    def apply(self, record: dict[str, Any]) -> None:
        key = record["key"]
        self.skipped.pop(key, None)
        self.skipped_files.pop(key, None)
        if "skip" in record:
            self.skipped[key] = record["skip"]
            return
        self.done[key] = int(record["n"])
        self.dropped += int(record.get("dropped", 0))
        if record.get("files"):
            self.skipped_files[key] = record["files"]


def item_record(key: str, result: TileBatch | str) -> dict[str, Any]:
    """The commit record of one item: a few bytes, whatever the number of items before it."""
    if isinstance(result, str):
        return {"key": key, "skip": result}
    record: dict[str, Any] = {"key": key, "n": len(result.tiles)}
    if result.skipped_tiles:
        record["dropped"] = int(result.skipped_tiles)
    if result.skipped_files:
        record["files"] = [list(f) for f in result.skipped_files]
    return record


def item_meta(meta: dict[str, np.ndarray], *, n: int, source: int) -> dict[str, np.ndarray]:
    """The meta rows of an item's `n` tiles: its source index, then the adapter's own."""
    return {"source": np.full(n, source, dtype=np.int32), **meta}


def _read(adapter: Adapter, item: SourceItem, options: dict[str, Any]) -> TileBatch | str:
    try:
        return adapter.read(item, options)
    except Skip as exc:
        return str(exc)


def _results(
    adapter: Adapter, items: list[SourceItem], options: dict[str, Any], workers: int
) -> Iterator[tuple[SourceItem, TileBatch | str]]:
    """Item results in item order, read by `workers` processes with bounded look-ahead."""
    if workers <= 1:
        for item in items:
            yield item, _read(adapter, item, options)
        return
    ctx = multiprocessing.get_context("spawn")  # fork + torch/BLAS threads deadlocks
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: dict[int, Future] = {}
        nxt = 0
        for i in range(len(items)):
            while nxt < len(items) and len(pending) < 2 * workers:
                pending[nxt] = pool.submit(_read, adapter, items[nxt], options)
                nxt += 1
            future = pending.pop(i)
            wait([future], return_when=FIRST_COMPLETED)
            yield items[i], future.result()


def run_ingest(
    adapter: Adapter,
    sources: list[Path],
    out: Path,
    *,
    options: dict[str, Any],
    workers: int = 1,
    progress: bool = True,
    dask: Any = None,
    chunk_tiles: int | None = None,
    shard_chunks: int | None = None,
) -> dict[str, Any]:
    """Ingest `sources` into the store at `out` (resuming it if it exists); returns the report.

    `dask`: a scheduler address, `local:N` (a LocalCluster of N worker processes) or a
    `distributed.Client`; reads and tile writes then run on its workers. `chunk_tiles`, tiles
    per chunk, and `shard_chunks`, chunks per zarr v3 shard (so that a store of millions of
    tiles is not millions of files), lay out a new store.
    """
    items = adapter.discover([Path(s) for s in sources], options)
    if not items:
        raise DomainclustError(
            f"no usable source files found in {', '.join(map(str, sources)) or '(nothing given)'}"
        )
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise DomainclustError("adapter produced duplicate item keys; report this as a bug")
    with_labels = adapter.has_labels(items, options)
    writer = TileStoreWriter(out, adapter.spec(items, options), with_labels=with_labels,
                             chunk_tiles=chunk_tiles, shard_chunks=shard_chunks)
    book = Bookkeeping.replay(writer.records, legacy=writer.state)
    source_index = {key: i for i, key in enumerate(keys)}
    # Skipped items are retried on a re-run: the cause (a missing decoder, a file being copied)
    # may have been fixed since.
    todo = [item for item in items if item.key not in book.done]
    empty = np.zeros((0, *writer.group["tiles"].shape[1:]), dtype=writer.spec.dtype)
    empty_labels = np.zeros(0, dtype=np.int64) if with_labels else None

    with tqdm(total=len(items), initial=len(items) - len(todo), desc="ingest", unit="item",
              disable=not progress) as bar:

        def committed(record: dict[str, Any]) -> None:
            book.apply(record)
            bar.update(1)
            bar.set_postfix(tiles=writer.count, skipped=len(book.skipped), refresh=False)

        if dask is not None:
            from domainclust.dask_ingest import ingest_on_dask

            ingest_on_dask(adapter, todo, options, writer=writer, dask=dask,
                           source_index=source_index, on_commit=committed)
        else:
            for item, result in _results(adapter, todo, options, workers):
                record = item_record(item.key, result)
                if isinstance(result, TileBatch) and len(result.tiles):
                    writer.append(result.tiles, labels=result.labels, record=record,
                                  meta=item_meta(result.meta, n=len(result.tiles),
                                                 source=source_index[item.key]))
                else:  # nothing usable in the item: commit only the bookkeeping
                    writer.append(empty, labels=empty_labels, record=record)
                committed(record)

    report = {
        "items_found": len(items),
        "items_read": len(book.done),
        "tiles_written": writer.count,
        "tiles_dropped": book.dropped,
        "skipped": sorted(
            [{"item": key, "reason": reason} for key, reason in book.skipped.items()]
            + [{"item": name, "reason": reason}
               for files in book.skipped_files.values() for name, reason in files],
            key=lambda s: s["item"],
        ),
    }
    writer.finish(sources=keys, ingest_report=report)
    atomic_write_text(Path(out) / REPORT_NAME, json.dumps(report, indent=2))
    if writer.count == 0:
        raise DomainclustError(
            f"ingest wrote no tiles to {out}; every item was skipped (see {Path(out) / REPORT_NAME})"
        )
    return report
