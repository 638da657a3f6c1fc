"""The ingest engine: source items → adapter reads (in worker processes) → TileStore.

An adapter says what its items are (`discover`), what the store holds (`spec`), and how one
item becomes tiles (`read`, run in a worker process). The engine owns what every adapter needs
the same way: parallel reads, progress, the ingest report, and resuming after an interruption
(each item's tiles are committed together with a record of the item, one line of the store's
commit log, so a re-run skips finished items and never duplicates or loses tiles). Reads run in
this process, in worker processes, or on a Dask cluster (`domainclust.data.dask_ingest`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from domainclust.atomic import atomic_write_text
from domainclust.data.dask_ingest import ingest_on_dask
from domainclust.data.ingest_item import (
    Adapter,
    Skipped,
    SourceItem,
    TileBatch,
    adapter_masks,
    item_meta,
    item_record,
    read_item,
)
from domainclust.data.salt import salt_id
from domainclust.data.store import TileStoreWriter, is_our_store
from domainclust.errors import DomainclustError

REPORT_SUFFIX = ".ingest-report.json"  # the report sits beside the store: it names files by path
TERMINAL_LINES = 200  # skipped items listed on the terminal; the report file lists them all


@dataclass
class Bookkeeping:
    """What an ingest has done so far, folded from the commit records of its store."""

    done: dict[str, int] = field(default_factory=dict)  # key → tiles written
    skipped: dict[str, str] = field(default_factory=dict)  # key → reason (this run's)
    skipped_files: dict[str, list] = field(default_factory=dict)  # key → [[index, why]]
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # adapter counters, summed

    @classmethod
    def replay(cls, records: list[dict[str, Any]], *, legacy: dict[str, Any]) -> Bookkeeping:
        """`legacy`: the single state snapshot of a store written before the commit log."""
        book = cls(done=dict(legacy.get("done", {})),
                   skipped_files=dict(legacy.get("skipped_files", {})),
                   dropped=int(legacy.get("tiles_dropped", 0)))
        for record in records:
            book.apply(record)
        book.skipped.clear()  # skipped items are retried: their reasons come from this run
        return book

    def apply(self, record: dict[str, Any]) -> None:
        key = record["key"]
        self.skipped.pop(key, None)
        self.skipped_files.pop(key, None)
        if record.get("files"):
            self.skipped_files[key] = record["files"]
        if "skip" in record:
            self.skipped[key] = record["skip"]
            return
        self.done[key] = int(record["n"])
        self.dropped += int(record.get("dropped", 0))
        for name, value in record.get("counts", {}).items():
            self.counts[name] = self.counts.get(name, 0) + int(value)


def _results(
    adapter: Adapter, items: list[SourceItem], options: dict[str, Any], workers: int
) -> Iterator[tuple[SourceItem, TileBatch | Skipped]]:
    """Item results in item order, read by `workers` processes with bounded look-ahead."""
    if workers <= 1:
        for item in items:
            yield item, read_item(adapter, item, options)
        return
    ctx = multiprocessing.get_context("spawn")  # fork + torch/BLAS threads deadlocks
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: dict[int, Future] = {}
        nxt = 0
        for i in range(len(items)):
            while nxt < len(items) and len(pending) < 2 * workers:
                pending[nxt] = pool.submit(read_item, adapter, items[nxt], options)
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
    report: Path | None = None,
    add: bool = False,
    dask: Any = None,
    chunk_tiles: int | None = None,
    shard_chunks: int | None = None,
) -> dict[str, Any]:
    """Ingest `sources` into the store at `out` (resuming it if it exists); returns the report.

    The report, which names every skipped file by path, is written to `report` (default: beside
    the store) and listed on stderr. The store keeps counts, item digests and, for resuming,
    the reasons of files left out of finished items, never a path. A store started from other
    sources is refused unless `add` extends it with the new items.

    `dask`: a scheduler address, `local:N` (a LocalCluster of N worker processes) or a
    `distributed.Client`; reads and tile writes then run on its workers. `chunk_tiles`, tiles
    per chunk, and `shard_chunks`, chunks per zarr v3 shard (so that a store of millions of
    tiles is not millions of files), lay out a new store.
    """
    check_destinations(out=Path(out), sources=[Path(s) for s in sources], report=report)
    previous = started_store_attrs(Path(out))  # refuses what is not ours before any read
    tracked = tracked_options(adapter, options)
    if previous is not None:
        check_same_options(previous.get(OPTIONS_ATTR), tracked, store=Path(out))
    found = adapter.discover([Path(s) for s in sources], options)
    if not found:
        raise DomainclustError(
            f"no usable source files found in {', '.join(map(str, sources)) or '(nothing given)'}"
        )
    provenance = None
    if previous is not None:
        found, provenance = continued_items(adapter, found, previous, options)
    # Keys can hold names (an image's folder and file name): the store sees only their digests.
    items = [dataclasses.replace(item, key=store_key(item.key)) for item in found]
    by_key = {item.key: original for item, original in zip(items, found)}
    keys = [item.key for item in items]
    if len(by_key) != len(keys):
        raise DomainclustError("adapter produced duplicate item keys; report this as a bug")
    with_labels = adapter.has_labels(found, options)
    mask_layout = adapter_masks(adapter, found, options)
    spec = adapter.spec(found, options)
    if provenance is not None:
        spec = dataclasses.replace(spec, provenance=provenance)
    writer = TileStoreWriter(out, spec, with_labels=with_labels,
                             with_masks=mask_layout is not None,
                             mask_dtype=mask_layout.dtype if mask_layout else None,
                             mask_classes=mask_layout.classes if mask_layout else None,
                             chunk_tiles=chunk_tiles, shard_chunks=shard_chunks)
    try:
        if previous is None:
            writer.record(**{OPTIONS_ATTR: tracked})
        elif provenance is not None:
            writer.record(provenance=provenance)  # before any tile refers to what it adds
        order = item_order(writer, keys, add=add)
        book = Bookkeeping.replay(writer.records, legacy=writer.state)
        source_index = {key: i for i, key in enumerate(order)}
        # Skipped items are retried on a re-run: the cause (a missing decoder, a file being
        # copied) may have been fixed since.
        todo = [item for item in items if item.key not in book.done]
        empty = np.zeros((0, *writer.group["tiles"].shape[1:]), dtype=writer.spec.dtype)
        empty_labels = np.zeros(0, dtype=np.int64) if with_labels else None
        size = writer.spec.tile_size
        empty_masks = np.zeros((0, size, size), dtype=np.int64) if mask_layout else None

        with tqdm(total=len(items), initial=len(items) - len(todo), desc="ingest", unit="item",
                  disable=not progress) as bar:

            def committed(record: dict[str, Any], reason: str | None = None) -> None:
                book.apply(record)
                if reason is not None:  # the report beside the store may name files: unscrubbed
                    book.skipped[record["key"]] = reason
                bar.update(1)
                bar.set_postfix(tiles=writer.count, skipped=len(book.skipped), refresh=False)

            if dask is not None:
                ingest_on_dask(adapter, todo, options, writer=writer, dask=dask,
                               source_index=source_index, on_commit=committed)
            else:
                for item, result in _results(adapter, todo, options, workers):
                    record = item_record(item, result)
                    if isinstance(result, TileBatch) and len(result.tiles):
                        writer.append(result.tiles, labels=result.labels, record=record,
                                      masks=result.masks,
                                      meta=item_meta(result.meta, n=len(result.tiles),
                                                     source=source_index[item.key]))
                    else:  # nothing usable in the item: commit only the bookkeeping
                        writer.append(empty, labels=empty_labels, masks=empty_masks,
                                      record=record)
                    committed(record, result.reason if isinstance(result, Skipped) else None)

        entries = skip_entries(by_key, book.skipped, book.skipped_files)
        counts = {"items_found": len(items), "items_read": len(book.done),
                  "items_skipped": len(book.skipped), "files_skipped": len(entries),
                  "tiles_written": writer.count, "tiles_dropped": book.dropped,
                  **dict(sorted(book.counts.items()))}
        report_path = Path(report) if report is not None else default_report_path(Path(out))
        full = {**counts, "store": str(out), "skipped": entries}
        atomic_write_text(report_path, json.dumps(full, indent=2))
        writer.finish(sources=order, ingest_report=counts)  # no paths, no reasons in the store
        print_skipped(entries, report_path)
        if writer.count == 0:
            raise DomainclustError(
                f"ingest wrote no tiles to {out}; every item was skipped (see {report_path})"
            )
        return full
    finally:
        writer.close()  # a failed run lets go of the store; a re-run resumes it


def check_destinations(*, out: Path, sources: list[Path], report: Path | None) -> None:
    """Refuse, before anything is read or written, a store or report that would land on or
    inside the sources, and a report path that is a folder."""
    target = out.resolve()
    for source in sources:
        where = source.resolve()
        if target == where or (where.is_dir() and target.is_relative_to(where)):
            raise DomainclustError(
                f"--out {out} is inside the source {source}; a store written there would mix "
                "with the files it is made from: choose an --out outside the sources"
            )
    if report is not None:
        report = Path(report)
        if report.is_dir():
            raise DomainclustError(f"--report {report} is a folder; give a file path")
        if report.resolve() in {s.resolve() for s in sources}:
            raise DomainclustError(f"--report {report} is one of the sources")
        if not report.parent.is_dir():
            raise DomainclustError(f"--report {report}: the folder {report.parent} does not exist")


OPTIONS_ATTR = "ingest_options"  # the store attribute holding the options its tiles depend on
SALT_ID = "salt_id"  # among them: the one-way id of the item keys' salt (`domainclust.data.salt`)


def tracked_options(adapter: Adapter, options: dict[str, Any]) -> dict[str, Any]:
    """The ingest options that decide what the tiles hold, as JSON values: part of the store's
    identity. An adapter's `untracked_options` (a salt, a work-item size) are left out; an
    adapter that salts its item keys (`key_salt(options)`) adds the salt's one-way id."""
    untracked = set(getattr(adapter, "untracked_options", ()))
    kept = {k: v for k, v in sorted(options.items()) if k not in untracked}
    key_salt = getattr(adapter, "key_salt", None)
    if key_salt is not None:
        kept[SALT_ID] = salt_id(key_salt(options))
    return json.loads(json.dumps(kept, default=str))


