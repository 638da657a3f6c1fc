"""First-layer filters seen on the input channels: conv1 composed with the fixed front-end.

Behind a Sobel front-end conv1's weights act on gradients, which says little to the eye. Both
maps are linear, so their composition is one filter on the input: for conv1 weight W (out, j)
and front-end kernel K (j, c), the effective kernel is sum_j W[o, j] * K[j, c] (a full 2-D
convolution), as the thesis shows for its Sobel network.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import convolve2d
from torch import nn

from domainclust.networks.model import Trunk
from domainclust.report.figures import Figure, grid, png_bytes, pyplot


@torch.no_grad()
def frontend_kernels(frontend: nn.Module, *, in_channels: int) -> np.ndarray:
    """(out, in, 3, 3) kernels of a linear front-end, read from its impulse responses."""
    frontend = frontend.cpu()
    x = torch.zeros(in_channels, in_channels, 3, 3)
    x[torch.arange(in_channels), torch.arange(in_channels), 1, 1] = 1.0
    response = frontend(x)  # (in, out, 3, 3): response to a delta in each input channel
    # Correlation turns a centred delta into the kernel flipped in both axes.
    return response.flip(-1, -2).permute(1, 0, 2, 3).numpy().astype(np.float64)


def first_conv(trunk: Trunk) -> nn.Conv2d:
    return next(m for m in trunk.backbone.modules() if isinstance(m, nn.Conv2d))


def effective_filters(trunk: Trunk) -> np.ndarray:
    """(filters, input channels, k + 2, k + 2) conv1 ∘ front-end kernels (correlation form)."""
    weight = first_conv(trunk).weight.detach().float().cpu().numpy().astype(np.float64)
    kernels = frontend_kernels(trunk.frontend, in_channels=len(trunk.spec.channels))
    n_out, n_mid = weight.shape[:2]
    n_in, size = kernels.shape[1], weight.shape[-1] + kernels.shape[-1] - 1
    out = np.zeros((n_out, n_in, size, size))
    for o in range(n_out):
        for c in range(n_in):
            for j in range(n_mid):
                if kernels[j, c].any():
                    out[o, c] += convolve2d(weight[o, j], kernels[j, c], mode="full")
    return out


def filters_figure(
    trunk: Trunk, *, colour: tuple[int, ...], channel_names: tuple[str, ...], epoch: int
) -> Figure:
    """The effective filters on the displayed channels (gray, or RGB for a composite)."""
    plt = pyplot()
    filters = effective_filters(trunk)
    shown = list(colour) or [0]
    images = []
    for f in filters[:, shown]:
        f = f / (np.abs(f).max() or 1.0)  # each filter on its own symmetric scale
        rgb = np.clip(0.5 + 0.5 * f.transpose(1, 2, 0), 0.0, 1.0)
        rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
        images.append(np.rint(255 * rgb).astype(np.uint8))
    columns = min(16, len(images))
    picture = grid(images, columns=columns, pad=1, fill=255)
    fig, ax = plt.subplots(figsize=(min(11, 0.7 * columns), 0.7 * -(-len(images) // columns) + 0.3))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01)
    size = filters.shape[-1]
    names = ", ".join(channel_names[c] for c in shown)
    caption = (f"{len(filters)} first-layer filters of epoch {epoch} composed with the "
               f"{trunk.spec.frontend!r} front-end: {size}×{size} kernels on the input "
               f"channel(s) {names}; gray is 0, each filter scaled to its own maximum.")
    return Figure("filters", "First-layer filters on the input", caption, png_bytes(fig))
