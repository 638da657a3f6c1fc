"""Work items for the image adapters: typed options, files grouped into items, per-file skips.

Items group several files (`group_size`) so that the engine's per-item cost (one commit per
item) stays small next to decoding. A file that fails inside a group is returned in the
batch's `skipped_files`, so the engine's report names every unusable file with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from domainclust.config import build_dataclass
from domainclust.data.ingest_item import Skip, SourceItem, TileBatch
from domainclust.errors import DomainclustError

T = TypeVar("T")
K = TypeVar("K")


def parse_options(cls: type[T], options: Mapping[str, Any], *, modality: str) -> T:
    """Build the options dataclass `cls`, checking every value against its declared type."""
    return build_dataclass(cls, dict(options), what=f"{modality} option")


def positive(value: int, what: str) -> None:
    if value < 1:
        raise DomainclustError(f"{what} must be at least 1, got {value}")


@dataclass(frozen=True)
class Entry:
    """One tile's worth of input: an image (rgb) or an RGB/depth pair (rgbd)."""

    name: str  # shown in reports: source folder name / path inside it
    paths: tuple[Path, ...]
    label: int | None = None
    label_name: str | None = None  # class name behind `label`, recorded in the store


def root_names(roots: Sequence[Path]) -> list[str]:
    """Short, distinct names for source roots (their folder name, numbered if names repeat)."""
    names = [r.name or str(r) for r in roots]
    return [n if names.count(n) == 1 else f"{n}~{i}" for i, n in enumerate(names)]


def group_entries(entries: Sequence[Entry], *, group_size: int) -> list[SourceItem]:
    """Consecutive entries in groups of `group_size`; a key names its first entry, the count,
    and a digest of every name, so a changed group never passes for a finished one."""
    items = []
    for start in range(0, len(entries), group_size):
        group = entries[start:start + group_size]
        names = [e.name for e in group]
        digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:8]
        key = f"{names[0]}+{len(group) - 1}#{digest}" if len(group) > 1 else names[0]
        labelled = group[0].label is not None
        items.append(SourceItem(
            key=key, paths=[p for e in group for p in e.paths],
            info={"names": names, "width": len(group[0].paths),
                  "labels": [e.label for e in group] if labelled else None,
                  "label_names": [e.label_name for e in group] if labelled else None},
        ))
    return items


def number_labels(names: Mapping[K, str]) -> dict[K, tuple[int, str]]:
    """(label, class name) per key: non-negative integer labels are kept as they are, names
    are numbered in sorted order."""
    values = set(names.values())
    if all(v.isdigit() for v in values):
        return {k: (int(v), str(int(v))) for k, v in names.items()}
    index = {c: i for i, c in enumerate(sorted(values))}
    return {k: (index[v], v) for k, v in names.items()}


def class_names(items: Sequence[SourceItem]) -> list[str] | None:
    """Class names by label index, when labels came from names (folders, CSV names)."""
    names: dict[int, str] = {}
    for item in items:
        labels, label_names = item.info.get("labels") or (), item.info.get("label_names") or ()
        names.update(zip(labels, label_names, strict=True))
    if not names or all(name == str(label) for label, name in names.items()):
        return None
    return [names.get(i, "") for i in range(max(names) + 1)]


def skipped_item(name: str, reason: str) -> SourceItem:
    """An item that is only there to be reported: `read` raises Skip with `reason`."""
    return SourceItem(key=name, paths=[], info={"skip": reason})


def entries_of(item: SourceItem) -> Iterator[tuple[int, str, tuple[Path, ...]]]:
    """(index in item, name, paths) of every entry of a grouped item; raises Skip for a
    report-only item."""
    if "skip" in item.info:
        raise Skip(item.info["skip"])
    width = item.info["width"]
    for i, name in enumerate(item.info["names"]):
        yield i, name, tuple(item.paths[i * width:(i + 1) * width])


def finish_batch(
    item: SourceItem,
    options: Mapping[str, Any],
    *,
    tiles: list[np.ndarray],
    kept: list[int],
    meta: dict[str, np.ndarray],
    failed: list[tuple[int, str]],
    dtype: str,
    masks: list[np.ndarray] | None = None,
) -> TileBatch:
    """The item's TileBatch; `failed` holds (index in the item's paths of the file at fault,
    reason) per entry that gave no tile, so a pair names the file that is bad; `masks`, when
    the item keeps them, one (H, W) class-id mask per tile. An item of one
    file that failed is skipped (a re-run retries it); otherwise the failed files are listed
    and the item is committed with the tiles of the rest."""
    if not tiles and len(item.paths) == 1:
        raise Skip(failed[0][1])
    if not tiles:  # the engine commits the item with no tiles and reports every file
        return TileBatch(tiles=np.zeros(0), skipped_files=list(failed))
    labels = item.info.get("labels")
    return TileBatch(
        tiles=np.stack(tiles).astype(dtype, copy=False),
        labels=None if labels is None else np.asarray([labels[i] for i in kept], np.int64),
        masks=None if masks is None else np.stack(masks),
        meta=meta,
        skipped_tiles=len(failed),
        skipped_files=list(failed),
    )
