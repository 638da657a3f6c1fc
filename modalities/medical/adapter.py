"""The part of the CT and MR adapters that is the same for both.

`MedicalAdapter` implements the ingest `Adapter` protocol: discovery walks the sources for
DICOM files (grouped into series), NIfTI and NRRD files; `read` turns one item into a volume,
resamples it in-plane, drops background tiles and gathers 2-D tiles or 2.5-D slabs. What differs
between CT and MR (intensity scaling, background, channels) is an `Encoder` the subclass
provides. With `masks=` every tile keeps its mask and a label from it (see `masks.py`).

Per-tile geometry goes to meta arrays: `position` (slice index, row, column of the tile's
top-left pixel, in the resampled slice), `slice_position` (mm along the slice normal),
`spacing` (slice step, row, column in mm) and `volume` (index within a 4-D NIfTI, or among the
stacks of a multi-frame DICOM file).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from domainclust.modalities.medical.dicom import group_series
from domainclust.modalities.medical.dicom_seg import OVERLAP_MODES, load_seg_mask, seg_classes
from domainclust.modalities.medical.masks import (
    UNLABELLED,
    check_grid,
    class_ids,
    pair_items,
    resample_mask,
    tile_labels,
)
from domainclust.modalities.medical.mosaic import load_mosaic
from domainclust.modalities.medical.multiframe import load_multiframe
from domainclust.modalities.medical.nifti import is_nifti, load_nifti
from domainclust.modalities.medical.nrrd import detached_data_files, is_nrrd, load_nrrd
from domainclust.modalities.medical.slices import load_series
from domainclust.modalities.medical.tiles import (
    check_resampled_size,
    gather_tiles,
    pad_to_tile,
    resample_inplane,
    select_tiles,
    slab_indices,
)
from domainclust.modalities.medical.volume import Volume, hashed

from domainclust.data.ingest_item import MaskLayout, Skip, SourceItem, TileBatch
from domainclust.data.salt import installation_salt
from domainclust.data.store import StoreSpec, mask_dtype_for
from domainclust.errors import DomainclustError

# Sidecars that sit next to images (BIDS JSON, notes); not reported as unreadable files.
IGNORED_SUFFIXES = {".json", ".txt", ".tsv", ".csv", ".md", ".bval", ".bvec", ".xml", ".log"}
ENCODE_CHUNK = 512  # tiles converted at a time: bounds the float32 working copy

COMMON_DEFAULTS: dict[str, Any] = {
    "tile_size": 64,  # px, after resampling
    "stride": None,  # px between tile origins; None = tile_size (no overlap)
    "spacing": 1.0,  # target in-plane pixel size in mm; None keeps each series' own
    "slab": 1,  # odd: slices stacked as channels around each centre slice (2.5-D)
    "slice_stride": 1,  # use every n-th slice as a centre slice
    "max_background": 0.5,  # drop tiles whose background fraction is larger
    "irregular": "skip",  # skip | keep: series with irregular slice steps (a gap where slices
    # are missing always splits the volume into runs, and slabs never span it)
    "spacing_tolerance": 0.1,  # relative deviation of a slice step still called regular
    "max_volumes": 1,  # 4-D NIfTI: how many volumes (time points) to use
    "salt": None,  # mixed into the hashed item keys; None: this installation's random salt
    "max_voxels": 1_000_000_000,  # a volume larger than this once resampled and padded (4 GB
    # as float32) is skipped, named, before anything is allocated: a header in metres, a
    # PixelSpacing of 300 or a 2x2x3 000 000 volume asks for tens of GB
    "masks": None,  # a folder of mask volumes and DICOM SEGs, a SEG file or a CSV of
    # image,mask pairs (see masks.py)
    "ignore": None,  # the mask value of unlabelled voxels
    "seg_overlap": "refuse",  # DICOM SEG pixels in segments of two classes: refuse the SEG,
    # give them the higher segment number's class (last) or leave them unlabelled
    "label_fraction": 0.1,  # with masks: a tile is labelled 1 when at least this fraction of
    # its labelled pixels is foreground (mask > 0), else 0
}


@dataclass(frozen=True)
class TileOptions:
    """Validated common ingest options (see COMMON_DEFAULTS for their meaning)."""

    tile_size: int
    stride: int
    spacing: float | None
    slab: int
    slice_stride: int
    max_background: float
    irregular: str
    spacing_tolerance: float
    max_volumes: int
    salt: str
    max_voxels: int
    masks: Path | None
    ignore: int | None
    seg_overlap: str
    label_fraction: float


def _number(options: dict[str, Any], key: str, kind: type, *, minimum: float,
            maximum: float | None = None) -> Any:
    value = options.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        what = "an integer" if kind is int else "a number"
        raise DomainclustError(f"--set {key}={value!r}: expected {what} {bound}")
    return kind(value)


def parse_common(options: dict[str, Any]) -> TileOptions:
    merged = {**COMMON_DEFAULTS, **options}
    tile = _number(merged, "tile_size", int, minimum=32)  # the backbones' minimum
    stride = tile if merged["stride"] is None else _number(merged, "stride", int, minimum=1)
    spacing = None if merged["spacing"] is None else _number(merged, "spacing", float, minimum=1e-3)
    slab = _number(merged, "slab", int, minimum=1)
    if slab % 2 == 0:
        raise DomainclustError(f"--set slab={slab}: the slab must be odd (centre slice ± n)")
    if merged["seg_overlap"] not in OVERLAP_MODES:
        raise DomainclustError(f"--set seg_overlap={merged['seg_overlap']!r}: use "
                               f"{', '.join(OVERLAP_MODES)}")
    if merged["irregular"] not in ("skip", "keep"):
        raise DomainclustError(f"--set irregular={merged['irregular']!r}: use skip or keep")
    return TileOptions(
        tile_size=tile, stride=stride, spacing=spacing, slab=slab,
        slice_stride=_number(merged, "slice_stride", int, minimum=1),
        max_background=_number(merged, "max_background", float, minimum=0.0, maximum=1.0),
        irregular=merged["irregular"],
        spacing_tolerance=_number(merged, "spacing_tolerance", float, minimum=0.0),
        max_volumes=_number(merged, "max_volumes", int, minimum=1),
        salt=installation_salt() if merged["salt"] in (None, "") else str(merged["salt"]),
        max_voxels=_number(merged, "max_voxels", int, minimum=1),
        masks=None if merged["masks"] in (None, "") else Path(str(merged["masks"])),
        ignore=None if merged["ignore"] is None else _number(merged, "ignore", int,
                                                               minimum=-2**31),
        seg_overlap=merged["seg_overlap"],
        label_fraction=_number(merged, "label_fraction", float, minimum=0.0, maximum=1.0),
    )


class Encoder(Protocol):
    """Intensity handling of one volume, fitted to it."""

    fill: float  # value padding takes (it also counts as background)

    def background(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of background voxels (air, padding outside the body)."""

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """(n, slab, t, t) float32 → (n, channels, t, t) uint8."""


