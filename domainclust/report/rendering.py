"""Tiles → RGB pictures the way a reader of the modality expects to see them.

The store's attributes say what the channels are: CT tiles are already HU windows (shown as
stored, one window), MR is scaled between robust percentiles, multispectral bands become a
true-colour composite when red, green and blue are named (a false-colour one otherwise, or the
bands asked for), and depth gets a colour map with invalid pixels painted black. Percentiles come
from one seeded sample of the store, so every figure of a report uses the same scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from domainclust.errors import DomainclustError

TRUE_COLOUR = (("red", "green", "blue"), ("b04", "b03", "b02"), ("b4", "b3", "b2"))
DEPTH_NAMES = ("depth", "disparity")
INVALID_RGB = (0, 0, 0)
# Robust display ranges (low, high percentile) where the stored values have no fixed range.
PERCENTILES = {"mri": (1.0, 99.0), "geotiff": (2.0, 98.0)}
DEFAULT_PERCENTILES = (1.0, 99.0)
# Modalities whose stored floats are already a display range [0, 1]: CT tiles hold HU windows,
# photographs and MNIST digits are 8-bit intensities.
UNIT_RANGE = ("ct", "rgb", "rgbd", "mnist")


@dataclass(frozen=True)
class Renderer:
    """How to draw a float tile (C, H, W): which channels, over which range, plus depth."""

    colour: tuple[int, ...]  # 0, 1 (gray) or 3 (RGB) channel indices
    low: tuple[float, ...]
    high: tuple[float, ...]
    depth: int | None = None
    depth_valid: int | None = None
    depth_range: tuple[float, float] = (0.0, 1.0)
    caption: str = ""

    @property
    def panels(self) -> int:
        """Pictures side by side per tile (colour and/or depth)."""
        return int(bool(self.colour)) + int(self.depth is not None)

    def render(self, tiles: np.ndarray) -> np.ndarray:
        """(n, C, H, W) float → (n, H, panels * W, 3) uint8."""
        tiles = np.asarray(tiles, dtype=np.float32)
        parts = []
        if self.colour:
            parts.append(self._colour(tiles))
        if self.depth is not None:
            parts.append(self._depth(tiles))
        return np.concatenate(parts, axis=2)

    def _colour(self, tiles: np.ndarray) -> np.ndarray:
        x = tiles[:, list(self.colour)]
        low = np.asarray(self.low, np.float32).reshape(1, -1, 1, 1)
        high = np.asarray(self.high, np.float32).reshape(1, -1, 1, 1)
        x = np.nan_to_num((x - low) / np.maximum(high - low, 1e-12), nan=0.0)
        x = np.clip(x, 0.0, 1.0).transpose(0, 2, 3, 1)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        return np.rint(255 * x).astype(np.uint8)

    def _depth(self, tiles: np.ndarray) -> np.ndarray:
        from matplotlib import colormaps

        d = tiles[:, self.depth]
        lo, hi = self.depth_range
        scaled = np.clip(np.nan_to_num((d - lo) / max(hi - lo, 1e-12), nan=0.0), 0.0, 1.0)
        rgb = colormaps["turbo"](scaled)[..., :3]
        out = np.rint(255 * rgb).astype(np.uint8)
        out[~self.valid_mask(tiles)] = INVALID_RGB
        return out

    def valid_mask(self, tiles: np.ndarray) -> np.ndarray:
        """(n, H, W) True where the depth is valid."""
        d = tiles[:, self.depth]
        valid = np.isfinite(d) & (d > 0)
        if self.depth_valid is not None:
            valid &= tiles[:, self.depth_valid] >= 0.5
        return valid


def build_renderer(
    attrs: dict[str, Any], sample: np.ndarray, *, composite: Sequence[str] | None = None
) -> Renderer:
    """A renderer for a store with these attributes; `sample` (n, C, H, W) float sets ranges.

    Args:
        attrs: the store's attributes (modality, channels, provenance).
        sample: float tiles drawn from the store, for percentile ranges.
        composite: one or three channel names to show (a gray or a false-colour composite);
            None for the modality's default.
    """
    modality = str(attrs.get("modality", ""))
    channels = [str(c) for c in attrs["channels"]]
    lower = [c.lower() for c in channels]
    depth = next((i for i, c in enumerate(lower) if c in DEPTH_NAMES), None)
    depth_valid = lower.index("depth_valid") if "depth_valid" in lower else None
    if composite:
        colour = _named(channels, composite)
    else:
        colour = _default_colour(modality, channels, skip={depth, depth_valid})
    if modality in UNIT_RANGE and not composite:
        low, high = (0.0,) * len(colour), (1.0,) * len(colour)
        how = "as stored"
    else:
        p_low, p_high = PERCENTILES.get(modality, DEFAULT_PERCENTILES)
        low, high = _percentiles(sample, colour, p_low, p_high)
        how = f"scaled between the {p_low:g}th and {p_high:g}th percentile of {len(sample)} tiles"
    depth_range = (0.0, 1.0)
    if depth is not None:
        d = sample[:, depth]
        ok = np.isfinite(d) & (d > 0)
        if depth_valid is not None:
            ok &= sample[:, depth_valid] >= 0.5
        if ok.any():
            depth_range = tuple(float(v) for v in np.percentile(d[ok], [2.0, 98.0]))
    caption = _caption(modality, channels, colour, how=how, attrs=attrs)
    if depth is not None:
        caption += (f"; {channels[depth]} in colour (turbo, {depth_range[0]:.3g} to "
                    f"{depth_range[1]:.3g}), black where it is invalid")
    return Renderer(colour=colour, low=low, high=high, depth=depth, depth_valid=depth_valid,
                    depth_range=depth_range, caption=caption)


def _named(channels: list[str], names: Sequence[str]) -> tuple[int, ...]:
    if len(names) not in (1, 3):
        raise DomainclustError(
            f"a composite takes 1 (gray) or 3 (red, green, blue) channels, got {list(names)}"
        )
    missing = [n for n in names if n not in channels]
    if missing:
        raise DomainclustError(
            f"channel(s) {missing} are not in the store; its channels are {channels}"
        )
    return tuple(channels.index(n) for n in names)


def _default_colour(modality: str, channels: list[str], *, skip: set[int | None]) -> tuple[int, ...]:
    lower = [c.lower() for c in channels]
    for names in TRUE_COLOUR:
        if all(n in lower for n in names):
            return tuple(lower.index(n) for n in names)
    rest = [i for i in range(len(channels)) if i not in skip]
    if modality == "ct":  # one HU window, the centre slice of a 2.5-D slab
        centre = [i for i in rest if channels[i].endswith("_z+0")] or rest
        return tuple(centre[:1])
    if modality == "geotiff" and len(rest) >= 3:
        return tuple(rest[:3])
    return tuple(rest[:1])


def _percentiles(
    sample: np.ndarray, colour: tuple[int, ...], p_low: float, p_high: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    low, high = [], []
    for c in colour:
        values = sample[:, c].ravel()
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, [p_low, p_high]) if len(values) else (0.0, 1.0)
        low.append(float(lo))
        high.append(float(hi) if hi > lo else float(lo) + 1.0)
    return tuple(low), tuple(high)


def _caption(
    modality: str, channels: list[str], colour: tuple[int, ...], *, how: str,
    attrs: dict[str, Any],
) -> str:
    if not colour:
        return ""
    names = [channels[i] for i in colour]
    if modality == "ct":
        window = _ct_window(attrs, names[0])
        return f"CT, window {names[0]}" + (f" (W {window[0]:g} / L {window[1]:g} HU)"
                                          if window else "") + f", {how}"
    if len(names) == 3:
        lower = tuple(n.lower() for n in names)
        kind = "true colour" if lower in TRUE_COLOUR else "false colour"
        return f"{kind} R={names[0]}, G={names[1]}, B={names[2]}, {how}"
    return f"channel {names[0]} in grayscale, {how}"


def _ct_window(attrs: dict[str, Any], channel: str) -> tuple[float, float] | None:
    """(width, level) in HU of a CT channel, from the ingest options the store recorded
    (a list of {name, width, level}; a mapping name: [width, level] is read too)."""
    windows = ((attrs.get("provenance") or {}).get("options") or {}).get("windows") or []
    if isinstance(windows, dict):
        windows = [{"name": k, "width": v[0], "level": v[1]} for k, v in windows.items()
                   if isinstance(v, (list, tuple)) and len(v) == 2]
    base = channel.rsplit("_z", 1)[0]
    for w in windows:
        if isinstance(w, dict) and w.get("name") in (channel, base):
            return float(w["width"]), float(w["level"])
    return None
