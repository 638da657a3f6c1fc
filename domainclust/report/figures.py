"""Shared plumbing for the report's figures: matplotlib without a display, figures as PNG bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One picture of the report: its file name, title, caption and PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed, safe in workers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, *, dpi: int = 100) -> bytes:
    """Render and close a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def grid(images: list[Any], *, columns: int, pad: int = 2, fill: int = 255) -> Any:
    """Equal-sized (H, W, 3) uint8 images tiled row by row into one array."""
    import numpy as np

    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, 3), fill, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return out
