"""Writing evaluation results: JSON for machines, CSV for spreadsheets, a PNG for people."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from domainclust.evaluation.fewshot import FinetuneResult
from domainclust.rundir import atomic_write, atomic_write_text


def write_json(path: Path, values: Any) -> Path:
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def finetune_csv(result: FinetuneResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    n = max(r.repeats for r in result.rows)
    writer.writerow(["method", "protocol", "shots", "metric", "mean", "ci_low", "ci_high",
                     "repeats", *[f"repeat_{i}" for i in range(n)]])
    for r in result.rows:
        writer.writerow([r.method, r.protocol, r.shots, r.metric, f"{r.mean:.6f}",
                         _num(r.ci_low), _num(r.ci_high), r.repeats,
                         *[f"{a:.6f}" for a in r.values]])
    return buf.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"


COLOURS = {"pretrained": "tab:blue", "random_init": "tab:grey", "raw_pixels": "tab:orange",
           "channel_stats": "tab:green"}


def plot_finetune(result: FinetuneResult, path: Path) -> Path:
    """Top-1 vs shots per class (log x) for every method, one panel per protocol, 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = sorted({r.protocol for r in result.rows})
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 4), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for method, colour in COLOURS.items():
            rows = sorted((r for r in result.rows if (r.protocol, r.method, r.metric)
                           == (protocol, method, "top1")), key=lambda r: r.shots)
            if not rows:
                continue
            x = [r.shots for r in rows]
            mean = np.array([100 * r.mean for r in rows])
            low = np.array([100 * (r.ci_low if r.ci_low is not None else r.mean) for r in rows])
            high = np.array([100 * (r.ci_high if r.ci_high is not None else r.mean) for r in rows])
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", capsize=3,
                        color=colour, label=method.replace("_", " "))
            ax.set_xticks(x, [str(v) for v in x])
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title("frozen features + logistic regression" if protocol == "linear"
                     else "all layers fine-tuned")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def write_finetune(result: FinetuneResult, out_dir: Path | str) -> dict[str, Path]:
    """finetune.json, finetune.csv and finetune.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "json": write_json(out / "finetune.json", result.to_dict()),
        "csv": _write_text(out / "finetune.csv", finetune_csv(result)),
        "png": plot_finetune(result, out / "finetune.png"),
    }


def _write_text(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path
