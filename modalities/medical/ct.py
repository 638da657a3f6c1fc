"""The `ct` modality: CT series (DICOM, NIfTI or NRRD) → HU-windowed tiles.

Slices are read in Hounsfield units (DICOM: RescaleSlope/Intercept through pydicom's modality
LUT; NIfTI/NRRD: the stored values, checked to look like HU). Each HU window (width/level) becomes
one channel through MONAI's `ScaleIntensityRange`, stored as uint8 with scale 1/255 so the
float tiles lie in [0, 1]. Defaults: soft tissue W400/L40, lung W1500/L-600, bone W1800/L400.
Air (below `background_hu`) and padding are background; tiles with more than `max_background`
of it are dropped. With `slab=n` (odd) every window holds n neighbouring slices (2.5-D),
channel names `<window>_z-1`, `<window>_z+0`, ...; the default is single slices (2-D).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from domainclust.modalities.medical.adapter import (
    COMMON_DEFAULTS,
    MedicalAdapter,
    TileOptions,
    parse_common,
)
from domainclust.modalities.medical.volume import Volume

from domainclust.data.ingest import run_ingest
from domainclust.data.ingest_item import Skip
from domainclust.data.modality import Modality
from domainclust.errors import DomainclustError

AIR_HU = -1024.0
DEFAULT_WINDOWS: dict[str, list[float]] = {
    "soft_tissue": [400, 40],  # [width, level] in HU
    "lung": [1500, -600],
    "bone": [1800, 400],
}
CT_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "windows": DEFAULT_WINDOWS,  # channel name: [width, level] in HU, in channel order
    "background_hu": -950.0,  # voxels below this are air (lung parenchyma is above it)
    "hu_check": True,  # NIfTI: refuse volumes whose values do not look like HU
}


@dataclass(frozen=True)
class Window:
    name: str
    width: float
    level: float


@dataclass(frozen=True)
class CTOptions(TileOptions):
    windows: tuple[Window, ...]
    background_hu: float
    hu_check: bool


def parse_windows(value: Any) -> tuple[Window, ...]:
    if not isinstance(value, dict) or not value:
        raise DomainclustError("--set windows: expected a mapping name: [width, level], e.g. "
                               "windows='{brain: [80, 40], bone: [1800, 400]}'")
    windows = []
    for name, pair in value.items():
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        if not ok or pair[0] <= 0:
            raise DomainclustError(f"--set windows: '{name}' must be [width > 0, level] in HU, "
                                   f"got {pair!r}")
        windows.append(Window(str(name), float(pair[0]), float(pair[1])))
    return tuple(windows)


class HUEncoder:
    """HU → one uint8 channel per window (0 at the window's bottom, 255 at its top)."""

    fill = AIR_HU

    def __init__(self, *, windows: tuple[Window, ...], background_hu: float) -> None:
        from monai.transforms import ScaleIntensityRange  # lazy: importing it costs ~4 s

        self.background_hu = background_hu
        self.transforms = [
            ScaleIntensityRange(a_min=w.level - w.width / 2, a_max=w.level + w.width / 2,
                                b_min=0.0, b_max=255.0, clip=True)
            for w in windows
        ]

    def background(self, values: np.ndarray) -> np.ndarray:
        return values < self.background_hu

    def encode(self, raw: np.ndarray) -> np.ndarray:
        n, slab, t, _ = raw.shape
        out = np.empty((n, len(self.transforms), slab, t, t), dtype=np.uint8)
        hu = torch.from_numpy(np.ascontiguousarray(raw))
        for i, window in enumerate(self.transforms):
            out[:, i] = np.rint(np.asarray(window(hu)))
        return out.reshape(n, len(self.transforms) * slab, t, t)


class CTAdapter(MedicalAdapter):
    name = "ct"
    dicom_modality = "CT"
    hounsfield = True

    def parse(self, options: dict[str, Any]) -> CTOptions:
        merged = {**CT_DEFAULTS, **options}
        common = parse_common({k: merged[k] for k in COMMON_DEFAULTS})
        background = merged["background_hu"]
        if not isinstance(background, (int, float)) or isinstance(background, bool):
            raise DomainclustError(f"--set background_hu={background!r}: expected a number (HU)")
        if not isinstance(merged["hu_check"], bool):
            raise DomainclustError("--set hu_check: use true or false")
        return CTOptions(**vars(common), windows=parse_windows(merged["windows"]),
                         background_hu=float(background), hu_check=merged["hu_check"])

    def slice_channels(self, opts: CTOptions) -> tuple[str, ...]:
        return tuple(w.name for w in opts.windows)

    def scale_offset(self, opts: CTOptions) -> tuple[float, float]:
        return 1.0 / 255.0, 0.0

    def encoder(self, volume: Volume, values: np.ndarray, opts: CTOptions) -> HUEncoder:
        if volume.source in ("nifti", "nrrd") and opts.hu_check:
            check_hounsfield(values)
        return HUEncoder(windows=opts.windows, background_hu=opts.background_hu)


def check_hounsfield(values: np.ndarray) -> None:
    """NIfTI and NRRD carry no modality: a CT in HU has air near -1000 HU, raw or MR data does
    not."""
    sample = values.ravel()[:: max(1, values.size // 1_000_000)]
    low = float(np.percentile(sample, 0.5))
    if low > -500.0:
        raise Skip(f"values do not look like Hounsfield units (0.5th percentile {low:.0f}, "
                   "no air below -500 HU); is it an MR or unscaled data? For a cropped CT "
                   "already in HU set hu_check=false")


ADAPTER = CTAdapter()

MODALITY = Modality(
    name="ct",
    description="CT series (DICOM by SeriesInstanceUID, NIfTI or NRRD) as HU-windowed 2-D/2.5-D "
                "tiles",
    channels=tuple(DEFAULT_WINDOWS),
    tile_size=CT_DEFAULTS["tile_size"],
    recipe="ct.yaml",
    ingest=functools.partial(run_ingest, ADAPTER),
    defaults=CT_DEFAULTS,
)
