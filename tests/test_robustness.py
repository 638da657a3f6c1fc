"""Ingest against damaged real files, and against kill -9 at random points.

The corpus (tests/corpus.py) mixes good files with mutants of them. Ingest must never trace
back or hang, must keep every good file's tiles exactly, and must name every file whose damage
a reader can notice. Each hostile case (tests/corpus_cases.py) ends as it expects, and each
harmful command is refused in one line, touching nothing. Killed mid-ingest and re-run, the store must equal an uninterrupted
ingest tile for tile.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from corpus import BUILDERS, MUST_BE_NAMED, run_corpus
from corpus_cases import CASES, REFUSALS, Case, Refusal, run_case, run_refusal
from medical_data import ct_series

from domainclust.data.store import TileStore

KILL_SECONDS = 120  # one run of the kill test's ingest takes seconds


def check(adapter: str, seed: int, tmp_path: Path) -> None:
    corpus = BUILDERS[adapter](tmp_path / "files", seed)
    outcome = run_corpus(corpus, tmp_path)
    assert outcome.traceback is None, outcome.traceback
    assert not outcome.hang
    assert outcome.good_tiles > 0 and outcome.good_tiles_lost == 0
    missed = [(m.path.name, m.kind) for m in outcome.unnamed if m.kind in MUST_BE_NAMED]
    assert missed == []


@pytest.mark.parametrize("adapter", sorted(BUILDERS))
def test_damaged_files_are_named_and_good_tiles_kept(adapter: str, tmp_path: Path) -> None:
    check(adapter, 0, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("adapter", sorted(BUILDERS))
def test_damaged_files_with_other_seeds(adapter: str, seed: int, tmp_path: Path) -> None:
    check(adapter, seed, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)
def test_a_hostile_input_ends_as_expected(case: Case, tmp_path: Path) -> None:
    """Named where it must be, tiles kept where they can be, never a traceback."""
    outcome = run_case(case, tmp_path)
    assert outcome.traceback is None, outcome.traceback
    assert outcome.ok, outcome.problem


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: r.kind)
def test_a_harmful_command_is_refused_in_one_line_touching_nothing(refusal: Refusal,
                                                                  tmp_path: Path) -> None:
    outcome = run_refusal(refusal, tmp_path)
    assert outcome.traceback is None, outcome.traceback
    assert outcome.refused and outcome.one_line, outcome.message
    assert outcome.untouched


def many_series(folder: Path, *, count: int) -> None:
    """`count` 3-slice CT series (distinct UIDs), so an ingest commits `count` times."""
    for i in range(count):
        paths = ct_series(folder / f"p{i:02d}", slices=3)
        uid = pydicom.uid.generate_uid(entropy_srcs=[f"kill-{i}"])
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = uid
            ds.save_as(path)


def ingest_command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "domainclust", "ingest", "--modality", "ct", str(source),
            "--out", str(out), "--quiet", "--set", "tile_size=32", "--set", "spacing=null"]


def committed(out: Path) -> int:
    """Tiles committed so far: the count of the last whole line of the store's commit log."""
    try:
        lines = (out / "commits.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["count"])
        except (ValueError, KeyError):
            continue  # a line half-written when the process was killed
    return 0


def kill_when(command: list[str], *, out: Path, tiles: int, extra_s: float) -> bool:
    """Run `command`; kill -9 its process group `extra_s` after `tiles` are committed.
    Returns whether it was killed (False: it finished first)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    start = time.monotonic()
    while proc.poll() is None and committed(out) < tiles:
        assert time.monotonic() - start < KILL_SECONDS, "ingest hangs"
        time.sleep(0.005)
    time.sleep(extra_s)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def arrays(out: Path) -> dict[str, np.ndarray]:
    store = TileStore(out)
    found = {"tiles": store.read(np.arange(store.n))}
    found.update({f"meta/{k}": store.meta(k) for k in store.group["meta"].array_keys()})
    return found


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_equals_an_uninterrupted_ingest(tmp_path: Path) -> None:
    many_series(tmp_path / "in", count=12)  # 16 tiles per slice: 48 per series
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(ingest_command(tmp_path / "in", tmp_path / "ref.zarr"), env=env, check=True,
                   capture_output=True, timeout=KILL_SECONDS)
    reference = arrays(tmp_path / "ref.zarr")
    total = len(reference["tiles"])
    rng = np.random.default_rng(0)
    out = tmp_path / "killed.zarr"
    kills = 0
    for _ in range(4):
        target = committed(out) + int(rng.integers(1, max(2, total // 6)))
        kills += kill_when(ingest_command(tmp_path / "in", out), out=out, tiles=target,
                           extra_s=float(rng.uniform(0.0, 0.05)))
    subprocess.run(ingest_command(tmp_path / "in", out), env=env, check=True,
                   capture_output=True, timeout=KILL_SECONDS)
    assert kills >= 3  # the kills landed inside the ingest
    resumed = arrays(out)
    assert resumed.keys() == reference.keys()
    for name, values in reference.items():
        np.testing.assert_array_equal(resumed[name], values, err_msg=name)
    where = np.column_stack([resumed["meta/source"], resumed["meta/position"]])
    assert len(np.unique(where, axis=0)) == total  # no tile twice
