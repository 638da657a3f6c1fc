"""The `rgbd` adapter: RGB images paired with depth (or disparity) maps → 5-channel tiles.

Pairing rules (every source is a folder or a pairs CSV):

1. A pairs CSV (`*.csv` given as a source): rows `rgb,depth[,label]`, optional header, paths
   relative to the CSV's folder.
2. Split folders: any folder holding an RGB folder (`rgb/`, `color/`, `colour/`, `image/`,
   `images/`) next to a depth folder (`depth/`, `disparity/`) pairs files with the same path
   below them, extension aside: `scene/rgb/0001.jpg` ↔ `scene/depth/0001.png`.
3. Elsewhere, side by side: `<stem>.<image>` ↔ `<stem>_depth.<png|tif|npy|npz>` in one folder
   (the suffix is the `depth_suffix` option).

Files without a partner, with two partners, or missing from a CSV are skipped and listed in the
ingest report; pairs whose RGB and depth sizes differ are skipped (they must be pixel-aligned).

Depth: 16-bit PNG/TIFF, float TIFF, `.npy`, or `.npz` (one array, or one named depth/disparity).
`depth_kind=depth` reads metres as `value × depth_scale`; `depth_scale=auto` means millimetres
for integer maps (× 0.001) and metres for float maps. `depth_kind=disparity` converts pixels of
disparity to metres with `depth = stereo_focal_px × stereo_baseline_m / (d + stereo_doffs_px)`;
`depth_kind=disparity-normalised` keeps disparity divided by the map's width (no calibration;
the channel is then named `disparity`). Depth that is 0, negative, NaN, inf (or beyond
`max_depth_m`) is invalid: the depth channel holds 0 there and a 5th channel `depth_valid` holds
the fraction of valid source pixels behind each tile pixel (1 = all valid). Depth is resized by
normalised convolution (valid pixels only), so invalid pixels never drag depths towards 0.
Tiles are float16: RGB as 0..255 (read × 1/255), depth in metres, validity in 0..1. RGB is
read as stored (no EXIF rotation, which would misalign it with depth); large JPEGs are decoded
at reduced scale, as in the `rgb` adapter.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainclust.modalities.images.decode import (
    IMAGE_EXTENSIONS,
    UnreadableFile,
    decode_rgb,
    is_image,
    resize_plane,
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
from PIL import Image

from domainclust.data.ingest import run_ingest
from domainclust.data.ingest_item import SourceItem, TileBatch
from domainclust.data.modality import Modality
from domainclust.data.store import StoreSpec
from domainclust.errors import DomainclustError

RGB_DIRS = ("rgb", "color", "colour", "image", "images")
DEPTH_DIRS = ("depth", "disparity")
DEPTH_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".npz")
DEPTH_KINDS = ("depth", "disparity", "disparity-normalised")
FLOAT16_SAFE = 60000.0  # larger values would overflow the float16 store
MIN_VALID_WEIGHT = 1e-3


@dataclass(frozen=True)
class RgbdOptions:
    """Ingest options (`--set key=value`)."""

    tile_size: int = 64  # tile side in pixels
    depth_kind: str = "depth"  # depth | disparity | disparity-normalised
    depth_scale: float | str = "auto"  # file units → metres (disparity: → pixels); auto: see above
    stereo_focal_px: float | None = None  # disparity → depth: focal length in pixels of the map
    stereo_baseline_m: float | None = None  # disparity → depth: stereo baseline in metres
    stereo_doffs_px: float = 0.0  # disparity → depth: principal-point offset (Middlebury doffs)
    max_depth_m: float | None = None  # deeper is invalid (sensor range)
    depth_suffix: str = "_depth"  # side-by-side pairing: <stem>.jpg ↔ <stem><suffix>.png
    group_size: int = 32  # pairs per work item

    def __post_init__(self) -> None:
        positive(self.tile_size, "rgbd option tile_size")
        positive(self.group_size, "rgbd option group_size")
        if self.depth_kind not in DEPTH_KINDS:
            raise DomainclustError(
                f"rgbd option depth_kind: expected one of {', '.join(DEPTH_KINDS)}, "
                f"got {self.depth_kind!r}"
            )
        if self.depth_scale != "auto" and not (
            isinstance(self.depth_scale, float) and self.depth_scale > 0
        ):
            raise DomainclustError(
                f"rgbd option depth_scale: expected auto or a positive number, "
                f"got {self.depth_scale!r}"
            )
        if self.depth_kind == "disparity" and not (
            self.stereo_focal_px and self.stereo_baseline_m
        ):
            raise DomainclustError(
                "depth_kind=disparity converts disparity to metres and needs the calibration: "
                "--set stereo_focal_px=... --set stereo_baseline_m=... (and stereo_doffs_px "
                "for Middlebury); without one use depth_kind=disparity-normalised"
            )
        if not self.depth_suffix:
            raise DomainclustError("rgbd option depth_suffix must not be empty")

    @property
    def channels(self) -> tuple[str, ...]:
        third = "disparity" if self.depth_kind == "disparity-normalised" else "depth"
        return ("red", "green", "blue", third, "depth_valid")


@dataclass
class _Found:
    """Pairs and report-only problems found in the sources."""

    entries: list[Entry] = dataclasses.field(default_factory=list)
    labels: dict[int, str] = dataclasses.field(default_factory=dict)  # entry index → label
    problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    depth_dirs: set[str] = dataclasses.field(default_factory=set)
    names: set[str] = dataclasses.field(default_factory=set)  # CSV rows seen

    def pair(self, name: str, rgb: Path, depth: Path, label: str | None = None) -> None:
        if label is not None:
            self.labels[len(self.entries)] = label
        self.entries.append(Entry(name=name, paths=(rgb, depth)))


class RgbdAdapter:
    """Adapter for RGB/depth pairs; stateless, so it pickles into spawned workers."""

    untracked_options = ("group_size",)  # how pairs are batched into work items, not tiles

    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]:
        opts = parse_options(RgbdOptions, options, modality="rgbd")
        found = _Found()
        sources = list(dict.fromkeys(Path(s) for s in sources))  # a source given twice counts once
        for source, tag in zip(sources, root_names(sources), strict=True):
            if source.is_file() and source.suffix.lower() == ".csv":
                _pairs_from_csv(source, tag, found)
            elif source.is_dir():
                _pairs_in_tree(source, tag, opts.depth_suffix, found)
            else:
                raise DomainclustError(
                    f"{source} " + ("does not exist" if not source.exists() else
                                    "is neither a folder nor a pairs CSV (rgb,depth rows)")
                )
        if "disparity" in found.depth_dirs and opts.depth_kind == "depth":
            raise DomainclustError(
                "found disparity/ folders but depth_kind=depth; set depth_kind=disparity (with "
                "stereo_focal_px and stereo_baseline_m) or depth_kind=disparity-normalised"
            )
        if not found.entries and not found.problems:
            raise DomainclustError(
                f"no RGB/depth pairs in {', '.join(map(str, sources)) or '(no sources given)'}: "
                "use rgb/ + depth/ folders, <stem>.jpg + <stem>_depth.png, or a pairs CSV"
            )
        entries = _with_labels(found)
        items = group_entries(entries, group_size=opts.group_size)
        return items + [skipped_item(name, reason) for name, reason in found.problems]

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool:
        return any(item.info.get("labels") is not None for item in items)

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec:
        opts = parse_options(RgbdOptions, options, modality="rgbd")
        provenance: dict[str, Any] = {
            "adapter": "rgbd", "tile": "shorter side scaled to tile_size, centre square, bilinear",
            **{k: v for k, v in dataclasses.asdict(opts).items() if k not in ("group_size",)},
            "invalid_depth": "0 in the depth channel; depth_valid = fraction of valid pixels",
        }
        if (classes := class_names(items)) is not None:
            provenance["classes"] = classes
        return StoreSpec(modality="rgbd", channels=opts.channels, tile_size=opts.tile_size,
                         dtype="float16", scale=(1 / 255,) * 3 + (1.0, 1.0),
                         offset=(0.0,) * 5, provenance=provenance)

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch:
        opts = parse_options(RgbdOptions, options, modality="rgbd")
        size = opts.tile_size
        tiles, kept, failed = [], [], []
        meta: dict[str, list[Any]] = {"position": [], "image_size": [], "item_index": []}
        for i, _, (rgb_path, depth_path) in entries_of(item):
            try:
                image = decode_rgb(rgb_path, reduce_for=size, exif=False)
            except UnreadableFile as exc:
                failed.append((2 * i, str(exc)))  # the pair's RGB file in item.paths
                continue
            try:
                depth, valid = depth_in_units(load_depth(depth_path), opts)
            except UnreadableFile as exc:
                failed.append((2 * i + 1, str(exc)))  # its depth map, named as the culprit
                continue
            if depth.shape[::-1] != image.full_size:  # the pair's fault: named by its RGB
                w, h = image.full_size
                failed.append((2 * i, f"RGB is {w}x{h} px but its depth map is "
                                      f"{depth.shape[1]}x{depth.shape[0]} px; pairs must be "
                                      "pixel-aligned"))
                continue
            rgb, box = square_tile(image, size)
            weight = resize_plane(valid.astype(np.float32), size)
            summed = resize_plane(np.where(valid, depth, 0.0), size)
            depth_tile = np.where(weight > MIN_VALID_WEIGHT,
                                  summed / np.maximum(weight, MIN_VALID_WEIGHT), 0.0)
            tiles.append(np.concatenate([rgb.astype(np.float32), depth_tile[None],
                                         np.clip(weight, 0.0, 1.0)[None]]))
            kept.append(i)
            meta["position"].append(box)
            meta["image_size"].append(image.full_size)
            meta["item_index"].append(i)
        arrays = {"position": np.asarray(meta["position"], np.float32).reshape(-1, 4),
                  "image_size": np.asarray(meta["image_size"], np.int32).reshape(-1, 2),
                  "item_index": np.asarray(meta["item_index"], np.int32)}
        return finish_batch(item, options, tiles=tiles, kept=kept, meta=arrays, failed=failed,
                            dtype="float16")


def load_depth(path: Path) -> np.ndarray:
    """A depth/disparity file as a 2-D array of its stored values (no scaling)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                keys = arrays.files
                named = [k for k in keys if k.lower() in ("depth", "disparity", "disp")]
                if len(keys) != 1 and len(named) != 1:
                    raise UnreadableFile(
                        f"{path.name} holds arrays {', '.join(keys) or '(none)'}; expected one "
                        "array, or one named depth or disparity"
                    )
                array = arrays[keys[0] if len(keys) == 1 else named[0]]
        else:
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("I", "F", "L") and not im.mode.startswith("I;16"):
                    raise UnreadableFile(
                        f"depth map {path.name} is a {im.mode} image; expected one channel "
                        "(16-bit or float), not a colour visualisation"
                    )
                array = np.asarray(im)
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure makes the pair unusable
        raise UnreadableFile(f"cannot read depth map {path.name} ({type(exc).__name__}: {exc})"
                             ) from None
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2 or array.dtype.kind not in "iuf":
        raise UnreadableFile(
            f"depth map {path.name} has shape {array.shape} and dtype {array.dtype}; expected a "
            "2-D integer or float array"
        )
    return array


