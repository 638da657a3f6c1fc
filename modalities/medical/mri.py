"""The `mri` modality: MR series (DICOM, NIfTI or NRRD) → per-volume normalised tiles.

MR intensities have no physical unit, so each volume is normalised on its own:
`normalize=zscore` (default; the robust z-score of DESIGN.md: median and IQR of the foreground,
clipped to ±`zscore_clip` and stored as uint8 with scale/offset giving floats in
[-clip, clip]) or `normalize=percentile` (the `percentiles` of the volume map to [0, 1]).
Both go through MONAI's `ScaleIntensityRange`. Background is everything at or below
`background_level` of the way from the low to the high percentile (air, padding); tiles with
more than `max_background` of it are dropped. `slab=n` (odd) stacks n neighbouring slices as
channels (2.5-D); the default is single slices (2-D), channel `mr`.
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

IQR_TO_SD = 1.349  # IQR of a normal distribution in standard deviations
SAMPLE_VOXELS = 1_000_000  # statistics from a strided sample: percentiles of 10^8 voxels are slow
MR_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "normalize": "zscore",  # zscore (robust, foreground median/IQR) | percentile
    "percentiles": [0.5, 99.5],  # low/high percentiles of the volume
    "zscore_clip": 5.0,  # z-scores are clipped to ± this before storage
    "background_level": 0.05,  # fraction of the low→high percentile range that is background
}


@dataclass(frozen=True)
class MROptions(TileOptions):
    normalize: str
    percentiles: tuple[float, float]
    zscore_clip: float
    background_level: float


class MREncoder:
    """Volume statistics fitted once, then applied to every tile of the volume."""

    def __init__(self, values: np.ndarray, *, opts: MROptions) -> None:
        from monai.transforms import ScaleIntensityRange  # lazy: importing it costs ~4 s

        sample = values.ravel()[:: max(1, values.size // SAMPLE_VOXELS)]
        low, high = (float(v) for v in np.percentile(sample, opts.percentiles))
        if not high > low:
            raise Skip(f"the volume is blank (constant intensity {low:g})")
        self.threshold = low + opts.background_level * (high - low)
        self.fill = float(sample.min())
        if opts.normalize == "percentile":
            a_min, a_max = low, high
        else:
            foreground = sample[sample > self.threshold]
            if len(foreground) < 2:
                raise Skip("no foreground above the background level")
            q25, median, q75 = np.percentile(foreground, [25, 50, 75])
            sd = float(q75 - q25) / IQR_TO_SD or float(foreground.std()) or 1.0
            a_min = float(median) - opts.zscore_clip * sd
            a_max = float(median) + opts.zscore_clip * sd
        self.transform = ScaleIntensityRange(a_min=a_min, a_max=a_max, b_min=0.0, b_max=255.0,
                                             clip=True)

    def background(self, values: np.ndarray) -> np.ndarray:
        return values <= self.threshold

    def encode(self, raw: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(self.transform(torch.from_numpy(np.ascontiguousarray(raw))))
                       ).astype(np.uint8)


class MRAdapter(MedicalAdapter):
    name = "mri"
    dicom_modality = "MR"
    hounsfield = False

    def parse(self, options: dict[str, Any]) -> MROptions:
        merged = {**MR_DEFAULTS, **options}
        common = parse_common({k: merged[k] for k in COMMON_DEFAULTS})
        if merged["normalize"] not in ("zscore", "percentile"):
            raise DomainclustError(f"--set normalize={merged['normalize']!r}: use zscore or "
                                   "percentile")
        pct = merged["percentiles"]
        if not (isinstance(pct, (list, tuple)) and len(pct) == 2
                and all(isinstance(v, (int, float)) for v in pct) and 0 <= pct[0] < pct[1] <= 100):
            raise DomainclustError(f"--set percentiles={pct!r}: expected [low, high] with "
                                   "0 <= low < high <= 100")
        clip, level = merged["zscore_clip"], merged["background_level"]
        if not isinstance(clip, (int, float)) or clip <= 0:
            raise DomainclustError(f"--set zscore_clip={clip!r}: expected a number > 0")
        if not isinstance(level, (int, float)) or not 0 <= level < 1:
            raise DomainclustError(f"--set background_level={level!r}: expected 0 <= level < 1")
        return MROptions(**vars(common), normalize=merged["normalize"],
                         percentiles=(float(pct[0]), float(pct[1])), zscore_clip=float(clip),
                         background_level=float(level))

    def slice_channels(self, opts: MROptions) -> tuple[str, ...]:
        return ("mr",)

    def scale_offset(self, opts: MROptions) -> tuple[float, float]:
        if opts.normalize == "percentile":
            return 1.0 / 255.0, 0.0
        return 2.0 * opts.zscore_clip / 255.0, -opts.zscore_clip

    def encoder(self, volume: Volume, values: np.ndarray, opts: MROptions) -> MREncoder:
        return MREncoder(values, opts=opts)


ADAPTER = MRAdapter()

MODALITY = Modality(
    name="mri",
    description="MR series (DICOM by SeriesInstanceUID, NIfTI or NRRD) as per-volume normalised "
                "tiles",
    channels=("mr",),
    tile_size=MR_DEFAULTS["tile_size"],
    recipe="mri.yaml",
    ingest=functools.partial(run_ingest, ADAPTER),
    defaults=MR_DEFAULTS,
)
