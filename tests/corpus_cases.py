"""Hostile inputs with an expected outcome each, for the robustness corpus (tests/corpus.py).

A `Case` is a few files built from real package files or with the real libraries (pydicom,
nibabel, rasterio), ingested alone with the adapter's defaults (the size limits need the
resampler on): it must end as expected, with the file named in the report, its tiles kept,
or both, never with a traceback. A `Refusal` is a command that must be refused in one line
before it touches anything (the folder it names stays byte for byte as it was).
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import rasterio
from geotiff_data import make_scene, truncated_cog, write_raster
from medical_data import ct_series, nifti_with_header, pydicom_file
from PIL import Image
from pydicom.uid import generate_uid
from rasterio.windows import Window
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.ingest import default_report_path, run_ingest
from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

FILL = 3.4e38  # float32's largest finite value, a common fill


@dataclass
class Case:
    """Files of one hostile kind, and what ingesting them must give."""

    kind: str
    adapter: str
    build: Callable[[Path], list[Path]]  # writes the case's files into a folder; returns them
    named: list[int]  # indices of the returned files the report must name (others must not be)
    kept: bool  # whether tiles must come from the case's files
    options: dict[str, Any] = field(default_factory=dict)
    check: Callable[[TileStore], str | None] | None = None  # a further check of the store


@dataclass
class CaseOutcome:
    kind: str
    adapter: str
    files: int = 0
    named: int = 0
    undetected: int = 0  # files that had to be named and were not
    traceback: str | None = None
    hang: bool = False
    tiles: int = 0
    problem: str | None = None  # what differs from the expected outcome

    @property
    def ok(self) -> bool:
        return self.problem is None and self.traceback is None


def run_case(case: Case, work: Path) -> CaseOutcome:
    """Ingest the case's files alone and compare with what it expects."""
    files = case.build(work / "files")
    out = work / "store.zarr"
    outcome = CaseOutcome(case.kind, case.adapter, files=len(files))
    modality = get_modality(case.adapter)
    try:
        run_ingest(modality.ingest.args[0], [work / "files"], out,
                   options={**modality.defaults, **case.options}, workers=1, progress=False)
    except DomainclustError as exc:
        if "every item was skipped" not in str(exc):  # all skipped: the report says which
            outcome.traceback = f"DomainclustError: {exc}"
            return outcome
    except Exception:  # noqa: BLE001 - what the corpus looks for
        outcome.traceback = traceback.format_exc()
        return outcome
    report = json.loads(default_report_path(out).read_text())
    reported = {s["path"] for s in report["skipped"]}
    must = {str(files[i]) for i in case.named}
    outcome.named = len(reported & {str(f) for f in files})
    outcome.undetected = len(must - reported)
    outcome.tiles = int(report["tiles_written"])
    problems = []
    if outcome.undetected:
        problems.append(f"not named: {sorted(Path(p).name for p in must - reported)}")
    wrongly = reported - must
    if wrongly:
        problems.append(f"named but usable: {sorted(Path(p).name for p in wrongly)}")
    if case.kept and not outcome.tiles:
        problems.append("no tiles kept")
    if case.check is not None and outcome.tiles:
        found = case.check(TileStore(out))
        if found:
            problems.append(found)
    outcome.problem = "; ".join(problems) or None
    return outcome


# --- the cases -------------------------------------------------------------------------------

def _ct_wide_pixels(folder: Path) -> list[Path]:
    """pydicom's CT_small.dcm claiming 300 mm pixels: a 128 px slice of 38 m."""
    folder.mkdir(parents=True)
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PixelSpacing = [300, 300]
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["corpus-wide"])
    ds.save_as(folder / "wide.dcm")
    return [folder / "wide.dcm"]


def _nifti_metres(folder: Path) -> list[Path]:
    """nibabel's anatomical.nii whose units say metres (2 m voxels), beside the original."""
    return [nifti_with_header(folder / "metres.nii", xyzt_units=1),  # NIFTI_UNITS_METER
            nifti_with_header(folder / "good.nii")]


