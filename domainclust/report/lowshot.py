"""The low-shot plot: mean and 95 % CI against shots per class, for the report page and for
`finetune.png` (one figure, drawn from the one `LowShotResult` type)."""

from __future__ import annotations

from domainclust.evaluation.lowshot.result import LowShotResult, Row
from domainclust.report.figures import Figure, png_bytes, pyplot

METHODS = ("pretrained", "random_init", "raw_pixels", "channel_stats")
COLOURS = {"pretrained": "tab:blue", "random_init": "tab:grey", "raw_pixels": "tab:orange",
           "channel_stats": "tab:green"}


def method_order(rows: list[Row]) -> list[str]:
    found = {r.method for r in rows}
    return [m for m in METHODS if m in found] + sorted(found - set(METHODS))


def lowshot_figure(result: LowShotResult) -> Figure:
    """One panel per (protocol, metric); a row without an interval (one repeat) has no bar."""
    plt = pyplot()
    panels = sorted({(r.protocol, r.metric) for r in result.rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (protocol, metric) in zip(axes[0], panels):
        for method in method_order(result.rows):
            rows = sorted((r for r in result.rows
                           if (r.protocol, r.metric, r.method) == (protocol, metric, method)),
                          key=lambda r: r.shots)
            if not rows:
                continue
            err = [[_below(r) for r in rows], [_above(r) for r in rows]]
            ax.errorbar([r.shots for r in rows], [r.mean for r in rows], yerr=err, marker="o",
                        capsize=3, label=method, color=COLOURS.get(method))
        ax.set_xscale("log")
        shots = sorted({r.shots for r in result.rows})
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel(metric)
        ax.set_title(f"{protocol}: {metric}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    repeats = max(r.repeats for r in result.rows)
    spread = ("95 % confidence interval" if repeats > 1
              else "no confidence interval (a single repeat)")
    caption = f"Mean over {repeats} repeat(s) and {spread}; split: {result.split}."
    return Figure("lowshot", "Low-shot evaluation", caption, png_bytes(fig))


def _below(r: Row) -> float:
    return 0.0 if r.ci_low is None else r.mean - r.ci_low


def _above(r: Row) -> float:
    return 0.0 if r.ci_high is None else r.ci_high - r.mean
