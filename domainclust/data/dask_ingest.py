"""Ingest on a Dask cluster: workers read items and write whole chunks (or shards) of the store.

A serial ingest appends item after item; to give the same store tile for tile, the tile range
of every item is fixed in item order, from the tile counts the workers report. The tiles stay
on the workers: each write task gathers the pieces of one write unit (a chunk, or a shard when
the store is sharded) and writes it whole, so no two tasks ever write into one chunk or shard
(concurrent partial writes into a shard corrupt it); masks, chunked like the tiles, go with
them. Only this process writes labels, meta
and the commit log, item by item in order, once every unit holding an item's tiles is on disk.
A worker that dies has its tasks re-run elsewhere (reads are pure, unit writes idempotent); an
ingest that fails leaves the committed prefix, and a re-run continues after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from domainclust.data.ingest_item import (
    Adapter,
    Skipped,
    SourceItem,
    TileBatch,
    item_meta,
    item_record,
    read_item,
)
from domainclust.data.store import TileStoreWriter
from domainclust.errors import DomainclustError


@dataclass
class _Pending:
    """An item whose tiles are assigned a range of the store but not yet committed."""

    key: str
    stop: int  # end of the item's tile range
    read: Any  # the Future of its TileBatch (kept so its tiles stay on a worker until written)
    summary: dict[str, Any]


def _summarize(result: TileBatch | Skipped, item: SourceItem) -> dict[str, Any]:
    """Everything the client needs of a read result except the tiles themselves."""
    record = item_record(item, result)
    if isinstance(result, Skipped):
        return {"n": 0, "record": record, "labels": None, "meta": {}, "reason": result.reason}
    return {"n": len(result.tiles), "record": record, "labels": result.labels,
            "meta": result.meta}


def _write_unit(tiles_path: str, start: int, batches: list[Any], bounds: list[tuple[int, int]],
                masks_path: str | None = None, ignore: int | None = None) -> int:
    """Write one whole chunk/shard: rows [start, start + n) gathered from item batches (and
    their masks, unlabelled pixels stored as `ignore`)."""
    import zarr

    block = np.concatenate([b.tiles[lo:hi] for b, (lo, hi) in zip(batches, bounds)])
    zarr.open_array(tiles_path, mode="r+")[start:start + len(block)] = block
    if masks_path is not None:
        masks = zarr.open_array(masks_path, mode="r+")
        m = np.concatenate([b.masks[lo:hi] for b, (lo, hi) in zip(batches, bounds)])
        masks[start:start + len(m)] = np.where(m < 0, ignore, m).astype(masks.dtype)
    return len(block)


def connect(dask: Any) -> tuple[Any, Callable[[], None]]:
    """A `distributed.Client` for `dask` (a Client, `local:N` or an address), and its closer."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DomainclustError(
            "--dask needs Dask's distributed scheduler: pip install 'dask[distributed]'"
        ) from None
    if isinstance(dask, Client):
        return dask, lambda: None
    if not isinstance(dask, str) or not dask:
        raise DomainclustError(f"--dask must be a scheduler address or local:N, got {dask!r}")
    if dask.startswith("local:"):
        try:
            n = int(dask.removeprefix("local:"))
            if n < 1:
                raise ValueError
        except ValueError:
            raise DomainclustError(f"--dask {dask}: N in local:N must be a positive integer"
                                   ) from None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    try:
        client = Client(dask, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise DomainclustError(f"cannot reach the Dask scheduler at {dask}: {exc}") from None
    return client, client.close


def ingest_on_dask(
    adapter: Adapter,
    items: list[SourceItem],
    options: dict[str, Any],
    *,
    writer: TileStoreWriter,
    dask: Any,
    source_index: dict[str, int],
    on_commit: Callable[[dict[str, Any], str | None], None],
) -> None:
    """Read `items` on the cluster and write their tiles after the writer's last commit."""
    client, close = connect(dask)
    try:
        _run(client, adapter, items, options, writer=writer, source_index=source_index,
             on_commit=on_commit)
    finally:
        close()


def _run(
    client: Any,
    adapter: Adapter,
    items: list[SourceItem],
    options: dict[str, Any],
    *,
    writer: TileStoreWriter,
    source_index: dict[str, int],
    on_commit: Callable[[dict[str, Any], str | None], None],
) -> None:
    unit = writer.write_unit
    tiles_path = str(writer.path / "tiles")
    masks_path = str(writer.path / "masks") if writer.with_masks else None
    ignore = writer.group.attrs.get("mask_ignore")
    ahead = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    empty_labels = np.zeros(0, dtype=np.int64) if "labels" in writer.group else None

    reads: deque[tuple[SourceItem, Any, Any]] = deque()  # submitted, summary not yet taken
    pending: deque[_Pending] = deque()  # assigned a tile range, not yet committed
    pieces: list[tuple[Any, int, int]] = []  # (read, lo, hi) of tiles not yet in a unit write
    units: deque[tuple[int, Any]] = deque()  # (stop, future) of unit writes in flight
    end = written_from = writer.count  # tiles assigned so far end at `end`
    written = writer.count  # every tile below this is on disk
    nxt = 0

    def submit_unit(stop: int) -> None:
        """Hand rows [written_from, stop) (inside one chunk/shard) to one write task."""
        nonlocal written_from, pieces
        if stop > writer.group["tiles"].shape[0]:
            # Workers open the array while they write: let them finish before its shape
            # changes, and grow it geometrically so that this pause is rare.
            while units:
                commit_ready(block=True)
            writer.reserve(max(stop, 2 * writer.group["tiles"].shape[0], stop + ahead * unit))
        batches, bounds, rest = [], [], []
        need = stop - written_from
        for read, lo, hi in pieces:
            take = min(hi - lo, max(need, 0))
            if take:
                batches.append(read)
                bounds.append((lo, lo + take))
                need -= take
            if lo + take < hi:
                rest.append((read, lo + take, hi))
        units.append((stop, client.submit(_write_unit, tiles_path, written_from, batches, bounds,
                                          masks_path, ignore, pure=False)))
        written_from, pieces = stop, rest

    def flush() -> None:
        if end > written_from:
            submit_unit(end)
        while units:
            commit_ready(block=True)
        commit_ready(block=False)

    def commit_ready(*, block: bool) -> None:
        nonlocal written
        while units and (block or units[0][1].done()):
            stop, future = units.popleft()
            future.result()  # raises the task's error (or KilledWorker) here
            written = stop
            block = False
        while pending and pending[0].stop <= written:
            p = pending.popleft()
            s = p.summary
            n = s["n"]
            writer.commit_written(
                n, record=s["record"],
                labels=s["labels"] if n else empty_labels,
                meta=item_meta(s["meta"], n=n, source=source_index[p.key]) if n else None,
            )
            on_commit(s["record"], s.get("reason"))

    try:
        while nxt < len(items) or reads:
            while nxt < len(items) and len(reads) < ahead:
                item = items[nxt]
                read = client.submit(read_item, adapter, item, options, pure=False)
                reads.append((item, read, client.submit(_summarize, read, item, pure=False)))
                nxt += 1
            item, read, summary_f = reads.popleft()
            summary = summary_f.result()  # raises the read's error (or KilledWorker) here
            n = summary["n"]
            if n:
                if summary["labels"] is None and empty_labels is not None:
                    raise DomainclustError(f"item {item.key} came without labels; this is a bug")
                pieces.append((read, 0, n))
            end += n
            pending.append(_Pending(key=item.key, stop=end, read=read, summary=summary))
            while end >= (written_from // unit + 1) * unit:
                submit_unit((written_from // unit + 1) * unit)
            if len(units) > ahead:
                commit_ready(block=True)
            commit_ready(block=False)
    except BaseException:
        # Keep the finished work: write and commit the items read before the failure.
        reads.clear()
        try:
            flush()
        except Exception:  # noqa: BLE001, S110 - the first error is the one to report
            pass
        raise
    flush()
