"""The low-shot evaluation of a run (`RUN/eval/finetune.json`): table, plot and verdict.

Schema read: `rows` (method, protocol, shots, metric, mean, ci_low, ci_high, repeats), `split`
(how the split was made) and `verdict` per shot count (result, best_baseline, difference,
ci_low, ci_high), as a list of objects with `shots` or a mapping keyed by the shot count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainclust.errors import DomainclustError
from domainclust.report.figures import Figure, png_bytes, pyplot

METHODS = ("pretrained", "random_init", "raw_pixels", "channel_stats")
ROW_KEYS = ("method", "protocol", "shots", "metric", "mean", "ci_low", "ci_high", "repeats")
VERDICT_KEYS = ("result", "best_baseline", "difference", "ci_low", "ci_high")
RESULTS = ("helped", "did not help", "inconclusive")
COLOURS = {"pretrained": "tab:blue", "random_init": "tab:grey", "raw_pixels": "tab:orange",
           "channel_stats": "tab:green"}


@dataclass(frozen=True)
class LowShot:
    rows: list[dict[str, Any]]
    split: Any
    verdict: list[dict[str, Any]]
    path: Path


def load_lowshot(path: Path) -> LowShot | None:
    """The evaluation at `path`, None when there is none; a malformed file is refused."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DomainclustError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise DomainclustError(f"{path}: expected an object with a non-empty list 'rows'")
    for i, row in enumerate(data["rows"]):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise DomainclustError(f"{path}: rows[{i}] lacks {', '.join(missing)}")
    verdict = data.get("verdict") or []
    if isinstance(verdict, dict):
        verdict = [{"shots": _shots(k), **v} for k, v in verdict.items()]
    for i, v in enumerate(verdict):
        missing = [k for k in VERDICT_KEYS if not isinstance(v, dict) or k not in v]
        if missing or "shots" not in v:
            raise DomainclustError(f"{path}: verdict[{i}] lacks {', '.join(missing or ['shots'])}")
        if v["result"] not in RESULTS:
            raise DomainclustError(
                f"{path}: verdict[{i}] result {v['result']!r} is not one of {', '.join(RESULTS)}"
            )
    return LowShot(rows=data["rows"], split=data.get("split"),
                   verdict=sorted(verdict, key=lambda v: v["shots"]), path=path)


def _shots(key: str) -> int | str:
    return int(key) if str(key).isdigit() else key


def method_order(rows: list[dict[str, Any]]) -> list[str]:
    found = {r["method"] for r in rows}
    return [m for m in METHODS if m in found] + sorted(found - set(METHODS))


def lowshot_figure(result: LowShot) -> Figure:
    """Mean and 95 % CI against shots per class, one panel per (protocol, metric)."""
    plt = pyplot()
    panels = sorted({(r["protocol"], r["metric"]) for r in result.rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (protocol, metric) in zip(axes[0], panels):
        for method in method_order(result.rows):
            rows = sorted((r for r in result.rows
                           if (r["protocol"], r["metric"], r["method"]) == (protocol, metric, method)),
                          key=lambda r: r["shots"])
            if not rows:
                continue
            x = [r["shots"] for r in rows]
            y = [r["mean"] for r in rows]
            err = [[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method,
                        color=COLOURS.get(method))
        ax.set_xscale("log")
        shots = sorted({r["shots"] for r in result.rows})
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel(metric)
        ax.set_title(f"{protocol}: {metric}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    caption = f"Mean and 95 % confidence interval over repeats; split: {split_text(result.split)}."
    return Figure("lowshot", "Low-shot evaluation", caption, png_bytes(fig))


def split_text(split: Any) -> str:
    if split is None:
        return "not recorded"
    if isinstance(split, dict):
        return ", ".join(f"{k}: {v}" for k, v in split.items())
    return str(split)
