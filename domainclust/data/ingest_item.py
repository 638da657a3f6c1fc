"""What one ingest item is and how it is read, shared by every way of running an ingest.

An adapter turns a `SourceItem` into a `TileBatch` (or raises `Skip`); `read_item` runs that
read on one item, in whatever process or Dask worker holds it, so that one bad file is a
skip naming it, never the end of the run; `item_record` and `item_meta` are what the store
commits for the item. The serial engine (`domainclust.data.ingest`) and the Dask one
(`domainclust.data.dask_ingest`) both build on this module and on nothing of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from domainclust.data.store import StoreSpec
from domainclust.errors import DomainclustError


@dataclass
class SourceItem:
    """One unit of work: a file, a DICOM series, a window of a scene, an RGB/depth pair."""

    key: str  # stable across runs: the resume bookkeeping uses it
    paths: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskLayout:
    """What an adapter that keeps a per-pixel mask beside every tile declares about them."""

    dtype: str  # "uint8" | "int16", see `domainclust.data.store.mask_dtype_for`
    classes: list[str] | None = None  # class names by id, when the source gives them


@dataclass
class TileBatch:
    tiles: np.ndarray  # (n, C, H, W) in the store's dtype
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None  # (n, H, W) class ids, negative where unlabelled
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_tiles: int = 0  # tiles dropped inside the item (background, nodata), for the report
    skipped_files: list[tuple[int, str]] = field(default_factory=list)  # (index in the item's
    # paths, reason) of files left out of an item that groups several files
    counts: dict[str, int] = field(default_factory=dict)  # adapter counters summed into the
    # report, e.g. {"values_clipped": n}: what a user should know about the values stored


class Skip(Exception):
    """Raised by `Adapter.read` for an item that cannot be used; the reason goes in the report.

    `files` gives per-file reasons, as (index in the item's paths, reason), when the files of
    a multi-file item failed for different reasons. Reasons never name files: the report beside
    the store adds the paths, and the store keeps only the reasons.
    """

    def __init__(self, reason: str, *, files: list[tuple[int, str]] | None = None) -> None:
        super().__init__(reason)
        self.files = list(files or [])


class Adapter(Protocol):
    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]: ...

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec: ...

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool: ...

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch: ...

    # Optional: `mask_layout(items, options) -> MaskLayout | None`; an adapter that gives one
    # returns `masks` with every batch (see `adapter_masks`).
    # Optional: `untracked_options`, the names of options that change no tile (they stay out
    # of the store's identity, see `domainclust.data.ingest.tracked_options`), and
    # `continue_store(items, attrs, options) -> (items, provenance)`, for an adapter whose
    # items depend on the store they extend (see `domainclust.data.ingest.continued_items`).


def adapter_masks(adapter: Adapter, items: list[SourceItem],
                  options: dict[str, Any]) -> MaskLayout | None:
    """The adapter's mask layout, None for an adapter (or options) without masks."""
    layout = getattr(adapter, "mask_layout", None)
    return None if layout is None else layout(items, options)


@dataclass
class Skipped:
    """An item that gave no tiles, as a worker hands it back (picklable)."""

    reason: str
    files: list[tuple[int, str]]


def item_record(item: SourceItem, result: TileBatch | Skipped) -> dict[str, Any]:
    """The commit record of one item: a few bytes, whatever the number of items before it.
    Reasons are scrubbed of the item's paths: the record lives in the store."""
    files = result.files if isinstance(result, Skipped) else result.skipped_files
    record: dict[str, Any] = {"key": item.key}
    if isinstance(result, Skipped):
        record["skip"] = scrub_paths(result.reason, item.paths)
    else:
        record["n"] = len(result.tiles)
        if result.skipped_tiles:
            record["dropped"] = int(result.skipped_tiles)
        if any(result.counts.values()):
            record["counts"] = {k: int(v) for k, v in sorted(result.counts.items()) if v}
    if files:
        record["files"] = [[int(i), scrub_paths(r, item.paths)] for i, r in files]
    return record


def item_meta(meta: dict[str, np.ndarray], *, n: int, source: int) -> dict[str, np.ndarray]:
    """The meta rows of an item's `n` tiles: its source index, then the adapter's own."""
    return {"source": np.full(n, source, dtype=np.int32), **meta}


def read_item(adapter: Adapter, item: SourceItem, options: dict[str, Any]) -> TileBatch | Skipped:
    """One item's tiles, or why it gave none. Whatever a reader or resampler raises on one
    item (a damaged file, a header asking for more memory than there is) skips that item
    alone; only a DomainclustError, a problem of the whole run, stops it."""
    try:
        return adapter.read(item, options)
    except Skip as exc:
        return Skipped(str(exc), exc.files)
    except DomainclustError:
        raise
    except MemoryError:
        return Skipped("MemoryError: reading it needs more memory than is free", [])
    except Exception as exc:  # noqa: BLE001 - one bad file never ends the run
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        return Skipped(f"cannot be read ({type(exc).__name__}{': ' + text if text else ''})",
                       [])


def scrub_paths(reason: str, paths: list[Path]) -> str:
    """A reason without the item's file paths or file names (libraries quote them)."""
    for path in paths:
        texts = {str(path.resolve()), str(path)}
        if "." in path.name or len(path.name) >= 8:  # not a word like "empty" or a number
            texts.add(path.name)
        for text in sorted(texts, key=len, reverse=True):
            reason = reason.replace(text, "<file>")
    return reason
