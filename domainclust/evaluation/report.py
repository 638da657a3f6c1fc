"""Writing evaluation results: JSON for machines, CSV for spreadsheets, a PNG for people."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from domainclust.evaluation.fewshot import FinetuneResult
from domainclust.rundir import atomic_write, atomic_write_text


def write_json(path: Path, values: Any) -> Path:
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def finetune_csv(result: FinetuneResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    n = len(result.rows[0].accuracies)
    writer.writerow(["protocol", "init", "shots", "mean", "std", "repeats",
                     *[f"repeat_{i}" for i in range(n)]])
    for r in result.rows:
        writer.writerow([r.protocol, r.init, r.shots, f"{r.mean:.6f}", f"{r.std:.6f}", n,
                         *[f"{a:.6f}" for a in r.accuracies]])
    return buf.getvalue()


def plot_finetune(result: FinetuneResult, path: Path) -> Path:
    """Accuracy vs shots per class (log x), pretrained vs random init, ±1 std bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = sorted({r.protocol for r in result.rows})
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 4), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for init, colour in (("pretrained", "tab:blue"), ("random", "tab:grey")):
            rows = sorted((r for r in result.rows if (r.protocol, r.init) == (protocol, init)),
                          key=lambda r: r.shots)
            x = [r.shots for r in rows]
            mean = [100 * r.mean for r in rows]
            std = [100 * r.std for r in rows]
            label = "DeepCluster" if init == "pretrained" else "random init"
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color=colour, label=label)
        ax.set_xscale("log")
        ax.set_xticks(x, [str(v) for v in x])
        ax.minorticks_off()
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"fine-tuning: {'all layers' if protocol == 'all' else 'head only'}")
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
