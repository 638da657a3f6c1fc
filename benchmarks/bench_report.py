"""Cost of the run report next to the epoch it follows, both measured in this run.

Ingests the demo's 5000 real MNIST digits, pretrains one epoch with the demo recipe (the
baseline: what a run spends per epoch), then writes the report of that run and prints the ratio.
The report's own stage timings (load, curves, montage, filters, neighbours) come from its
report.json.

    .venv/bin/python benchmarks/bench_report.py [--pool 500]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from domainclust.config import resolve
from domainclust.data.modality import get_modality
from domainclust.engine.deepcluster import pretrain
from domainclust.report import ReportSettings, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=ReportSettings().pool)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, run = Path(tmp) / "store.zarr", Path(tmp) / "run"
        mnist = get_modality("mnist")
        mnist.ingest([], store, options={}, workers=1, progress=False)
        config = resolve(recipe=mnist.load_recipe(),
                         overrides=[f"store={store}", f"epochs={args.epochs}", "report=false"])
        start = time.perf_counter()
        pretrain(config, run, progress=False, log=lambda _: None)
        epoch = (time.perf_counter() - start) / args.epochs
        start = time.perf_counter()
        write_report(run, settings=ReportSettings(pool=args.pool), progress=False,
                     log=lambda _: None)
        report = time.perf_counter() - start
        stages = json.loads((run / "report" / "report.json").read_text())["stages"]
    print(f"epoch (baseline, incl. model set-up): {epoch:.1f} s")
    print(f"report (pool {args.pool}):              {report:.1f} s  "
          f"= {report / epoch:.3f} x an epoch")
    print("report stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
