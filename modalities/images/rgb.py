"""The `rgb` adapter: folders of photographs (ImageNet, Places, PASCAL VOC, plain) → RGB tiles.

Layouts, per source folder:

- PASCAL VOC: a folder that is, holds, or holds a year folder holding `JPEGImages/` (e.g.
  `VOCdevkit/`, `VOCdevkit/VOC2007/`): only `JPEGImages/` is read (never the segmentation PNGs);
  `voc_split=trainval` keeps the ids listed in `ImageSets/Main/trainval.txt`.
- ImageNet / Places: images in class sub-folders; the class is the folder path below the source
  (`n01440764`, or `a/abbey` for Places). `labels=auto` uses it when no image lies directly in
  the source folder and there are at least two classes; `labels=folders` insists on it.
- Plain folders (searched recursively) or single image files.

`labels=path/to/file.csv` reads `path,label` rows instead (optional header; paths relative to
the CSV's folder); integer labels are kept, names are numbered in sorted order. Files the CSV
does not list are skipped and reported. Each image becomes one `tile_size` tile: shorter side
scaled to `tile_size`, centre kept (see `modalities.images.decode`). Tiles are uint8, read as
`value / 255`.

`masks=FOLDER` keeps a per-pixel class mask beside every tile: `FOLDER/<image stem>.png`, an
8-bit palette or grayscale PNG whose pixel values are the class ids and 255 the unlabelled
(void) pixels, as PASCAL VOC's `SegmentationClass/`. It is cut from the same centre square as
its image with nearest neighbour; an image without a mask, or whose mask is not its size, is
skipped and reported. `mask_classes=auto` names the classes as VOC does (background and the 20
VOC classes) when the source is a VOC folder, `voc` always, `none` never (ids only).
`voc_split=Segmentation/train` reads the ids of `ImageSets/Segmentation/train.txt` instead of
`ImageSets/Main/`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainclust.modalities.images.decode import (
    UnreadableFile,
    decode_rgb,
    is_image,
    square_mask,
    square_tile,
    walk_files,
)
from domainclust.modalities.images.items import (
    Entry,
    class_names,
    entries_of,
    finish_batch,
    group_entries,
    number_labels,
    parse_options,
    positive,
    root_names,
    skipped_item,
)

from domainclust.data.ingest import run_ingest
from domainclust.data.ingest_item import MaskLayout, SourceItem, TileBatch
from domainclust.data.modality import Modality
from domainclust.data.store import StoreSpec
from domainclust.errors import DomainclustError
from domainclust.replication.layouts import VOC_SEGMENTATION_CLASSES, VOC_VOID, read_voc_mask

CHANNELS = ("red", "green", "blue")
LABEL_MODES = ("auto", "folders", "none")
MASK_CLASS_MODES = ("auto", "voc", "none")
MASK_SUFFIX = ".png"
Labels = dict[Path, tuple[int, str]]  # image → (label, class name)


@dataclass(frozen=True)
class RgbOptions:
    """Ingest options (`--set key=value`)."""

    tile_size: int = 64  # tile side in pixels
    labels: str = "auto"  # auto | folders | none | path to a `path,label` CSV
    voc_split: str | None = None  # VOC only: ImageSets/Main/<split>.txt ids (e.g. trainval),
    # or ImageSets/<set>/<split>.txt for `<set>/<split>` (e.g. Segmentation/train)
    masks: str | None = None  # folder of <image stem>.png class-id masks (255: unlabelled)
    mask_classes: str = "auto"  # auto (VOC's names for a VOC source) | voc | none
    fast_jpeg: bool = True  # let libjpeg decode large JPEGs at 1/2..1/8 scale (≥ 2× the tile)
    group_size: int = 64  # images per work item

    def __post_init__(self) -> None:
        positive(self.tile_size, "rgb option tile_size")
        positive(self.group_size, "rgb option group_size")
        if self.mask_classes not in MASK_CLASS_MODES:
            raise DomainclustError(f"rgb option mask_classes: expected one of "
                                   f"{', '.join(MASK_CLASS_MODES)}, got {self.mask_classes!r}")
        if self.labels not in LABEL_MODES and not self.labels.lower().endswith(".csv"):
            raise DomainclustError(
                f"rgb option labels: expected one of {', '.join(LABEL_MODES)} or a .csv file, "
                f"got {self.labels!r}"
            )


@dataclass(frozen=True)
class _Image:
    root: int
    path: Path
    rel: str  # path below its root, posix ("" when the root is the file itself)


class RgbAdapter:
    """Adapter for image folders; stateless, so it pickles into spawned workers."""

    untracked_options = ("masks",)  # a path; whether masks are kept is in the store's layout

    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]:
        opts = parse_options(RgbOptions, options, modality="rgb")
        roots, split_ids = _roots(sources, voc_split=opts.voc_split)
        images = [img for i, root in enumerate(roots) for img in _images_under(root, i)
                  if i not in split_ids or img.path.stem in split_ids[i]]
        if not images:
            raise DomainclustError(
                f"no images (.jpg, .png, .tif, .bmp, .webp, ...) found in "
                f"{', '.join(map(str, sources)) or '(no sources given)'}"
            )
        names = root_names(roots)
        labels, problems = _labels(images, opts.labels, voc=_is_voc(roots))
        mask_dir = _mask_dir(opts.masks)
        entries, unlisted = [], []
        for img in images:
            name = f"{names[img.root]}/{img.rel}" if img.rel else names[img.root]
            paths: tuple[Path, ...] = (img.path,)
            if mask_dir is not None:
                mask = mask_dir / f"{img.path.stem}{MASK_SUFFIX}"
                if not mask.is_file():
                    unlisted.append(skipped_item(name, f"no mask {mask.name} in the masks "
                                                       "folder"))
                    continue
                paths = (img.path, mask)
            if labels is None:
                entries.append(Entry(name=name, paths=paths))
            elif img.path in labels:
                label, class_name = labels[img.path]
                entries.append(Entry(name=name, paths=paths, label=label, label_name=class_name))
            else:
                unlisted.append(skipped_item(name, f"not listed in {opts.labels}"))
        items = group_entries(entries, group_size=opts.group_size)
        classes = _mask_class_names(opts, voc=_is_voc(roots))
        for item in items:
            item.info["mask_classes"] = None if classes is None else list(classes)
        return items + unlisted + [skipped_item(name, reason) for name, reason in problems]

    def mask_layout(self, items: list[SourceItem], options: dict[str, Any]) -> MaskLayout | None:
        opts = parse_options(RgbOptions, options, modality="rgb")
        if opts.masks is None:
            return None
        classes = next((item.info["mask_classes"] for item in items
                        if "mask_classes" in item.info), None)
        return MaskLayout(dtype="uint8", classes=None if classes is None else list(classes))

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool:
        return any(item.info.get("labels") is not None for item in items)

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec:
        opts = parse_options(RgbOptions, options, modality="rgb")
        provenance: dict[str, Any] = {
            "adapter": "rgb", "tile": "shorter side scaled to tile_size, centre square, bilinear",
            "labels": opts.labels, "fast_jpeg": opts.fast_jpeg,
        }
        if opts.masks is not None:
            provenance["masks"] = "<stem>.png class ids beside each image, nearest neighbour"
        classes = class_names(items)
        if classes is not None:
            provenance["classes"] = classes
        return StoreSpec(modality="rgb", channels=CHANNELS, tile_size=opts.tile_size,
                         dtype="uint8", scale=(1 / 255,) * 3, offset=(0.0,) * 3,
                         provenance=provenance)

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch:
        opts = parse_options(RgbOptions, options, modality="rgb")
        tiles, masks, kept, failed = [], [], [], []
        meta: dict[str, list[Any]] = {"position": [], "image_size": [], "item_index": []}
        classes = item.info.get("mask_classes")
        width = item.info.get("width", 1)
        for i, _, (path, *mask_path) in entries_of(item):
            try:
                image = decode_rgb(path, reduce_for=opts.tile_size if opts.fast_jpeg else None)
            except UnreadableFile as exc:
                failed.append((i * width, str(exc)))
                continue
            if mask_path:
                try:
                    mask = read_voc_mask(mask_path[0], n_classes=len(classes) if classes
                                         else VOC_VOID)
                    masks.append(square_mask(mask, opts.tile_size, full_size=image.full_size))
                except (DomainclustError, UnreadableFile) as exc:
                    failed.append((i * width + 1, str(exc)))
                    continue
            tile, box = square_tile(image, opts.tile_size)
            tiles.append(tile)
            kept.append(i)
            meta["position"].append(box)
            meta["image_size"].append(image.full_size)
            meta["item_index"].append(i)
        arrays = {"position": np.asarray(meta["position"], np.float32).reshape(-1, 4),
                  "image_size": np.asarray(meta["image_size"], np.int32).reshape(-1, 2),
                  "item_index": np.asarray(meta["item_index"], np.int32)}
        return finish_batch(item, options, tiles=tiles, kept=kept, meta=arrays, failed=failed,
                            dtype="uint8", masks=masks if opts.masks is not None else None)


def _roots(sources: list[Path], *, voc_split: str | None) -> tuple[list[Path], dict[int, set[str]]]:
    """Folders (or files) to read, with VOC sources narrowed to their `JPEGImages/`; the second
    value maps a root's index to its split's image ids when `voc_split` is set."""
    roots: list[Path] = []
    splits: dict[int, set[str]] = {}
    for source in dict.fromkeys(Path(s) for s in sources):  # a source given twice counts once
        if not source.exists():
            raise DomainclustError(f"{source} does not exist")
        voc_dirs = _voc_image_dirs(source) if source.is_dir() else []
        if voc_split is not None and not voc_dirs:
            raise DomainclustError(f"voc_split is set but {source} holds no VOC JPEGImages/ folder")
        for folder in voc_dirs or [source]:
            if voc_split is not None:
                splits[len(roots)] = _voc_ids(folder.parent, voc_split)
            roots.append(folder)
    return roots, splits


def _mask_dir(masks: str | None) -> Path | None:
    if masks is None:
        return None
    folder = Path(masks)
    if not folder.is_dir():
        raise DomainclustError(f"rgb option masks={masks}: no such folder (it should hold a "
                               f"<image name>{MASK_SUFFIX} class-id mask per image)")
    return folder


def _mask_class_names(opts: RgbOptions, *, voc: bool) -> tuple[str, ...] | None:
    if opts.mask_classes == "voc" or (opts.mask_classes == "auto" and voc):
        return VOC_SEGMENTATION_CLASSES
    return None


def _voc_image_dirs(folder: Path) -> list[Path]:
    if folder.name == "JPEGImages":
        return [folder]
    for candidates in ([folder / "JPEGImages"], sorted(folder.glob("*/JPEGImages"))):
        found = [c for c in candidates if c.is_dir()]
        if found:
            return found
    return []


def _is_voc(roots: list[Path]) -> bool:
    return any(r.name == "JPEGImages" for r in roots)


def _voc_ids(year_dir: Path, split: str) -> set[str]:
    path = year_dir / "ImageSets" / (split if "/" in split else f"Main/{split}")
    path = path.with_name(f"{path.name}.txt")
    if not path.is_file():
        raise DomainclustError(f"voc_split={split}: {path} not found; use a split listed there")
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _images_under(root: Path, index: int) -> list[_Image]:
    if root.is_file():
        if not is_image(root):
            raise DomainclustError(f"{root} is not an image file ({root.suffix or 'no suffix'})")
        return [_Image(index, root, "")]
    return [_Image(index, path, rel) for rel, path in walk_files(root) if is_image(path)]


def _labels(
    images: list[_Image], mode: str, *, voc: bool
) -> tuple[Labels | None, list[tuple[str, str]]]:
    """(label, class name) per image path (None: no labels), and CSV rows naming missing files."""
    if mode == "none" or (mode == "auto" and voc):
        return None, []
    if mode in ("auto", "folders"):
        folders = {img.path: str(Path(img.rel).parent.as_posix()) for img in images}
        loose = [img.path for img in images if folders[img.path] == "."]
        if mode == "auto" and (loose or len(set(folders.values())) < 2):
            return None, []
        if loose:
            raise DomainclustError(
                f"labels=folders, but {loose[0]} lies directly in its source folder; move it into "
                "a class folder or use labels=none"
            )
        return number_labels(folders), []
    return _labels_from_csv(images, Path(mode))


def _labels_from_csv(images: list[_Image], csv_path: Path) -> tuple[Labels, list[tuple[str, str]]]:
    if not csv_path.is_file():
        raise DomainclustError(f"labels CSV {csv_path} not found")
    rows: dict[Path, str] = {}
    with csv_path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (line == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DomainclustError(f"{csv_path} line {line}: expected `path,label`, got {row}")
            path = Path(row[0].strip())
            key = (path if path.is_absolute() else csv_path.parent / path).resolve()
            if rows.setdefault(key, row[1].strip()) != row[1].strip():
                raise DomainclustError(f"{csv_path} line {line}: {row[0]} has two labels")
    by_path = {img.path.resolve(): img.path for img in images}
    missing = [(str(p), f"listed in {csv_path.name} but not among the source images")
               for p in rows if p not in by_path]
    return number_labels({by_path[p]: v for p, v in rows.items() if p in by_path}), missing


def _defaults() -> dict[str, Any]:
    return dataclasses.asdict(RgbOptions())


MODALITY = Modality(
    name="rgb",
    description="RGB photographs from image folders (ImageNet/Places class folders, PASCAL VOC, "
                "plain folders), one centre tile per image",
    channels=CHANNELS,
    tile_size=RgbOptions.tile_size,
    recipe="rgb.yaml",
    ingest=functools.partial(run_ingest, RgbAdapter()),
    defaults=_defaults(),
)