def check_same_options(stored: dict[str, Any] | None, options: dict[str, Any], *,
                       store: Path) -> None:
    """Refuse to resume or extend a store with options other than those it was made with:
    tiles made two ways would mix under one description. A store that recorded no options
    (an older domainclust) is not checked; an option it does not know is not compared."""
    if stored is None:
        return
    for key in sorted(set(stored) & set(options)):
        if key == SALT_ID and stored[key] != options[key]:
            raise DomainclustError(
                f"{store} was ingested with another key salt (salt id {stored[key]}, this run's "
                f"{options[key]}): its items would all look new. Resume or extend it where it "
                "was made, or pass that installation's salt (its config folder's `salt` file) "
                "with --set salt=..."
            )
        if stored[key] != options[key]:
            was, now = json.dumps(stored[key]), json.dumps(options[key])
            raise DomainclustError(
                f"{store} was ingested with {key}={was}; this run asks for {key}={now}. Tiles "
                f"made both ways would mix in one store: run with --set {key}={was} to resume "
                "or extend it, or ingest into another --out"
            )


def started_store_attrs(out: Path) -> dict[str, Any] | None:
    """The attributes of the store at `out` if a writer would resume it (ours, its tiles
    array created), else None; anything at `out` that is not ours is refused."""
    if not is_our_store(out) or not (out / "tiles" / "zarr.json").is_file():
        return None
    try:
        return dict(json.loads((out / "zarr.json").read_text()).get("attributes", {}))
    except (OSError, ValueError):  # being rewritten by another writer: its lock refuses us
        return None