def depth_in_units(raw: np.ndarray, opts: RgbdOptions) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid): metres (or normalised disparity), float64, 0 where invalid."""
    values = raw.astype(np.float64) * _scale(raw.dtype, opts)
    valid = np.isfinite(values) & (values > 0)
    values = np.where(valid, values, 0.0)
    if opts.depth_kind == "disparity":  # RgbdOptions checked that the calibration is given
        focal_times_baseline = float(opts.stereo_focal_px or 0) * float(opts.stereo_baseline_m or 0)
        shifted = values + opts.stereo_doffs_px
        valid &= shifted > 0
        values = np.where(valid, focal_times_baseline / np.where(valid, shifted, 1.0), 0.0)
    elif opts.depth_kind == "disparity-normalised":
        values = values / raw.shape[1]
    if opts.max_depth_m is not None and opts.depth_kind != "disparity-normalised":
        valid &= values <= opts.max_depth_m
    valid &= values <= FLOAT16_SAFE
    return np.where(valid, values, 0.0), valid


def _scale(dtype: np.dtype, opts: RgbdOptions) -> float:
    if opts.depth_scale != "auto":
        return float(opts.depth_scale)
    if dtype.kind == "f":
        return 1.0
    if opts.depth_kind != "depth":
        raise UnreadableFile(
            "integer disparity map with depth_scale=auto; set depth_scale to pixels per stored "
            "unit (KITTI: 0.00390625)"
        )
    if dtype.itemsize < 2:
        raise UnreadableFile("8-bit depth map: its unit is unknown; set depth_scale (metres per "
                             "unit) if it really is depth")
    return 0.001  # 16-bit depth PNGs (Kinect, NYU, ScanNet) hold millimetres


def _with_labels(found: _Found) -> list[Entry]:
    if not found.labels:
        return found.entries
    if len(found.labels) != len(found.entries):
        raise DomainclustError(
            f"{len(found.labels)} of {len(found.entries)} pairs have labels; give a label column "
            "for every pair (pairs CSV) or for none"
        )
    numbered = number_labels(found.labels)
    return [dataclasses.replace(e, label=numbered[i][0], label_name=numbered[i][1])
            for i, e in enumerate(found.entries)]


def _pairs_from_csv(path: Path, tag: str, found: _Found) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or (line == 1 and [c.lower() for c in cells[:2]] == ["rgb", "depth"]):
                continue
            if len(cells) not in (2, 3) or not all(cells):
                raise DomainclustError(
                    f"{path} line {line}: expected `rgb,depth` or `rgb,depth,label`, got {row}"
                )
            rgb, depth = (path.parent / cells[0], path.parent / cells[1])
            name = f"{tag}/{cells[0]}"
            if name in found.names:
                raise DomainclustError(f"{path} line {line}: {cells[0]} is listed twice")
            found.names.add(name)
            missing = [p for p in (rgb, depth) if not p.is_file()]
            if missing:
                found.problems.append((name, f"{missing[0]} not found ({path.name} line {line})"))
            else:
                found.pair(name, rgb, depth, cells[2] if len(cells) == 3 else None)


def _pairs_in_tree(root: Path, tag: str, suffix: str, found: _Found) -> None:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        rgb_dir = next((d for d in dirs if d.lower() in RGB_DIRS), None)
        depth_dir = next((d for d in dirs if d.lower() in DEPTH_DIRS), None)
        if rgb_dir and depth_dir:
            found.depth_dirs.add(depth_dir.lower())
            _pair_split(here / rgb_dir, here / depth_dir, root, tag, found)
            dirs.remove(rgb_dir)
            dirs.remove(depth_dir)
        _pair_side_by_side(here, sorted(f for f in files if not f.startswith(".")), root, tag,
                           suffix, found)


def _pair_split(rgb_dir: Path, depth_dir: Path, root: Path, tag: str, found: _Found) -> None:
    def stems(folder: Path, keep: Callable[[Path], bool]) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for rel, path in walk_files(folder):
            if keep(path):
                out.setdefault(rel[: len(rel) - len(path.suffix)], []).append(path)
        return out

    rgbs = stems(rgb_dir, is_image)
    depths = stems(depth_dir, lambda p: p.suffix.lower() in DEPTH_EXTENSIONS)
    for stem in sorted(set(rgbs) | set(depths)):
        _match(rgbs.get(stem, []), depths.get(stem, []), root, tag, found,
               no_depth=f"no depth map {depth_dir.name}/{stem}.(png|tif|npy|npz)",
               no_rgb=f"no RGB image {rgb_dir.name}/{stem}.(jpg|png|...)")


def _pair_side_by_side(
    folder: Path, files: list[str], root: Path, tag: str, suffix: str, found: _Found
) -> None:
    rgbs: dict[str, list[Path]] = {}
    depths: dict[str, list[Path]] = {}
    for name in files:
        path = folder / name
        stem, ext = path.stem, path.suffix.lower()
        if stem.endswith(suffix) and ext in DEPTH_EXTENSIONS:
            depths.setdefault(stem[: -len(suffix)], []).append(path)
        elif ext in IMAGE_EXTENSIONS:
            rgbs.setdefault(stem, []).append(path)
        elif ext in (".npy", ".npz"):
            found.problems.append((_name(path, root, tag),
                                   f"array without the {suffix} suffix; not paired with an image"))
    for stem in sorted(set(rgbs) | set(depths)):
        _match(rgbs.get(stem, []), depths.get(stem, []), root, tag, found,
               no_depth=f"no depth map {stem}{suffix}.(png|tif|npy|npz) next to it",
               no_rgb=f"no RGB image {stem}.(jpg|png|...) next to it")


def _match(
    rgbs: list[Path], depths: list[Path], root: Path, tag: str, found: _Found, *,
    no_depth: str, no_rgb: str,
) -> None:
    if len(rgbs) == 1 and len(depths) == 1:
        found.pair(_name(rgbs[0], root, tag), rgbs[0], depths[0])
    elif not depths:
        found.problems += [(_name(p, root, tag), no_depth) for p in rgbs]
    elif not rgbs:
        found.problems += [(_name(p, root, tag), no_rgb) for p in depths]
    else:
        names = ", ".join(p.name for p in rgbs + depths)
        found.problems += [(_name(p, root, tag), f"ambiguous pair ({names}); keep one of each")
                           for p in rgbs]


def _name(path: Path, root: Path, tag: str) -> str:
    return f"{tag}/{path.relative_to(root).as_posix()}"


MODALITY = Modality(
    name="rgbd",
    description="RGB images paired with depth or disparity maps (rgb/ + depth/ folders, "
                "<stem>_depth files, or a pairs CSV); depth in metres plus a validity channel",
    channels=RgbdOptions().channels,
    tile_size=RgbdOptions.tile_size,
    recipe="rgbd.yaml",
    ingest=functools.partial(run_ingest, RgbdAdapter()),
    raw_channels=("depth", "depth_valid"),
    defaults=dataclasses.asdict(RgbdOptions()),
)