def _nifti2_long(folder: Path) -> list[Path]:
    """A NIfTI-2 header declaring 2x2x3 000 000 voxels of 1 mm (12 MB of data it lacks)."""
    folder.mkdir(parents=True)
    image = nib.Nifti2Image(np.ones((2, 2, 3), np.int16), affine=np.eye(4))
    image.header.set_xyzt_units(xyz="mm")
    nib.save(image, folder / "long.nii")
    data = bytearray((folder / "long.nii").read_bytes())
    header = nib.load(folder / "long.nii").header.copy()
    header["dim"][1:4] = (2, 2, 3_000_000)
    data[:540] = header.binaryblock
    (folder / "long.nii").write_bytes(bytes(data))
    return [folder / "long.nii", nifti_with_header(folder / "good.nii")]


def _nifti_zero_pixdim(folder: Path) -> list[Path]:
    return [nifti_with_header(folder / "zero.nii", sform_code=0,
                              pixdim=[-1, 2, 0, 2, 0, 0, 0, 0]),
            nifti_with_header(folder / "good.nii")]


def _ct_nifti_nan_background(folder: Path) -> list[Path]:
    """A CT NIfTI in HU whose corners outside the scan are NaN, as a resampler leaves them."""
    paths = ct_series(folder.parent / "dcm", slices=4)
    hu = np.stack([pydicom.dcmread(p).pixel_array * 1.0 - 1024.0 for p in paths], axis=-1)
    rows, cols = np.mgrid[0:hu.shape[0], 0:hu.shape[1]]
    outside = np.hypot(rows - 64, cols - 64) > 60
    hu[outside] = np.nan
    hu[~outside] = np.maximum(hu[~outside], -400.0)  # tissue, and a small air pocket
    hu[60:64, 60:64, :] = -1000.0  # (a sinus, 0.1 % of the voxels), as in a head CT
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu.astype(np.float32), np.diag([0.66, 0.66, 2.0, 1.0])),
             folder / "ct.nii.gz")
    return [folder / "ct.nii.gz"]


def _geotiff_huge_header(folder: Path) -> list[Path]:
    """A sparse GeoTIFF declaring 10^7 x 64 px (a few KB on disk), beside a good scene."""
    folder.mkdir(parents=True)
    make_scene(folder / "good.tif", seed=0, height=64, width=96, edge=0)
    with rasterio.open(folder / "good.tif") as src:
        profile = {**src.profile, "width": 10_000_000, "height": 64, "tiled": True,
                   "blockxsize": 256, "blockysize": 64, "sparse_ok": True}
        block = src.read()
    with rasterio.open(folder / "wide.tif", "w", **profile) as dst:
        dst.write(block, window=Window(0, 0, block.shape[2], block.shape[1]))
    return [folder / "wide.tif", folder / "good.tif"]


def _geotiff_fill_values(folder: Path) -> list[Path]:
    """A float32 scene (reflectance 0-1) with a few unflagged ±3.4e38 fill pixels."""
    folder.mkdir(parents=True)
    make_scene(folder.parent / "u16.tif", seed=3, height=128, width=128, edge=0)
    with rasterio.open(folder.parent / "u16.tif") as src:
        data = src.read().astype(np.float32) / 10000.0
        crs, transform = src.crs.to_string(), src.transform
    rng = np.random.default_rng(0)
    for sign in (1, -1):
        rows, cols = rng.integers(0, 128, size=(2, 20))
        data[:, rows, cols] = sign * FILL
    write_raster(folder / "float.tif", data, crs=crs, transform=transform, nodata=None)
    return [folder / "float.tif"]


def _bands_vary(store: TileStore) -> str | None:
    tiles = store.read(np.arange(store.n)).astype(np.float64)
    flat = [c for c in range(tiles.shape[1]) if np.ptp(tiles[:, c]) == 0]
    return f"one value in band(s) {flat}" if flat else None