def continued_items(
    adapter: Adapter, items: list[SourceItem], attrs: dict[str, Any], options: dict[str, Any]
) -> tuple[list[SourceItem], dict[str, Any] | None]:
    """Items fitted to the store they resume or extend, and the store's provenance after this
    run (None: unchanged). Only adapters whose tiles depend on the whole dataset need it (the
    geotiff adapter keeps the store's band statistics and scene numbering)."""
    hook = getattr(adapter, "continue_store", None)
    if hook is None:
        return items, None
    return hook(items, attrs, options)


def store_key(key: str) -> str:
    """What the store records for an item key: a digest, since keys may hold file names."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def default_report_path(out: Path) -> Path:
    """`<store>.ingest-report.json` next to the store: outside it, so paths never enter it."""
    return out.parent / (out.name + REPORT_SUFFIX)


def item_order(writer: TileStoreWriter, keys: list[str], *, add: bool) -> list[str]:
    """The store's items in source-index order; refuses to mix in another source list.

    A new store records the items it is made from. A re-run must find the same items, unless
    `add` is set: then new items are appended (items it no longer finds keep their tiles).
    """
    stored = writer.recorded("items")
    if stored is None and (writer.count or writer.state):
        raise DomainclustError(
            f"{writer.path} was written by an older domainclust that did not record its items, "
            "so it cannot be resumed or extended safely; ingest into a new --out"
        )
    if stored is None:
        writer.record(items=keys)
        return keys
    new = [k for k in keys if k not in set(stored)]
    missing = len(set(stored) - set(keys))
    if add:
        if new:
            writer.record(items=[*stored, *new])
        return [*stored, *new]
    if new or missing:
        raise DomainclustError(
            f"{writer.path} was started from {len(stored)} item(s); these sources give "
            f"{len(keys)} ({len(new)} new, {missing} missing). Run again with the sources it was "
            "started from to resume it, add --add to extend it with the new ones, or choose "
            "another --out"
        )
    return list(stored)


def skip_entries(
    items: dict[str, SourceItem], skipped: dict[str, str], skipped_files: dict[str, list]
) -> list[dict[str, Any]]:
    """One {item, path, reason} per skipped file, for the report beside the store (`item` is
    the digest the store knows the item by); an item without paths is named by its adapter's
    key, one no longer found by its digest."""
    entries = []
    for key in sorted(set(skipped) | set(skipped_files)):
        item = items.get(key)
        paths = [str(p) for p in item.paths] if item else []
        label = item.key if item else f"item {key}"
        named = {}
        for i, reason in skipped_files.get(key, []):
            where = paths[i] if 0 <= i < len(paths) else f"{label}, file #{i}"
            named[where] = reason
        if key in skipped:
            for where in paths or [label]:
                named.setdefault(where, skipped[key])
        entries += [{"item": key, "path": where, "reason": reason}
                    for where, reason in named.items()]
    return sorted(entries, key=lambda e: e["path"])


def print_skipped(entries: list[dict[str, Any]], report_path: Path) -> None:
    """Name the skipped files on stderr, the owner of the files being the one who can fix them."""
    if not entries:
        return
    print(f"{len(entries)} file(s) skipped (all listed in {report_path}):", file=sys.stderr)
    for entry in entries[:TERMINAL_LINES]:
        print(f"  {entry['path']}: {entry['reason']}", file=sys.stderr)
    if len(entries) > TERMINAL_LINES:
        print(f"  ... and {len(entries) - TERMINAL_LINES} more in {report_path}", file=sys.stderr)
