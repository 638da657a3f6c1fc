"""Ingest never mixes, never dies on one file: options in the store's identity, size limits up
front, and any reader failure on one item a named skip.

Bad files are real small files (pydicom's CT, nibabel's NIfTI) with rewritten headers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from domainclust.modalities.medical.ct import MODALITY as CT
from domainclust.modalities.medical.mri import MODALITY as MRI
from medical_data import NIBABEL_DATA, ct_series, ingest, pydicom_file

from domainclust.data.ingest import run_ingest
from domainclust.data.ingest_item import SourceItem, TileBatch
from domainclust.data.salt import config_dir, installation_salt, salt_id
from domainclust.data.store import StoreSpec, TileStore
from domainclust.errors import DomainclustError

SMALL = {"spacing": None, "tile_size": 32, "max_background": 1.0}


def test_resume_and_add_with_other_options_are_refused_naming_them(tmp_path: Path) -> None:
    ct_series(tmp_path / "a", slices=3)
    ct_series(tmp_path / "b", slices=2, step_mm=3.0)
    out = tmp_path / "s.zarr"
    first = ingest(CT, [tmp_path / "a"], out, **SMALL)
    with pytest.raises(DomainclustError, match=r"spacing=null; this run asks for spacing=2\.0"):
        ingest(CT, [tmp_path / "a"], out, **{**SMALL, "spacing": 2.0})
    windows = {"brain": [80, 40], "soft_tissue": [400, 40], "bone": [1800, 400]}
    with pytest.raises(DomainclustError, match=r"windows=\{.*lung.*this run asks for windows=.*"
                                               r"brain"):
        run_ingest(CT.ingest.args[0], [tmp_path / "b"], out, add=True, workers=1,
                   progress=False, options={**CT.defaults, **SMALL, "windows": windows})
    assert TileStore(out).n == first["tiles_written"]  # nothing was written by either
    again = ingest(CT, [tmp_path / "a"], out, **SMALL)  # the same options resume
    assert again["tiles_written"] == first["tiles_written"]
    stored = json.loads((out / "zarr.json").read_text())["attributes"]["ingest_options"]
    assert stored["spacing"] is None and "salt" not in stored  # the salt never enters a store
    assert stored["salt_id"] == salt_id(installation_salt())


def item_keys(store: Path) -> list[str]:
    return json.loads((store / "zarr.json").read_text())["attributes"]["items"]


def test_item_keys_take_a_random_salt_made_once_per_installation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ct_series(tmp_path / "a", slices=3)
    first = tmp_path / "first.zarr"
    ingest(CT, [tmp_path / "a"], first, **SMALL)
    salt_file = config_dir() / "salt"
    assert salt_file.stat().st_mode & 0o777 == 0o600 and len(installation_salt()) == 32
    ingest(CT, [tmp_path / "a"], tmp_path / "again.zarr", **SMALL)
    assert item_keys(tmp_path / "again.zarr") == item_keys(first)  # the same salt, kept
    ingest(CT, [tmp_path / "a"], tmp_path / "given.zarr", **SMALL, salt="my own")
    assert set(item_keys(tmp_path / "given.zarr")).isdisjoint(item_keys(first))

    monkeypatch.setenv("DOMAINCLUST_CONFIG_DIR", str(tmp_path / "other-installation"))
    assert installation_salt() != salt_file.read_text().strip()  # a new random one there
    with pytest.raises(DomainclustError, match="another key salt"):
        ingest(CT, [tmp_path / "a"], first, **SMALL)  # a resume elsewhere would re-add it all
    assert TileStore(first).n > 0 and item_keys(first)


def nifti_copy(path: Path, *, shape: tuple[int, ...] | None = None,
               zooms: tuple[float, ...] | None = None, unit: str = "mm",
               two: bool = False) -> Path:
    """nibabel's real `anatomical.nii` (or a block of its voxels, tiled to `shape`) with a
    rewritten header."""
    image = nib.load(NIBABEL_DATA / "anatomical.nii")
    data = np.asarray(image.dataobj, dtype=np.float32)
    if shape is not None:
        data = np.resize(data, shape)
    kind = nib.Nifti2Image if two else nib.Nifti1Image
    out = kind(data, affine=None)
    out.header.set_zooms(zooms or image.header.get_zooms()[:3])
    out.header.set_xyzt_units(xyz=unit)
    out.set_qform(out.header.get_base_affine(), code=1)
    nib.save(out, path)
    return path


def test_volumes_too_large_once_resampled_are_skipped_named_before_allocating(
        tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    nifti_copy(src / "metres.nii", unit="meter")  # 1 m voxels: 64 000 px slices
    nifti_copy(src / "long.nii", shape=(2, 2, 3_000_000), zooms=(1.0, 1.0, 1.0), two=True)
    good = nifti_copy(src / "good.nii")
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PixelSpacing = [300, 300]  # a 128 px slice of 38 m
    ds.save_as(tmp_path / "wide.dcm")
    report = ingest(MRI, [src], tmp_path / "s.zarr", max_background=1.0)
    named = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(named) == {"metres.nii", "long.nii"}
    assert "above max_voxels=1000000000" in named["metres.nii"]
    assert "3000000x64x64 voxels" in named["long.nii"]
    assert report["items_read"] == 1 and Path(good).exists()
    with pytest.raises(DomainclustError, match="every item was skipped"):
        ingest(CT, [tmp_path / "wide.dcm"], tmp_path / "ct.zarr")
    report = json.loads((tmp_path / "ct.zarr.ingest-report.json").read_text())
    (entry,) = report["skipped"]
    assert entry["path"].endswith("wide.dcm") and "38400x38400 voxels" in entry["reason"]


class FailsOnOne:
    """A real adapter of one-tile items; the item named `bad` fails the way a decoder does."""

    def discover(self, sources: list[Path], options: dict[str, Any]) -> list[SourceItem]:
        return [SourceItem(key=p.name, paths=[p]) for p in sources]

    def spec(self, items: list[SourceItem], options: dict[str, Any]) -> StoreSpec:
        return StoreSpec(modality="test", channels=("v",), tile_size=8, dtype="uint8",
                         scale=(1 / 255,), offset=(0.0,))

    def has_labels(self, items: list[SourceItem], options: dict[str, Any]) -> bool:
        return False

    def read(self, item: SourceItem, options: dict[str, Any]) -> TileBatch:
        data = np.frombuffer(item.paths[0].read_bytes(), dtype=np.uint8)
        if item.paths[0].name.startswith("bad"):
            np.empty(2**62, dtype=np.uint8)  # MemoryError, as a header asking for 4 EB does
        return TileBatch(tiles=np.resize(data, (1, 1, 8, 8)))


@pytest.mark.parametrize("workers", [1, 2])
def test_one_failing_file_is_a_named_skip_and_the_run_goes_on(tmp_path: Path,
                                                              workers: int) -> None:
    files = []
    for name in ("a.bin", "bad.bin", "c.bin"):
        (tmp_path / name).write_bytes(bytes(range(64)))
        files.append(tmp_path / name)
    report = run_ingest(FailsOnOne(), files, tmp_path / "s.zarr", options={}, workers=workers,
                        progress=False)
    assert report["tiles_written"] == 2
    (entry,) = report["skipped"]
    assert entry["path"] == str(files[1]) and "MemoryError" in entry["reason"]


def test_a_geotiff_declaring_ten_million_columns_is_refused_up_front(tmp_path: Path) -> None:
    import geotiff_data as gd
    import rasterio
    from domainclust.modalities.geo.geotiff import MODALITY as GEO
    from rasterio.windows import Window

    gd.make_scene(tmp_path / "good.tif", seed=0, height=64, width=96, edge=0)
    with rasterio.open(tmp_path / "good.tif") as src:
        profile = {**src.profile, "width": 10_000_000, "height": 64, "count": 1,
                   "tiled": True, "blockxsize": 256, "blockysize": 64, "sparse_ok": True}
        band = src.read(1)
    with rasterio.open(tmp_path / "wide.tif", "w", **profile) as dst:  # sparse: a few KB
        dst.write(band[None], window=Window(0, 0, band.shape[1], band.shape[0]))
    report = GEO.ingest([tmp_path / "good.tif", tmp_path / "wide.tif"], tmp_path / "s.zarr",
                        options={**GEO.defaults}, workers=1, progress=False)
    (entry,) = report["skipped"]
    assert entry["path"].endswith("wide.tif")
    assert "10000000x64 px: 156250 tiles of 64 px, above max_scene_tiles=100000" in entry["reason"]
    assert report["tiles_written"] == 1


def test_nan_background_of_a_ct_nifti_is_air_not_a_reason_to_refuse(tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "dcm", slices=4)
    hu = np.stack([pydicom.dcmread(p).pixel_array * 1.0 - 1024.0 for p in paths], axis=-1)
    hu = hu.astype(np.float32)
    rows, cols = np.mgrid[0:hu.shape[0], 0:hu.shape[1]]
    outside = np.hypot(rows - 64, cols - 64) > 60  # a resampled scan's corners, as NaN
    hu[outside] = np.nan
    hu[~outside] = np.maximum(hu[~outside], -400.0)  # tissue, and a small air pocket (a
    hu[60:64, 60:64, :] = -1000.0  # sinus: 0.1 % of the voxels) as in a head CT
    image = nib.Nifti1Image(hu, affine=np.diag([0.66, 0.66, 2.0, 1.0]))
    nib.save(image, tmp_path / "ct.nii.gz")
    report = ingest(CT, [tmp_path / "ct.nii.gz"], tmp_path / "s.zarr", spacing=None,
                    tile_size=32, max_background=0.5)
    assert report["skipped"] == [] and report["tiles_written"] > 0
    assert report["tiles_dropped"] > 0  # corner tiles, mostly NaN, are background
