"""Shared driver of the segmentation benchmarks: the options every one takes, the protocol run
on a prepared store and split, and the printed table (mIoU, IoU per class, Dice)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from domainclust.segmentation.protocol import low_shot_segment, segment_table, write_segment
from domainclust.segmentation.training import SegmentSettings


def add_segment_arguments(ap: argparse.ArgumentParser) -> None:
    """Repeats, shots, protocol, the lr/step grid and the seed."""
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shots", default="2,5,10", help="labelled tiles per repeat")
    ap.add_argument("--protocol", default="frozen", help="frozen | finetune | both")
    ap.add_argument("--lrs", default="0.01,0.03")
    ap.add_argument("--steps", default="50,150")
    ap.add_argument("--seed", type=int, default=0)


def score(args: argparse.Namespace, *, run: Path, store: Path, split: Path, out: Path,
          start: float, flip: bool, balance_classes: bool = False,
          min_class_pixels: int = 0) -> None:
    """`low_shot_segment` of `run` on `store` with the options of `add_segment_arguments`;
    writes segment.json under `out` and prints the tables and the verdict."""
    steps = tuple(int(s) for s in args.steps.split(","))
    settings = SegmentSettings(lrs=tuple(float(v) for v in args.lrs.split(",")), steps=steps,
                               default_steps=steps[0], flip=flip,
                               balance_classes=balance_classes)
    result = low_shot_segment(run, store, shots=[int(s) for s in args.shots.split(",")],
                              repeats=args.repeats, protocol=args.protocol, settings=settings,
                              split_path=split, min_class_pixels=min_class_pixels,
                              seed=args.seed, device="auto",
                              log=lambda m: print(m, flush=True))
    paths = write_segment(result, out)
    print(segment_table(result))
    iou = sorted({r.metric for r in result.rows if r.metric.startswith("iou/")})
    binary = any(r.metric == "dice" for r in result.rows)
    for r in result.rows:
        if r.metric == "miou":
            cells = [f"{m[4:]} {100 * result.row(r.method, r.protocol, r.shots, m).mean:.1f}"
                     for m in iou]
            dice = (f", Dice {100 * result.row(r.method, r.protocol, r.shots, 'dice').mean:.1f}"
                    if binary else "")
            print(f"{r.method}/{r.protocol} {r.shots} tiles: IoU per class "
                  f"{', '.join(cells)}{dice}")
    print(f"wrote {paths['json']}; {time.time() - start:.0f} s in all")
    print(json.dumps({str(v.shots): v.result for v in result.verdict}))
