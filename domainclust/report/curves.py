"""Training curves from the metrics log, and the cluster sizes of the last epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from domainclust.report.figures import Figure, png_bytes, pyplot


def metrics_figure(history: list[dict[str, Any]]) -> Figure:
    """Loss, NMI to the previous assignment, NMI to labels (when logged) and cluster sizes."""
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    has_labels = any(r.get("nmi_labels") is not None for r in history)
    panels = 4 if has_labels else 3
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.2))
    _series(axes[0], epochs, [r.get("loss") for r in history], "training loss", "tab:red")
    _series(axes[1], epochs, [r.get("nmi_prev") for r in history], "NMI to epoch t-1", "tab:blue")
    axes[1].set_ylim(0, 1)
    if has_labels:
        _series(axes[2], epochs, [r.get("nmi_labels") for r in history], "NMI to labels",
                "tab:green")
        axes[2].set_ylim(0, 1)
    ax = axes[-1]
    for key, style in (("cluster_size_max", "-"), ("cluster_size_median", "--"),
                       ("cluster_size_min", ":")):
        ax.plot(epochs, [max(r.get(key) or 0, 0.5) for r in history], style, marker=".",
                color="tab:purple", label=key.rsplit("_", 1)[1])
    ax.set_yscale("log")
    ax.set_title("cluster size (tiles)")
    ax.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(len(epochs), 10), integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    caption = (f"{len(history)} finished epoch(s). NMI between successive assignments rises as "
               "the clustering stabilises; sizes are of the clusters each epoch trained on.")
    return Figure("metrics", "Metrics over epochs", caption, png_bytes(fig))


def _series(ax: Any, epochs: list[int], values: list[Any], title: str, colour: str) -> None:
    points = [(e, v) for e, v in zip(epochs, values) if v is not None]
    if points:
        x, y = zip(*points)
        ax.plot(x, y, marker="o", color=colour)
    else:
        ax.text(0.5, 0.5, "not yet available", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)


def cluster_size_figure(labels: np.ndarray, *, n_clusters: int, epoch: int) -> Figure:
    """Histogram of the last epoch's cluster sizes (log-spaced bins: sizes are skewed)."""
    plt = pyplot()
    sizes = np.bincount(labels, minlength=n_clusters)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    top = max(int(sizes.max()), 1)
    bins = np.unique(np.round(np.geomspace(1, top + 1, 30)).astype(int))
    ax.hist(np.maximum(sizes, 1), bins=bins, color="tab:purple", edgecolor="white")
    ax.set_xscale("log")
    ax.set_xlabel("tiles in the cluster")
    ax.set_ylabel("clusters")
    ax.set_title(f"cluster sizes, epoch {epoch}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    empty = int((sizes == 0).sum())
    caption = (f"{n_clusters} clusters over {len(labels)} tiles: median {np.median(sizes):g}, "
               f"smallest {sizes.min()}, largest {sizes.max()}"
               + (f", {empty} empty" if empty else "") + ".")
    return Figure("cluster_sizes", "Cluster sizes (last epoch)", caption, png_bytes(fig))
