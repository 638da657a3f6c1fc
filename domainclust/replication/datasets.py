"""A reference dataset's split as a TileStore in the run dir: read the layout, ingest if needed.

The layout reader lists the split's images and labels; they go to the `rgb` adapter as a
`path,label` CSV (labels numbered by the dataset's own class order, so train and val agree).
VOC2012 segmentation goes to the adapter as its folder with `voc_split=Segmentation/<split>`
and `masks=` its `SegmentationClass/`, so every tile keeps its mask (VOC's class names, void
unlabelled). A store is named by dataset, split and a digest of the ingest options, and reused
when its ingest finished; an interrupted ingest resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domainclust.atomic import atomic_write_text
from domainclust.data.ingest import default_report_path
from domainclust.data.modality import get_modality, ingest_options
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.replication.layouts import LabelledImages, read_split, voc2012_segmentation

IMAGE_MODALITY = "rgb"


def _complete(store: Path) -> bool:
    try:
        TileStore(store)  # refuses a missing or an interrupted store
    except DomainclustError:
        return False
    return True


def store_name(dataset: str, split: str, options: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset}-{split}-{digest}"


def prepare_store(
    dataset: str,
    root: Path | str,
    split: str,
    *,
    options: dict[str, Any],
    data_dir: Path,
    workers: int = 1,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """The TileStore of `split` of the dataset at `root`, ingested into `data_dir` if needed."""
    name = store_name(dataset, split, options)
    store = data_dir / f"{name}.zarr"
    if _complete(store):
        return store
    if dataset == "voc2012":
        images = voc2012_segmentation(root, split)  # refuses a split or file that is missing
        count, source = len(images), images.root
        settings = {**options, "labels": "none", "voc_split": f"Segmentation/{split}",
                    "masks": str(images.masks[0].parent)}
    else:
        listed = read_split(dataset, root, split)
        count, source = len(listed), listed.root
        settings = {**options, "labels": _labels_option(listed, data_dir / f"{name}.csv")}
    modality = get_modality(IMAGE_MODALITY)
    try:
        resolved = ingest_options(modality, [f"{k}={v}" for k, v in settings.items()])
    except DomainclustError as exc:
        raise DomainclustError(f"ingest options of {dataset}: {exc}") from None
    log(f"ingesting {count} {dataset} {split} images from {source} into {store}")
    report = modality.ingest([source], store, options=resolved, workers=workers,
                             progress=progress)
    if report["skipped"]:
        log(f"  {len(report['skipped'])} item(s) skipped, see {default_report_path(store)}")
    return store


def _labels_option(images: LabelledImages, csv_path: Path) -> str:
    """The rgb `labels=` of a split: its `path,label` CSV, written beside the store, or none."""
    if not any(label >= 0 for label in images.labels):
        return "none"
    atomic_write_text(csv_path, images.labels_csv())
    return str(csv_path)
