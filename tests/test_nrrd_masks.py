"""NRRD volumes and per-pixel masks for the ct/mri adapters, on crops of pyradiomics' real lung CT
and brain MR with their tumour masks; geometry checked against MONAI's NrrdReader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from domainclust.modalities.medical.ct import MODALITY as CT
from domainclust.modalities.medical.nrrd import load_nrrd
from medical_data import crop_nrrd, ingest, pyradiomics_dir, reasons

from domainclust.data.ingest import default_report_path
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

# lung2: 512x512x61 at 0.627 mm x 5 mm; its tumour spans x 318-404, y 333-398, z 15-25.
BOX = (slice(300, 412), slice(320, 416), slice(17, 21))
OPTIONS = {"tile_size": 32, "stride": 16, "spacing": 1.0, "max_background": 1.0}


@pytest.fixture(scope="module")
def lung_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a 112x96x4 crop of lung2 and its mask, named as pyradiomics names them."""
    data = pyradiomics_dir()
    folder = tmp_path_factory.mktemp("lung")
    for kind in ("image", "label"):
        crop_nrrd(data / f"lung2_{kind}.nrrd", folder / f"lung2_{kind}.nrrd", box=BOX)
    return folder


def nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(Z, Y, X) → (Z, *shape) by nearest neighbour at pixel centres, written out here."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * mask.shape[1] / shape[0]).astype(int),
                      mask.shape[1] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * mask.shape[2] / shape[1]).astype(int),
                      mask.shape[2] - 1)
    return mask[:, rows][:, :, cols]


def expected_masks(label: Path, store: TileStore) -> np.ndarray:
    """Each stored tile's mask cut from the label file itself: LPS with positive directions is
    already (x left, y posterior, z superior), so the axial (slice, row, column) volume is the
    file's axes reversed; then resampled to 1 mm and cut at the tile origins."""
    raw, header = nrrd.read(str(label), index_order="F")
    spacing = np.abs(np.diag(header["space directions"]))
    axial = raw.transpose(2, 1, 0)
    shape = (round(axial.shape[1] * spacing[1]), round(axial.shape[2] * spacing[0]))
    resampled = nearest(axial, shape)
    t = store.tile_size
    return np.stack([resampled[z, y:y + t, x:x + t] for z, y, x in store.meta("position")])


def test_nrrd_geometry_matches_monai_reader() -> None:
    """Every voxel of the axial volume sits where MONAI's NrrdReader (LPS → RAS) puts it;
    brain1 stores its second axis anterior-going, so the reader has to flip it."""
    from monai.data import NrrdReader

    path = pyradiomics_dir() / "brain1_image.nrrd"
    volume = load_nrrd(path, max_volumes=1)[0]
    reader = NrrdReader()
    data, meta = reader.get_data(reader.read(str(path)))
    affine = np.asarray(meta["affine"], dtype=np.float64)
    assert volume.values.shape == (25, 256, 256)
    assert volume.spacing == pytest.approx((6.5, 0.78125, 0.78125))
    rng = np.random.default_rng(0)
    zrc = rng.integers(0, volume.values.shape, size=(200, 3))
    world = volume.affine @ np.c_[zrc[:, 1], zrc[:, 2], zrc[:, 0], np.ones(len(zrc))].T
    ijk = np.rint(np.linalg.inv(affine) @ world)[:3].astype(int)
    assert np.array_equal(volume.values[zrc[:, 0], zrc[:, 1], zrc[:, 2]], data[tuple(ijk)])
    # Rows run anterior → posterior, columns right → left, slices inferior → superior (RAS+).
    assert volume.affine[1, 0] < 0 and volume.affine[0, 1] < 0 and volume.affine[2, 2] > 0
    assert np.all(np.diff(volume.slice_positions) > 0)


def test_masks_pair_by_name_resample_nearest_and_label_tiles(lung_crop: Path,
                                                             tmp_path: Path) -> None:
    report = ingest(CT, [lung_crop], tmp_path / "s.zarr", masks=str(lung_crop), **OPTIONS)
    store = TileStore(tmp_path / "s.zarr")
    assert report["skipped"] == [] and store.has_masks and store.has_labels
    assert len(np.unique(store.meta("source"))) == 1  # the label file is no image
    masks = store.read_masks(np.arange(store.n))
    expected = expected_masks(lung_crop / "lung2_label.nrrd", store)
    assert np.array_equal(masks, expected)
    share = (expected > 0).mean(axis=(1, 2))
    assert np.array_equal(store.labels, (share >= 0.1).astype(np.int64))
    assert set(np.unique(store.labels)) == {0, 1}
    image = ingest(CT, [lung_crop / "lung2_image.nrrd"], tmp_path / "plain.zarr", **OPTIONS)
    assert image["skipped"] == []
    assert np.array_equal(TileStore(tmp_path / "plain.zarr").read(np.arange(store.n)),
                          store.read(np.arange(store.n)))  # masks change no image tile