def _geotiff_truncated(folder: Path) -> list[Path]:
    """A cloud-optimised GeoTIFF cut at 60 % of its bytes: the first tiles still decode."""
    folder.mkdir(parents=True)
    return [truncated_cog(folder / "cut.tif", keep=0.6)]


def _rgbd_bad_depth(folder: Path) -> list[Path]:
    """Two pairs of scikit-image's stereo motorcycle: one with a truncated depth PNG."""
    from skimage import data as skimage_data

    left, _, disparity = skimage_data.stereo_motorcycle()
    rgb = left[100:260, 200:440]
    depth = np.nan_to_num(disparity[100:260, 200:440], posinf=0.0) * 10
    for stem in ("good", "cut"):
        (folder / "rgb").mkdir(parents=True, exist_ok=True)
        (folder / "depth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / "rgb" / f"{stem}.png")
        Image.fromarray(depth.astype(np.uint16)).save(folder / "depth" / f"{stem}.png")
    cut = folder / "depth" / "cut.png"
    cut.write_bytes(cut.read_bytes()[:300])
    return [cut, folder / "rgb" / "cut.png", folder / "rgb" / "good.png"]


CT_SMALL = {"tile_size": 32, "max_background": 1.0}
CASES = [
    Case("ct_pixel_spacing_300", "ct", _ct_wide_pixels, named=[0], kept=False, options=CT_SMALL),
    Case("nifti_in_metres", "mri", _nifti_metres, named=[0], kept=True, options=CT_SMALL),
    Case("nifti2_2x2x3000000", "mri", _nifti2_long, named=[0], kept=True, options=CT_SMALL),
    Case("nifti_zero_pixdim", "mri", _nifti_zero_pixdim, named=[0], kept=True, options=CT_SMALL),
    Case("ct_nifti_nan_background", "ct", _ct_nifti_nan_background, named=[], kept=True,
         options={"spacing": None, "tile_size": 32}),
    Case("geotiff_10^7x64_px", "geotiff", _geotiff_huge_header, named=[0], kept=True),
    Case("geotiff_float32_fill", "geotiff", _geotiff_fill_values, named=[], kept=True,
         options={"tile_size": 32}, check=_bands_vary),
    Case("geotiff_truncated_cog", "geotiff", _geotiff_truncated, named=[0], kept=True,
         options={"tile_size": 32}),
    Case("rgbd_bad_depth_map", "rgbd", _rgbd_bad_depth, named=[0], kept=True,
         options={"tile_size": 32}),
]


# --- refusals --------------------------------------------------------------------------------

@dataclass
class Refusal:
    """A command that must be refused: `build(root)` writes what it needs and returns the
    arguments and the folder that must stay byte-identical (or None)."""

    kind: str
    build: Callable[[Path], tuple[list[str], Path | None]]
    says: str  # the refusal's message contains this


@dataclass
class RefusalOutcome:
    kind: str
    refused: bool = False
    one_line: bool = False
    untouched: bool = True
    traceback: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.refused and self.one_line and self.untouched and self.traceback is None


def snapshot(folder: Path | None) -> dict[str, str]:
    if folder is None or not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CT_ARGS = ["--set", "spacing=null", "--set", "tile_size=32", "--set", "max_background=1.0"]


def _ingest_args(series: Path, out: Path, *extra: str) -> list[str]:
    return ["ingest", "--modality", "ct", str(series), "--out", str(out), "--quiet", *CT_ARGS,
            *extra]


def _series(root: Path) -> Path:
    ct_series(root / "series", slices=3)
    return root / "series"


def _out_existing_folder(root: Path) -> tuple[list[str], Path | None]:
    notes = root / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "todo.txt").write_text("keep me")
    (notes / "sub" / "scan.bin").write_bytes(os.urandom(64))
    return _ingest_args(_series(root), notes), notes


def _out_inside_source(root: Path) -> tuple[list[str], Path | None]:
    series = _series(root)
    return _ingest_args(series, series / "store.zarr"), series


def _out_is_a_file(root: Path) -> tuple[list[str], Path | None]:
    series = _series(root)
    (root / "keep").mkdir()
    (root / "keep" / "store.zarr").write_text("a file")
    return _ingest_args(series, root / "keep" / "store.zarr"), root / "keep"


