"""Image decoding and square tiling shared by the `rgb` and `rgbd` adapters.

Every image is decoded once (Pillow) and turned into 8-bit RGB whatever its mode: grayscale and
palette images are expanded, alpha is premultiplied (flattened onto black), CMYK is converted,
16-bit grayscale is scaled to 8 bits. One square tile per image comes from the usual ImageNet
preprocessing, "scale the shorter side to the tile size, keep the centre", done in a single
antialiased bilinear resampling of the central square. Depth maps go through the same geometry
(`resize_plane`), so RGB and depth tiles stay pixel-aligned.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
DRAFT_GAP = 2.0  # JPEG draft decoding keeps ≥ 2× the tile size (as PIL's own thumbnail())
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_CONVERTIBLE = frozenset({"1", "L", "P", "CMYK", "YCbCr", "HSV"})


class UnreadableFile(Exception):
    """One file cannot be used; the message is the reason shown in the ingest report."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, possibly decoded at reduced scale, and the size of the full image."""

    image: Image.Image  # mode RGB
    full_size: tuple[int, int]  # (width, height) at full resolution, after EXIF rotation
    reduction: float = 1.0  # full-resolution pixels per decoded pixel (JPEG draft: 2, 4 or 8)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def walk_files(folder: Path) -> list[tuple[str, Path]]:
    """(posix path below `folder`, path) of every file not hidden, sorted by that path.

    One directory scan per folder and no per-file stat, which matters for a million files.
    """
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(here)
        prefix = base.relative_to(folder).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        found += [(prefix + f, base / f) for f in files if not f.startswith(".")]
    found.sort(key=lambda pair: pair[0])
    return found


def centre_square(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the largest centred square: the region a "resize the
    shorter side, then centre crop" keeps."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def decode_rgb(path: Path, *, reduce_for: int | None = None, exif: bool = True) -> DecodedImage:
    """Decode `path` to RGB; with `reduce_for`, JPEGs decode at the smallest scale that still
    leaves ≥ 2× `reduce_for` pixels on the shorter side (several times faster, same tile)."""
    try:
        with Image.open(path) as im:
            full = im.size
            scale = 1.0
            if reduce_for and im.format == "JPEG":
                short = min(full)
                want = max(1, math.ceil(DRAFT_GAP * reduce_for))
                request = (max(1, full[0] * want // short), max(1, full[1] * want // short))
                drafted = im.draft(None, request)
                if drafted:
                    scale = full[0] / drafted[1][2]
            im.load()
            before = im.size
            oriented = ImageOps.exif_transpose(im) if exif else im
            if oriented.size != before:
                full = (full[1], full[0])
            rgb = to_rgb(oriented)
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder may raise almost anything on a broken file
        raise UnreadableFile(f"cannot decode image ({type(exc).__name__}: {exc})") from None
    return DecodedImage(image=rgb, full_size=full, reduction=scale)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB (alpha premultiplied, 16-bit gray scaled to 8 bits)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
        return Image.fromarray(np.rint(rgb).astype(np.uint8))
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit grayscale (PNG/TIFF): full range 0..65535 → 0..255, the same for every file.
        gray = np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 257.0
        return Image.fromarray(np.rint(gray).astype(np.uint8)).convert("RGB")
    if mode == "F":
        raise UnreadableFile("32-bit float image, not a photograph; save it as 8-bit RGB")
    if mode in _CONVERTIBLE or mode.startswith("RGB"):
        return im.convert("RGB")
    raise UnreadableFile(f"unsupported image mode {mode}; save it as 8-bit RGB")


def square_tile(image: DecodedImage, size: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """(3, size, size) uint8 tile of the centre square, and that square in full-res pixels."""
    box = centre_square(*image.full_size)
    r = image.reduction
    tile = image.image.resize(
        (size, size), Image.Resampling.BILINEAR, box=tuple(v / r for v in box)
    )
    return np.asarray(tile).transpose(2, 0, 1), box


def resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 tile of a 2-D float map, same geometry and filter as `square_tile`."""
    h, w = plane.shape
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    out = image.resize((size, size), Image.Resampling.BILINEAR, box=centre_square(w, h))
    return np.asarray(out, dtype=np.float32)


def square_mask(mask: np.ndarray, size: int, *, full_size: tuple[int, int]) -> np.ndarray:
    """(size, size) int16 tile of a (H, W) class-id mask (negative: unlabelled), cut from the
    same centre square as its image's tile (`square_tile`) but with nearest neighbour, so no id
    is ever blended; refused (UnreadableFile) when the mask is not the image's size."""
    width, height = full_size
    if mask.shape != (height, width):
        raise UnreadableFile(f"mask is {mask.shape[1]}x{mask.shape[0]} px, its image "
                             f"{width}x{height}")
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.int32))
    out = image.resize((size, size), Image.Resampling.NEAREST, box=centre_square(width, height))
    return np.asarray(out).astype(np.int16)