def test_detached_header_reads_as_the_attached_file(lung_crop: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nhdr"
    crop_nrrd(pyradiomics_dir() / "lung2_image.nrrd", folder / "lung2.nhdr", box=BOX,
              detached=True)
    assert sorted(p.suffix for p in folder.iterdir()) == [".nhdr", ".raw"]
    report = ingest(CT, [folder], tmp_path / "d.zarr", **OPTIONS)
    ingest(CT, [lung_crop / "lung2_image.nrrd"], tmp_path / "a.zarr", **OPTIONS)
    detached, attached = TileStore(tmp_path / "d.zarr"), TileStore(tmp_path / "a.zarr")
    assert report["skipped"] == []  # the raw data file is not reported as an unreadable image
    assert detached.n == attached.n > 0
    every = np.arange(detached.n)
    assert np.array_equal(detached.read(every), attached.read(every))


@pytest.mark.parametrize("change", ["shifted", "fewer slices"])
def test_a_mask_on_another_grid_is_refused_naming_both_files(tmp_path: Path, change: str) -> None:
    data = pyradiomics_dir()
    folder = tmp_path / "in"
    image = crop_nrrd(data / "lung2_image.nrrd", folder / "lung2_image.nrrd", box=BOX)
    box = BOX if change == "shifted" else (*BOX[:2], slice(17, 20))
    mask = crop_nrrd(data / "lung2_label.nrrd", folder / "lung2_label.nrrd", box=box,
                     shift_mm=(2.5, 0.0, 0.0) if change == "shifted" else (0.0, 0.0, 0.0))
    with pytest.raises(DomainclustError, match="wrote no tiles"):
        ingest(CT, [folder], tmp_path / "s.zarr", masks=str(folder), **OPTIONS)
    report = json.loads(default_report_path(tmp_path / "s.zarr").read_text())
    assert sorted(s["path"] for s in report["skipped"]) == sorted([str(image), str(mask)])
    why = "origins are 2.5 mm apart" if change == "shifted" else "grid of 112x96x3 voxels"
    assert all(why in r and "does not match the image's" in r for r in reasons(report))


def test_a_csv_pairs_a_nifti_mask_and_ignore_marks_unlabelled_pixels(lung_crop: Path,
                                                                      tmp_path: Path) -> None:
    """The mask as NIfTI, written on MONAI's RAS affine of the image, under another name;
    voxels of value 7 are unlabelled."""
    from monai.data import NrrdReader

    reader = NrrdReader()
    _, meta = reader.get_data(reader.read(str(lung_crop / "lung2_image.nrrd")))
    label, _ = nrrd.read(str(lung_crop / "lung2_label.nrrd"), index_order="F")
    label = label.astype(np.int16)
    label[:40, :, 0] = 7  # the first 40 columns of the first slice: not labelled
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(label, np.asarray(meta["affine"])),
             tmp_path / "masks" / "tumour.nii.gz")
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        csv.writer(f).writerows([["image", "mask"],
                                 [str(lung_crop / "lung2_image.nrrd"), "masks/tumour.nii.gz"]])
    report = ingest(CT, [lung_crop / "lung2_image.nrrd"], tmp_path / "s.zarr", masks=str(pairs),
                    ignore=7, **OPTIONS)
    store = TileStore(tmp_path / "s.zarr")
    assert report["skipped"] == []
    masks = store.read_masks(np.arange(store.n))
    marked = label.copy()
    marked[marked == 7] = -1
    (tmp_path / "ref").mkdir()
    nrrd.write(str(tmp_path / "ref" / "m.nrrd"), marked,
               nrrd.read_header(str(lung_crop / "lung2_label.nrrd")), index_order="F")
    expected = expected_masks(tmp_path / "ref" / "m.nrrd", store)
    assert np.array_equal(masks == store.mask_ignore, expected == -1) and (expected == -1).any()
    assert np.array_equal(masks, expected)
    labelled = (expected >= 0).sum(axis=(1, 2))
    share = (expected > 0).sum(axis=(1, 2)) / np.maximum(labelled, 1)
    assert np.array_equal(store.labels, np.where(labelled == 0, -1, share >= 0.1))


def test_images_without_a_mask_and_masks_without_an_image_are_reported(lung_crop: Path,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_image.nrrd").write_bytes((lung_crop / "lung2_image.nrrd").read_bytes())
    (folder / "b_label.nrrd").write_bytes((lung_crop / "lung2_label.nrrd").read_bytes())
    for name in ("lung2_image.nrrd", "lung2_label.nrrd"):  # one good pair beside them
        (folder / name).write_bytes((lung_crop / name).read_bytes())
    report = ingest(CT, [folder], tmp_path / "s.zarr", masks=str(folder), **OPTIONS)
    by_path = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert by_path.keys() == {"a_image.nrrd", "b_label.nrrd"}
    assert "no mask pairs with it" in by_path["a_image.nrrd"]
    assert "no image pairs with it" in by_path["b_label.nrrd"]