def _report_is_a_folder(root: Path) -> tuple[list[str], Path | None]:
    (root / "reports").mkdir()
    return _ingest_args(_series(root), root / "s.zarr", "--report", str(root / "reports")), (
        root / "reports")


def _ingested(root: Path) -> tuple[Path, Path]:
    series = _series(root)
    result = CliRunner().invoke(app, _ingest_args(series, root / "s.zarr"))
    assert result.exit_code == 0, result.output
    return series, root / "s.zarr"


def _add_with_other_options(root: Path) -> tuple[list[str], Path | None]:
    series, out = _ingested(root)
    more = root / "more"
    ct_series(more, slices=3, step_mm=3.0)
    return ["ingest", "--modality", "ct", str(series), str(more), "--out", str(out), "--add",
            "--quiet", *CT_ARGS[:2], "--set", "tile_size=48", *CT_ARGS[4:]], out


def _pretrain_other_tile_size(root: Path) -> tuple[list[str], Path | None]:
    _, out = _ingested(root)
    return ["pretrain", "--store", str(out), "--run-dir", str(root / "run"), "--quiet",
            "--set", "tile_size=48", "--set", "k=2"], out


def _pretrain_negative_k(root: Path) -> tuple[list[str], Path | None]:
    _, out = _ingested(root)
    return ["pretrain", "--store", str(out), "--run-dir", str(root / "run"), "--quiet",
            "--set", "k=-1"], out


REFUSALS = [
    Refusal("out_existing_folder", _out_existing_folder, "not a TileStore"),
    Refusal("out_inside_source", _out_inside_source, "is inside the source"),
    Refusal("out_is_a_file", _out_is_a_file, "is a file, not a TileStore"),
    Refusal("report_is_a_folder", _report_is_a_folder, "is a folder; give a file path"),
    Refusal("add_with_other_options", _add_with_other_options,
            "was ingested with tile_size=32; this run asks for tile_size=48"),
    Refusal("pretrain_other_tile_size", _pretrain_other_tile_size,
            "differs from the store's 32 px tiles"),
    Refusal("pretrain_k_negative", _pretrain_negative_k, "cluster.k must be at least 1"),
]


def run_refusal(refusal: Refusal, work: Path) -> RefusalOutcome:
    """Run the command in this process (as `main` does, minus the exit) and check it."""
    outcome = RefusalOutcome(refusal.kind)
    args, keep = refusal.build(work)
    before = snapshot(keep)
    result = CliRunner().invoke(app, args)
    error = result.exception
    if isinstance(error, DomainclustError):
        outcome.message = str(error)
        outcome.refused = refusal.says in outcome.message
        outcome.one_line = "\n" not in outcome.message
    elif error is not None and not isinstance(error, SystemExit):
        outcome.traceback = "".join(traceback.format_exception(error))
    else:
        outcome.message = result.output.strip()
    outcome.untouched = snapshot(keep) == before
    return outcome


def cases_table(cases: list[CaseOutcome], refusals: list[RefusalOutcome]) -> list[str]:
    """The cases as rows of the corpus table, then the refusals."""
    lines = []
    for o in cases:
        lines.append(f"{o.adapter:8s} {o.kind:26s} {o.files:5d} {o.named:5d} {o.undetected:10d} "
                     f"{int(o.traceback is not None):10d} {int(o.hang):5d} {'-':>16s}  "
                     f"{'ok' if o.ok else 'FAIL: ' + (o.problem or 'traceback')}")
    lines.append("")
    lines.append(f"{'refusal':30s} {'refused':>7s} {'one line':>8s} {'untouched':>9s}  outcome")
    for r in refusals:
        lines.append(f"{r.kind:30s} {int(r.refused):7d} {int(r.one_line):8d} "
                     f"{int(r.untouched):9d}  "
                     f"{'ok' if r.ok else 'FAIL: ' + (r.traceback or r.message)[:200]}")
    return lines