def expand_sources(sources: list[Path]) -> list[tuple[Path, list[Path]]]:
    """Each source with the files it holds (a file is its own source), sorted."""
    out = []
    for source in sources:
        if not source.exists():
            raise DomainclustError(f"source {source} does not exist")
        if source.is_file():
            out.append((source.parent, [source]))
            continue
        files = sorted(
            p for p in source.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
            and p.suffix.lower() not in IGNORED_SUFFIXES
        )
        out.append((source, files))
    return out


def _limit_threads_in_worker() -> None:
    # Reader processes each get a core; torch's default thread pool would oversubscribe them.
    if multiprocessing.parent_process() is not None and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


class MedicalAdapter:
    """Common discover/spec/read; subclasses set the class attributes and the encoder."""

    name: str = ""
    dicom_modality: str = ""  # the DICOM Modality this adapter accepts
    hounsfield: bool = False  # apply the modality LUT (HU) to every slice
    # The salt changes item keys, not tiles, and stays secret; `masks` is a path, which the
    # store never holds: a paired item's key hashes its mask's path, and the store's mask
    # settings record whether there are masks.
    untracked_options = ("salt", "masks")

    def key_salt(self, options: dict[str, Any]) -> str:
        """The salt of the item keys (the store records only its id)."""
        return parse_common(options).salt

    # -- what a subclass provides -------------------------------------------------------
    def parse(self, options: dict[str, Any]) -> Any:
        raise NotImplementedError

    def slice_channels(self, opts: Any) -> tuple[str, ...]:
        raise NotImplementedError

    def scale_offset(self, opts: Any) -> tuple[float, float]:
        raise NotImplementedError

    def encoder(self, volume: Volume, values: np.ndarray, opts: Any) -> Encoder:
        raise NotImplementedError

    # -- Adapter protocol ----------------------------------------------------------------
    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]:
        opts = self.parse(options)
        found = expand_sources([Path(s) for s in sources])
        if not any(files for _, files in found):
            return []  # the engine reports the empty sources by name
        items: list[SourceItem] = []
        paths: dict[Path, Path] = {}  # resolved → as given (reports show the latter)
        for root, files in found:
            if not files:
                items.append(SourceItem(
                    key=f"empty-{hashed(opts.salt, str(root.resolve()))}", paths=[root],
                    info={"skip": "is an empty folder"}))
            for path in files:
                paths.setdefault(path.resolve(), path)
        for path in (p for p in paths.values() if is_nifti(p) or is_nrrd(p)):
            kind = "nifti" if is_nifti(path) else "nrrd"
            items.append(SourceItem(key=f"{kind}-{hashed(opts.salt, str(path.resolve()))}",
                                    paths=[path], info={"kind": kind}))
        detached = {d for p in paths.values() for d in detached_data_files(p)}  # .nhdr data
        # Series are grouped across all sources: one series may be given file by file.
        items += group_series([p for p in paths.values() if not (is_nifti(p) or is_nrrd(p))
                               and p.resolve() not in detached],
                              expected=self.dicom_modality, adapter=self.name, salt=opts.salt)
        if opts.masks is not None:
            items = pair_items(items, masks=opts.masks, salt=opts.salt)
        unique = {item.key: item for item in items}  # e.g. one empty folder given twice
        return sorted(unique.values(), key=lambda item: item.key)

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec:
        opts = self.parse(options)
        channels = self.channel_names(opts)
        scale, offset = self.scale_offset(opts)
        public = {k: v for k, v in asdict(opts).items() if k != "salt"}
        public["masks"] = opts.masks is not None  # the store holds no path
        return StoreSpec(
            modality=self.name, channels=channels, tile_size=opts.tile_size, dtype="uint8",
            scale=(scale,) * len(channels), offset=(offset,) * len(channels),
            provenance={
                "adapter": self.name,
                "options": _jsonable(public),
                "versions": {p: _version(p) for p in ("pydicom", "nibabel", "monai")},
                "meta": {
                    "position": "(slice index, row, column) of the tile origin, resampled pixels",
                    "slice_position": "mm along the slice normal",
                    "spacing": "(slice step, row, column) in mm after resampling",
                    "volume": "volume index within a 4-D NIfTI or a multi-frame DICOM file "
                              "(0 otherwise)",
                },
                **({"labels": f"1 when at least {opts.label_fraction:g} of the tile's labelled "
                              "mask pixels are foreground (> 0), 0 otherwise, -1 with none"}
                   if opts.masks is not None else {}),
            },
        )

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool:
        return self.parse(options).masks is not None  # each tile's label from its mask

    def mask_layout(self, items: list[SourceItem], options: dict[str, Any]) -> MaskLayout | None:
        if self.parse(options).masks is None:
            return None
        classes = seg_classes(items)  # DICOM SEGs name their classes; label volumes do not
        return MaskLayout(dtype="int16" if classes is None else mask_dtype_for(len(classes)),
                          classes=classes)

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch:
        if "skip" in item.info:
            raise Skip(item.info["skip"])
        _limit_threads_in_worker()
        opts = self.parse(options)
        common = {"hounsfield": self.hounsfield, "tolerance": opts.spacing_tolerance,
                  "irregular": opts.irregular}
        kind = item.info["kind"]
        dropped: list[tuple[int, str]] = []
        mask = None
        if kind in ("nifti", "nrrd"):
            load = load_nifti if kind == "nifti" else load_nrrd
            volumes = load(item.paths[0], max_volumes=opts.max_volumes)
            if item.info.get("mask"):
                mask = self.load_mask(item.paths[1], image=volumes[0], opts=opts)
        elif kind == "dicom-frames":
            volumes, dropped = load_multiframe(item.paths[0], **common)
        elif kind == "dicom-mosaic":
            volumes = [load_mosaic(item.paths[0], **common)]
        else:
            series = item.paths[:-1] if item.info.get("mask") else item.paths
            volume, dropped = load_series(series, **common)
            volumes = [volume]
        try:
            if kind == "dicom-series" and item.info.get("mask"):
                mask = load_seg_mask(item.paths[-1], series=series, dropped=dropped,
                                     volume=volume, segments=item.info["segments"],
                                     overlap=opts.seg_overlap)
            parts = [self.tile_volume(v, opts, volume_index=i, mask=mask)
                     for i, v in enumerate(volumes)]
        except Skip as exc:
            raise Skip(str(exc), files=dropped) from None
        batch = _concat(parts)
        batch.skipped_files = dropped
        return batch

    # -- shared steps ------------------------------------------------------------------------
    def channel_names(self, opts: Any) -> tuple[str, ...]:
        per_slice = self.slice_channels(opts)
        if opts.slab == 1:
            return per_slice
        offsets = range(-(opts.slab // 2), opts.slab // 2 + 1)
        return tuple(f"{c}_z{o:+d}" for c in per_slice for o in offsets)

    @staticmethod
    def load_mask(path: Path, *, image: Volume, opts: Any) -> np.ndarray:
        """The class ids of the mask at `path` on `image`'s (reoriented) grid, -1 unlabelled."""
        load = load_nifti if is_nifti(path) else load_nrrd
        if not path.is_file():
            raise Skip("mask: the file does not exist")
        try:
            mask = load(path, max_volumes=1)[0]
        except Skip as exc:
            raise Skip(f"mask: {exc}") from None
        check_grid(image, mask)
        return class_ids(mask, ignore=opts.ignore)

    def tile_volume(self, volume: Volume, opts: Any, *, volume_index: int,
                    mask: np.ndarray | None = None) -> TileBatch:
        """Resample, fit the intensity encoder, drop background tiles, gather and encode; with
        a `mask` (class ids on the volume's grid) also its tiles and their labels."""
        check_resampled_size(volume.values.shape, spacing_yx=volume.spacing[1:],
                             target=opts.spacing, tile=opts.tile_size, limit=opts.max_voxels)
        values, (sy, sx) = resample_inplane(volume.values, spacing_yx=volume.spacing[1:],
                                            target=opts.spacing)
        encoder = self.encoder(volume, values, opts)
        background = encoder.background(values)
        if mask is not None:  # nearest neighbour onto the resampled grid, padded unlabelled
            mask = resample_mask(mask, shape=values.shape[1:])
            mask, _ = pad_to_tile(mask, background, tile=opts.tile_size, fill=UNLABELLED)
        values, background = pad_to_tile(values, background, tile=opts.tile_size,
                                          fill=encoder.fill)
        n_slices = len(values)
        runs = volume.runs or [(0, n_slices)]
        centres = np.concatenate([np.arange(a, b, opts.slice_stride) for a, b in runs])
        chosen = select_tiles(background, centres=centres, tile=opts.tile_size,
                              stride=opts.stride, max_background=opts.max_background)
        slabs = slab_indices(chosen.z, slab=opts.slab, n_slices=n_slices, runs=runs)
        n, t = len(chosen.z), opts.tile_size
        tiles = np.empty((n, len(self.channel_names(opts)), t, t), dtype=np.uint8)
        for start in range(0, n, ENCODE_CHUNK):
            part = slice(start, start + ENCODE_CHUNK)
            raw = gather_tiles(values, slabs=slabs[part], y=chosen.y[part], x=chosen.x[part],
                               tile=t)
            tiles[part] = encoder.encode(raw)
        meta = {
            "position": np.stack([chosen.z, chosen.y, chosen.x], axis=1).astype(np.int32),
            "slice_position": volume.slice_positions[chosen.z].astype(np.float32),
            "spacing": np.tile(np.float32([volume.spacing[0], sy, sx]), (n, 1)),
            "volume": np.full(n, volume_index, dtype=np.int16),
        }
        if mask is None:
            return TileBatch(tiles=tiles, meta=meta, skipped_tiles=chosen.dropped)
        masks = gather_tiles(mask, slabs=chosen.z[:, None], y=chosen.y, x=chosen.x,
                             tile=t)[:, 0].astype(np.int16)
        return TileBatch(tiles=tiles, meta=meta, skipped_tiles=chosen.dropped, masks=masks,
                         labels=tile_labels(masks, fraction=opts.label_fraction))


def _concat(parts: list[TileBatch]) -> TileBatch:
    if len(parts) == 1:
        return parts[0]
    masked = parts[0].masks is not None
    return TileBatch(
        tiles=np.concatenate([p.tiles for p in parts]),
        masks=np.concatenate([p.masks for p in parts]) if masked else None,
        labels=np.concatenate([p.labels for p in parts]) if masked else None,
        meta={k: np.concatenate([p.meta[k] for p in parts]) for k in parts[0].meta},
        skipped_tiles=sum(p.skipped_tiles for p in parts),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
