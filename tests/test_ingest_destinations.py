"""Ingest never destroys data: it writes only into a new folder or a store it made, never inside
its sources, and one writer at a time holds a store (a crashed holder's lock is taken over)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from medical_data import ct_series
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.lock import StoreLock, lock_path
from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.errors import DomainclustError

CT_SMALL = ["--set", "spacing=null", "--set", "tile_size=32", "--set", "max_background=1.0"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` by relative path, with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_ingest_cli(sources: list[Path], out: Path, *extra: str) -> tuple[int, str]:
    """`domainclust ingest --modality ct` in this process: exit code 2 and the message for a
    refusal (what `main` prints as `error: ...`), as for a user."""
    result = CliRunner().invoke(app, ["ingest", "--modality", "ct", *map(str, sources),
                                      "--out", str(out), "--quiet", *CT_SMALL, *extra])
    if isinstance(result.exception, DomainclustError):
        return 2, result.output + str(result.exception)
    return result.exit_code, result.output


def store_tiles(path: Path) -> np.ndarray:
    store = TileStore(path)
    return store.read(np.arange(store.n))


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scans") / "series"
    ct_series(folder, slices=6)
    return folder


@pytest.fixture(scope="module")
def lone(series: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The tiles of an ingest that ran alone."""
    out = tmp_path_factory.mktemp("lone") / "s.zarr"
    code, output = run_ingest_cli([series], out)
    assert code == 0, output
    return store_tiles(out)


def test_an_existing_folder_that_is_not_a_store_is_left_byte_identical(
    series: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "todo.txt").write_text("keep me")
    (notes / "sub" / "scan.bin").write_bytes(os.urandom(256))
    before = snapshot(notes)
    code, output = run_ingest_cli([series], notes)
    assert code == 2 and "not a TileStore" in output and "todo.txt" in output
    assert snapshot(notes) == before and sorted(p.name for p in notes.iterdir()) == ["sub",
                                                                                  "todo.txt"]


def test_out_inside_or_equal_to_a_source_is_refused_and_the_scans_survive(
    series: Path, tmp_path: Path
) -> None:
    before = snapshot(series)
    for out in (series, series / "s.zarr"):
        code, output = run_ingest_cli([series], out)
        assert code == 2 and "inside the source" in output, output
    assert snapshot(series) == before and not (series / "s.zarr").exists()


def test_a_file_or_a_foreign_zarr_store_is_refused_and_kept(series: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "out.zarr"
    a_file.write_text("not a folder")
    code, output = run_ingest_cli([series], a_file)
    assert code == 2 and "is a file" in output and a_file.read_text() == "not a folder"
    foreign = tmp_path / "theirs.zarr"
    zarr.open_group(str(foreign), mode="w").create_array("x", shape=(3,), dtype="uint8")
    before = snapshot(foreign)
    code, output = run_ingest_cli([series], foreign)
    assert code == 2 and "did not write" in output and snapshot(foreign) == before


def test_an_empty_folder_and_a_new_path_under_new_folders_are_written(
    series: Path, lone: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "a" / "b" / "s.zarr"):
        code, output = run_ingest_cli([series], out)
        assert code == 0, output
        assert np.array_equal(store_tiles(out), lone)
        assert not lock_path(out).exists()  # released when the ingest ended


def test_a_report_path_that_is_a_folder_is_refused_before_any_tile_is_written(
    series: Path, tmp_path: Path
) -> None:
    code, output = run_ingest_cli([series], tmp_path / "s.zarr", "--report", str(tmp_path))
    assert code == 2 and "is a folder" in output and not (tmp_path / "s.zarr").exists()


HOLD = """
import sys, time
from pathlib import Path
from domainclust.data.lock import StoreLock
lock = StoreLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(
    series: Path, lone: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "s.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = run_ingest_cli([series], out)
        assert code == 2 and f"pid {holder.pid}" in output and "another process" in output
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the file stays behind
        holder.wait()
    assert lock_path(out).exists()
    code, output = run_ingest_cli([series], out)
    assert code == 0, output
    assert np.array_equal(store_tiles(out), lone) and not lock_path(out).exists()


INGEST = """
import sys
from domainclust.cli import main
sys.argv = ["domainclust", "ingest", "--modality", "ct", sys.argv[1], "--out", sys.argv[2],
            "--quiet", *sys.argv[3:]]
main()
"""


def test_two_ingests_at_once_leave_the_store_of_a_lone_ingest(
    series: Path, lone: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "s.zarr"
    runs = [subprocess.Popen([sys.executable, "-c", INGEST, str(series), str(out), *CT_SMALL],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [(run.wait(timeout=300), run.stdout.read()) for run in runs]
    for code, output in outputs:  # the later one is refused, or resumes a finished store
        assert code == 0 or (code == 2 and "another process" in output), output
    assert np.array_equal(store_tiles(out), lone)


def spec() -> StoreSpec:
    return StoreSpec(modality="test", channels=("a",), tile_size=4, dtype="uint8",
                     scale=(1.0,), offset=(0.0,))


def test_a_writer_holds_the_lock_until_it_finishes_or_closes(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    first = TileStoreWriter(path, spec())
    with pytest.raises(DomainclustError, match="another process"):
        TileStoreWriter(path, spec())
    with pytest.raises(DomainclustError, match="another process"):
        StoreLock(path).acquire()
    first.append(np.ones((2, 1, 4, 4), np.uint8))
    first.close()  # interrupted: resumable by the next writer
    second = TileStoreWriter(path, spec())
    assert second.count == 2
    second.finish()
    assert not lock_path(path).exists() and TileStore(path).n == 2


def test_overwrite_replaces_only_a_store_of_ours(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(DomainclustError, match="not a TileStore"):
        TileStoreWriter(folder, spec(), overwrite=True)
    assert (folder / "keep.txt").read_text() == "x"
    ours = TileStoreWriter(tmp_path / "s.zarr", spec())
    ours.append(np.ones((3, 1, 4, 4), np.uint8))
    ours.finish()
    again = TileStoreWriter(tmp_path / "s.zarr", spec(), overwrite=True)
    assert again.count == 0
    again.close()


def test_a_lock_left_by_a_finished_holder_is_never_shared(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    a = StoreLock(path)
    a.acquire()
    a.release()
    b, c = StoreLock(path), StoreLock(path)
    b.acquire()
    with pytest.raises(DomainclustError, match=f"pid {os.getpid()}"):
        c.acquire()
    b.release()
    c.acquire()
    assert c.held
    c.release()
