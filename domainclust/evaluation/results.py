"""Writing evaluation results: JSON for machines, CSV for spreadsheets, a PNG for people."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from domainclust.atomic import atomic_write, atomic_write_text
from domainclust.evaluation.lowshot.result import LowShotResult
from domainclust.report.lowshot import lowshot_figure


def write_json(path: Path, values: Any) -> Path:
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def finetune_csv(result: LowShotResult) -> str:
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


def plot_finetune(result: LowShotResult, path: Path) -> Path:
    """The report's low-shot figure as a PNG file."""
    png = lowshot_figure(result).png
    atomic_write(path, lambda f: f.write(png))
    return path


def write_finetune(result: LowShotResult, out_dir: Path | str) -> dict[str, Path]:
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
