"""Per-commit bookkeeping cost with N items already committed: commit log vs the old design.

The old design kept the ingest's progress (`done`: one entry per finished item) as a JSON
attribute of the store's group and rewrote `zarr.json` with all of it on every commit. The
commit log appends one line per commit. For each N, both stores are prepared with N items done
(the log's N lines and the old attribute are written directly, not by N commits), then K real
commits are timed on each, in the same run; the ratio old/new is the figure to read. The log's
commit includes its fsync; the old design's attribute write did not fsync.

    .venv/bin/python benchmarks/bench_commit_cost.py --items 1000 100000 1000000 --commits 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import zarr  # noqa: E402

from domainclust.data.store import LOG_NAME, StoreSpec, TileStoreWriter  # noqa: E402

SPEC = StoreSpec(modality="bench", channels=("a",), tile_size=8, dtype="uint8", scale=(1.0,),
                 offset=(0.0,))


def key(i: int) -> str:
    return f"{i:016x}"  # like the adapters' hashed item keys


def old_design(path: Path, *, n: int, commits: int) -> float:
    """Seconds per commit when `state.done` (n entries) is rewritten into zarr.json."""
    group = zarr.open_group(str(path), mode="w")
    done = {key(i): 1 for i in range(n)}
    group.attrs.update({**SPEC.attrs(), "count": n, "state": {"done": done}})
    start = time.perf_counter()
    for c in range(commits):
        done[key(n + c)] = 1
        group.attrs.update({"count": n + c + 1, "state": {"done": done, "skipped": {},
                                                          "skipped_files": {},
                                                          "tiles_dropped": 0}})
    return (time.perf_counter() - start) / commits


def commit_log(path: Path, *, n: int, commits: int) -> tuple[float, float]:
    """(seconds per commit, seconds to re-open and replay) with n records in the log."""
    TileStoreWriter(path, SPEC, overwrite=True)
    with open(path / LOG_NAME, "wb") as f:
        for i in range(n):
            f.write(json.dumps({"count": 0, "record": {"key": key(i), "n": 0}},
                               separators=(",", ":")).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())  # else the first timed commit's fsync writes out the whole log
    start = time.perf_counter()
    writer = TileStoreWriter(path, SPEC)
    replay = time.perf_counter() - start
    assert len(writer.records) == n
    empty = np.zeros((0, 1, 8, 8), np.uint8)
    start = time.perf_counter()
    for c in range(commits):
        writer.append(empty, record={"key": key(n + c), "n": 0})
    return (time.perf_counter() - start) / commits, replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--commits", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_commit_"))
    rows = []
    try:
        for n in args.items:
            old = old_design(work / f"old_{n}.zarr", n=n, commits=args.commits)
            new, replay = commit_log(work / f"new_{n}.zarr", n=n, commits=args.commits)
            rows.append({"items_done": n, "old_ms_per_commit": round(old * 1e3, 3),
                         "log_ms_per_commit": round(new * 1e3, 3),
                         "old_over_log": round(old / new, 1),
                         "log_replay_on_open_s": round(replay, 3)})
            print(json.dumps(rows[-1]), flush=True)
        first, last = rows[0], rows[-1]
        print(json.dumps({
            "log_cost_growth_first_to_last": round(
                last["log_ms_per_commit"] / first["log_ms_per_commit"], 2),
            "old_cost_growth_first_to_last": round(
                last["old_ms_per_commit"] / first["old_ms_per_commit"], 1),
            "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
