"""A scanned volume as the CT/MR readers hand it on, and the slice-spacing check.

Both readers (DICOM series, NIfTI) produce a `Volume`: slices ordered along the slice normal,
their positions in mm along that normal, and the voxel spacing. Only geometry and intensities
travel here, never a header field that could identify a patient.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DUPLICATE_MM = 0.01  # two slices closer than this along the normal are "at the same position"
GAP_RATIO = 1.5  # a step this many times the base step means slices are missing


@dataclass
class Volume:
    """Slices ordered along the slice normal (increasing position)."""

    values: np.ndarray  # (Z, Y, X) float32: Hounsfield units for CT, scanner units for MR
    spacing: tuple[float, float, float]  # (slice step, row, column) in mm
    slice_positions: np.ndarray  # (Z,) mm along the slice normal, increasing
    source: str = "dicom"  # dicom | nifti | nrrd: some checks only apply to some of them
    runs: list[tuple[int, int]] | None = None  # (start, stop) of the runs of slices without a
    # gap between them; None: one run. Slabs never reach across runs.
    affine: np.ndarray | None = None  # (4, 4) RAS+ mm of (row, column, slice) voxel indices, from
    # a NIfTI/NRRD header: what a mask must share with its image


@dataclass(frozen=True)
class SpacingCheck:
    """The base slice step and what is wrong with the spacing, if anything."""

    step: float
    problem: str | None = None  # missing slices or irregular spacing, in words
    fatal: bool = False  # slices sharing a position: no ordering can be trusted


def check_slice_spacing(
    positions: np.ndarray, *, tolerance: float, fallback_step: float
) -> SpacingCheck:
    """Find duplicated positions, missing slices and irregular steps in sorted positions.

    The base step is the median of the steps close to the smallest one, so a few gaps do not
    shift it; a step of at least 1.5 base steps counts as missing slices.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) < 2:
        return SpacingCheck(step=float(fallback_step))
    steps = np.diff(positions)
    duplicates = int(np.sum(steps < DUPLICATE_MM))
    if duplicates:
        return SpacingCheck(
            step=0.0, fatal=True,
            problem=f"{duplicates} slice(s) share a position with another slice (several echoes, "
                    "phases or time points stored as one series?); split the series first",
        )
    base = float(np.median(steps[steps <= GAP_RATIO * steps.min()]))
    ratio = steps / base
    gaps = ratio >= GAP_RATIO
    irregular = ~gaps & (np.abs(ratio - 1.0) > tolerance)
    problems = []
    if gaps.any():
        missing = int(np.sum(np.rint(ratio[gaps]) - 1))
        where = ", ".join(f"{positions[i]:.2f}..{positions[i + 1]:.2f} mm"
                          for i in np.flatnonzero(gaps)[:3])
        problems.append(f"missing slices: {int(gaps.sum())} gap(s), about {max(missing, 1)} "
                        f"slice(s) missing (step {base:.2f} mm; gaps at {where})")
    if irregular.any():
        problems.append(f"irregular spacing: steps from {steps.min():.2f} to {steps.max():.2f} mm "
                        f"around a step of {base:.2f} mm (tolerance {tolerance:.0%})")
    return SpacingCheck(step=base, problem="; ".join(problems) or None)


def contiguous_runs(positions: np.ndarray, *, step: float) -> list[tuple[int, int]]:
    """(start, stop) of the runs of sorted `positions` without missing slices between them."""
    if len(positions) < 2 or step <= 0:
        return [(0, len(positions))]
    cuts = np.flatnonzero(np.diff(positions) >= GAP_RATIO * step) + 1
    bounds = [0, *cuts.tolist(), len(positions)]
    return list(itertools.pairwise(bounds))


def hashed(salt: str, *parts: str) -> str:
    """A salted, shortened SHA-256: stable item keys that reveal no UID or path."""
    digest = hashlib.sha256("\x1f".join((salt, *parts)).encode("utf-8")).hexdigest()
    return digest[:16]


def scrub(message: str, paths: list[Path]) -> str:
    """An exception message without the file paths that libraries like to quote."""
    for path in paths:
        for text in (str(path.resolve()), str(path), path.name):
            if len(text) >= 4:  # a short name ("0") would also blank out numbers
                message = message.replace(text, "<file>")
    return message.splitlines()[0][:300] if message else ""
