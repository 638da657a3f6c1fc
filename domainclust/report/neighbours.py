"""Nearest neighbours in feature space, before pretraining (the run's random init) and after.

A query's neighbours under the random-init network show what the architecture alone groups;
the same query under the checkpoint shows what pretraining added.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from domainclust.data.store import TileStore
from domainclust.engine.extract import tile_batches
from domainclust.networks.model import Trunk
from domainclust.report.figures import Figure, grid, png_bytes, pyplot


@torch.no_grad()
def embed(
    trunk: Trunk, tiles: np.ndarray, *, store: TileStore, batch_size: int, device: torch.device,
    progress: bool = False, desc: str = "embed",
) -> np.ndarray:
    """L2-normalised clustering features (n, D) of stored tiles."""
    trunk.eval()
    out = []
    batches = tile_batches(tiles, store=store, batch_size=batch_size, device=device,
                           tile_size=trunk.spec.tile_size)
    with tqdm(total=len(tiles), desc=desc, unit="tile", disable=not progress, leave=False) as bar:
        for x in batches:
            out.append(F.normalize(trunk.features(x).float(), dim=1).cpu())
            bar.update(len(x))
    return torch.cat(out).numpy()


def nearest(features: np.ndarray, queries: np.ndarray, *, k: int) -> np.ndarray:
    """(len(queries), k) indices of each query's most cosine-similar rows, itself excluded."""
    sims = features[queries] @ features.T
    sims[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def label_agreement(features: np.ndarray, truth: np.ndarray, *, k: int) -> float:
    """Share of each labelled tile's k neighbours that carry its label (all tiles queried)."""
    known = np.flatnonzero(truth >= 0)
    hits = truth[nearest(features, known, k=k)] == truth[known, None]
    return float(hits.mean())


def neighbours_figure(
    query_images: np.ndarray, before: np.ndarray, after: np.ndarray, *, caption: str
) -> Figure:
    """Rows: a query, then its neighbours before | after pretraining."""
    plt = pyplot()
    blank = np.full_like(query_images[0], 255)
    rows = []
    for q, b, a in zip(query_images, before, after):
        rows.append(grid([q, blank, *b, blank, *a], columns=2 + len(b) + 1 + len(a), pad=2))
    picture = np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255)
                              for r in rows])
    fig, ax = plt.subplots(figsize=(11, 11 * picture.shape[0] / picture.shape[1] + 0.5))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    k, cell = before.shape[1], query_images.shape[2] + 2
    for x, label in ((0.5, "query"), (2 + k / 2, "random init (before)"),
                     (3 + 1.5 * k, "DeepCluster (after)")):
        ax.text(x * cell, -3, label, ha="center", va="bottom", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.94, bottom=0.01)
    return Figure("neighbours", "Nearest neighbours before vs after pretraining", caption,
                  png_bytes(fig))
