"""Broken files inside DICOM series: every good slice kept, every bad file named by path on the
terminal and in the report beside the store, and no path inside the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.ct import MODALITY as CT
from domainclust.modalities.medical.mri import MODALITY as MRI
from medical_data import ct_series, grep_store, identifying_strings, ingest, pydicom_file
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.ingest import default_report_path
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

SMALL = {"spacing": None, "tile_size": 32, "max_background": 1.0}  # keep CT5N's 16 px slices


def cli_ingest(sources: list[Path], out: Path, *extra: str) -> str:
    """`domainclust ingest --modality ct` as a user runs it; returns stdout + stderr."""
    result = CliRunner().invoke(app, ["ingest", "--modality", "ct", *map(str, sources),
                                      "--out", str(out), "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def tiles_by_position(store: TileStore) -> dict[float, np.ndarray]:
    """Tiles keyed by (slice position, row, column): comparable across stores."""
    tiles = store.read(np.arange(store.n))
    keys = zip(store.meta("slice_position").tolist(), map(tuple, store.meta("position")[:, 1:]))
    return {(z, *yx): t for (z, yx), t in zip(keys, tiles)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> TileStore:
    """The 12-slice series ingested without any damage: 48 tiles."""
    root = tmp_path_factory.mktemp("clean")
    ct_series(root / "series")
    ingest(CT, [root / "series"], root / "s.zarr")
    store = TileStore(root / "s.zarr")
    assert store.n == 48
    return store


def test_a_truncated_slice_drops_only_that_slice(clean: TileStore, tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "series")
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[: len(data) // 2])
    output = cli_ingest([tmp_path / "series"], tmp_path / "s.zarr")
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == 44
    expected = tiles_by_position(clean)
    got = tiles_by_position(store)
    assert set(got) < set(expected)
    for key, tile in got.items():
        np.testing.assert_array_equal(tile, expected[key])
    assert f"{paths[5]}: is truncated: pixel data shorter than declared" in output
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    assert [s["path"] for s in report["skipped"]] == [str(paths[5])]
    assert grep_store(tmp_path / "s.zarr", {str(tmp_path), "s05", "series"}) == []


def test_a_slice_labelled_mr_is_left_out_of_a_ct_series(clean: TileStore, tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "series")
    ds = pydicom.dcmread(paths[5])
    ds.Modality = "MR"
    ds.save_as(paths[5])
    output = cli_ingest([tmp_path / "series"], tmp_path / "s.zarr")
    assert TileStore(tmp_path / "s.zarr").n == 44
    assert f"{paths[5]}: Modality is MR in a CT series: left out of it" in output


def test_a_slice_of_another_spacing_is_left_out_and_one_of_another_plane_stands_alone(
    tmp_path: Path,
) -> None:
    paths = ct_series(tmp_path / "series")
    ds = pydicom.dcmread(paths[3])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(paths[3])
    ds = pydicom.dcmread(paths[8])
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(paths[8])
    report = ingest(CT, [tmp_path / "series"], tmp_path / "s.zarr")
    assert report["tiles_written"] == 44 and report["items_read"] == 2  # 10 slices, and s03
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "s08.dcm": "its pixel spacing differs from the other 10 slices of the series: left out of "
                   "it",
    }


def mutants(good: Path, folder: Path, *, count: int, seed: int) -> list[Path]:
    """`count` damaged copies of real DICOM files (the good one among them), each unusable:
    truncated, emptied, header overwritten, pixel data cut, impossible image size."""
    rng = np.random.default_rng(seed)
    originals = [good, pydicom_file("MR_small.dcm"), pydicom_file("693_UNCR.dcm")]
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        source = originals[i % len(originals)]
        data = bytearray(source.read_bytes())
        kind = i % 5
        if kind == 0:  # a half-copied transfer
            data = data[: int(len(data) * rng.uniform(0.05, 0.9))]
        elif kind == 1:
            data = bytearray()
        elif kind == 2:  # garbage over the header's element lengths
            start = int(rng.integers(132, 600))
            data[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        elif kind == 3:  # the pixel data element cut short
            data = data[: len(data) - int(rng.integers(16, 4000))]
        else:  # Rows x Columns no pixel data can fill
            ds = pydicom.dcmread(source)
            ds.Rows, ds.Columns = 65535, 65535
            ds.save_as(folder / "tmp.dcm")
            data = bytearray((folder / "tmp.dcm").read_bytes())
            (folder / "tmp.dcm").unlink()
        path = folder / f"m{i:03d}.dcm"
        path.write_bytes(bytes(data))
        out.append(path)
    return out


def test_the_good_slice_among_80_damaged_copies_is_ingested(tmp_path: Path) -> None:
    good = pydicom_file("CT_small.dcm")
    ingest(CT, [good], tmp_path / "alone.zarr")
    alone = TileStore(tmp_path / "alone.zarr")
    bad = mutants(good, tmp_path / "in" / "damaged", count=80, seed=0)
    shutil.copy(good, tmp_path / "in" / "good.dcm")
    report = ingest(CT, [tmp_path / "in"], tmp_path / "s.zarr")
    store = TileStore(tmp_path / "s.zarr")
    assert store.n == alone.n > 0
    np.testing.assert_array_equal(store.read(np.arange(store.n)), alone.read(np.arange(alone.n)))
    named = {s["path"] for s in report["skipped"]}
    # MR_small copies that survived are MR: named too, as files the ct adapter does not read.
    assert named == {str(p) for p in bad}


def test_no_path_or_identifier_of_a_skipped_file_reaches_the_store(tmp_path: Path) -> None:
    folder = tmp_path / "DOE^JANE_1950" / "series"
    paths = ct_series(folder)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:1000])
    (folder / "DOE^JANE_notes.dcm").write_bytes(b"not dicom" * 50)
    out = tmp_path / "s.zarr"
    ingest(CT, [tmp_path / "DOE^JANE_1950"], out)
    needles = identifying_strings([paths[0]]) | {"DOE^JANE", "JANE_1950", str(tmp_path),
                                                 "s02.dcm", "notes.dcm"}
    assert grep_store(out, needles) == []
    report = json.loads(default_report_path(out).read_text())
    assert {s["path"] for s in report["skipped"]} == {str(paths[2]),
                                                      str(folder / "DOE^JANE_notes.dcm")}


def test_report_goes_where_asked(tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "series", slices=3)
    paths[1].write_bytes(b"")
    where = tmp_path / "reports" / "ct.json"
    where.parent.mkdir()
    output = cli_ingest([tmp_path / "series"], tmp_path / "s.zarr", "--report", str(where))
    assert str(where) in output
    assert not default_report_path(tmp_path / "s.zarr").exists()
    assert json.loads(where.read_text())["skipped"][0]["path"] == str(paths[1])


def test_resume_with_other_sources_is_refused_unless_added(tmp_path: Path) -> None:
    ct_series(tmp_path / "a", slices=4)
    shutil.copytree(pydicom_file("CT_small.dcm").parent / "dicomdirtests" / "98892001" / "CT5N",
                    tmp_path / "b")
    out = tmp_path / "s.zarr"
    first = ingest(CT, [tmp_path / "a"], out, **SMALL)
    with pytest.raises(DomainclustError, match=r"started from 1 item\(s\); these sources give 2 "
                                               r"\(1 new, 0 missing\).*--add"):
        ingest(CT, [tmp_path / "a", tmp_path / "b"], out, **SMALL)
    with pytest.raises(DomainclustError, match="1 new, 1 missing"):
        ingest(CT, [tmp_path / "b"], out, **SMALL)
    added = run_add(tmp_path / "b", out)
    assert added["tiles_written"] == first["tiles_written"] + 5
    store = TileStore(out)
    assert sorted(set(store.meta("source").tolist())) == [0, 1]
    again = ingest(CT, [tmp_path / "a", tmp_path / "b"], out, **SMALL)  # a plain resume
    assert again["tiles_written"] == added["tiles_written"]


def run_add(source: Path, out: Path) -> dict:
    from domainclust.data.ingest import run_ingest

    return run_ingest(CT.ingest.args[0], [source], out, options={**CT.defaults, **SMALL},
                      workers=1, progress=False, add=True)


def mr_echoes(folder: Path, *, positions: int, keyword: str, values: list) -> None:
    """pydicom's MR_small as one series with `positions` slices per value of `keyword`."""
    source = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    folder.mkdir()
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    for j, value in enumerate(values):
        for i in range(positions):
            ds = source.copy()
            ds.ImagePositionPatient = [x, y, z + 3.0 * i]
            setattr(ds, keyword, value)
            ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(i), str(j)])
            ds.PixelData = (source.pixel_array // (j + 1)).astype(
                source.pixel_array.dtype).tobytes()
            ds.save_as(folder / f"e{j}_{i}.dcm")


@pytest.mark.parametrize("keyword, values", [
    ("EchoTime", [10.0, 80.0]),
    ("TemporalPositionIdentifier", [1, 2, 3]),
    ("AcquisitionNumber", [1, 2]),
])
def test_echoes_and_phases_become_separate_volumes(tmp_path: Path, keyword: str,
                                                   values: list) -> None:
    mr_echoes(tmp_path / "in", positions=4, keyword=keyword, values=values)
    report = ingest(MRI, [tmp_path / "in"], tmp_path / "s.zarr", spacing=None, tile_size=32,
                    max_background=1.0)
    assert report["skipped"] == []
    assert report["items_read"] == len(values)
    assert report["tiles_written"] == 4 * 4 * len(values)  # 64 px slices: 4 tiles each


def test_acquisition_numbers_do_not_split_slices_that_stack(tmp_path: Path) -> None:
    # Some scanners number every slice's acquisition: that is one volume, not twelve.
    paths = ct_series(tmp_path / "series")
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.AcquisitionNumber = i + 1
        ds.save_as(path)
    report = ingest(CT, [tmp_path / "series"], tmp_path / "s.zarr", slab=3)
    assert report["items_read"] == 1 and report["tiles_written"] == 48
