"""Readers of the reference layouts on tiny fixtures in the real layouts (real JPEGs, a real
MATLAB meta.mat), and their ingest into labelled stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from reference_data import (
    PLACES,
    WNIDS,
    write_flickr,
    write_imagenet,
    write_places365,
    write_voc2007,
    write_voc2012,
)

from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation.voc.layout import read_voc
from domainclust.replication.datasets import prepare_store
from domainclust.replication.layouts import (
    image_folder,
    imagenet,
    places365,
    read_devkit_meta,
    read_voc_mask,
    voc2007,
    voc2012,
    voc2012_segmentation,
)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("ref") / "ILSVRC2012", n_classes=3)


def test_imagenet_train_labels_are_sorted_wnid_indices(imagenet_root: Path) -> None:
    train = imagenet(imagenet_root, "train")
    assert train.classes == WNIDS[:3]
    assert len(train) == 12
    for path, label in zip(train.paths, train.labels, strict=True):
        assert path.parent.name == WNIDS[label]


def test_imagenet_val_labels_come_from_the_devkit(imagenet_root: Path) -> None:
    meta = read_devkit_meta(imagenet_root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat")
    assert meta == {3: WNIDS[0], 2: WNIDS[1], 1: WNIDS[2]}  # the inner synset is left out
    val = imagenet(imagenet_root, "val")
    # The fixture writes val images class by class in turn: 0, 1, 2, 0, 1, 2.
    assert list(val.labels) == [0, 1, 2, 0, 1, 2]
    assert val.paths[0].name == "ILSVRC2012_val_00000001.JPEG"


def test_imagenet_val_sorted_into_class_folders(imagenet_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(imagenet_root / "train", root / "train")
    flat = imagenet(imagenet_root, "val")
    for path, label in zip(flat.paths, flat.labels, strict=True):
        (root / "val" / WNIDS[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "val" / WNIDS[label] / path.name)
    sorted_val = imagenet(root, "val")
    assert sorted(zip([p.name for p in sorted_val.paths], sorted_val.labels)) == sorted(
        zip([p.name for p in flat.paths], flat.labels))


def test_imagenet_errors_name_the_problem(imagenet_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DomainclustError, match="not an ImageNet folder"):
        imagenet(tmp_path, "train")
    root = tmp_path / "nodevkit"
    shutil.copytree(imagenet_root / "train", root / "train")
    shutil.copytree(imagenet_root / "val", root / "val")
    with pytest.raises(DomainclustError, match="devkit"):
        imagenet(root, "val")
    shutil.copytree(imagenet_root / "ILSVRC2012_devkit_t12", root / "ILSVRC2012_devkit_t12")
    truth = root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("1\n2\n")  # fewer lines than images
    with pytest.raises(DomainclustError, match="image number 3 is beyond the 2 lines"):
        imagenet(root, "val")
    with pytest.raises(DomainclustError, match="splits train and val"):
        imagenet(imagenet_root, "test")


def test_places365_train_and_val(tmp_path: Path) -> None:
    root = write_places365(tmp_path / "places365")
    train, val = places365(root, "train"), places365(root, "val")
    assert train.classes == PLACES[:2]
    assert len(train) == 8 and len(val) == 4
    assert all(PLACES[label].lstrip("/") in path.as_posix()
               for path, label in zip(train.paths, train.labels, strict=True))
    assert list(val.labels) == [0, 1, 0, 1]
    (root / "places365_val.txt").write_text("Places365_val_00000009.jpg 1\n")
    with pytest.raises(DomainclustError, match="line 1 lists Places365_val_00000009.jpg"):
        places365(root, "val")
    (root / "places365_val.txt").write_text("Places365_val_00000001.jpg 7\n")
    with pytest.raises(DomainclustError, match="label 7 is not in"):
        places365(root, "val")


def test_voc2007_folder_is_found_and_read(tmp_path: Path) -> None:
    devkit = write_voc2007(tmp_path / "voc")
    year = voc2007(devkit)
    assert year == devkit / "VOC2007" and voc2007(year) == year
    trainval = read_voc(year, "trainval")
    assert len(trainval.ids) == 6
    cat, person = trainval.classes.index("cat"), trainval.classes.index("person")
    assert trainval.targets[1, cat] == 0  # a difficult cat only: ignored
    assert trainval.targets[1, person] == 1
    with pytest.raises(DomainclustError, match="is not a VOC2007 folder"):
        voc2007(tmp_path)


def test_voc2012_segmentation_masks_are_read_with_void_as_unlabelled(tmp_path: Path) -> None:
    devkit, written = write_voc2012(tmp_path / "voc")
    assert voc2012(devkit) == devkit / "VOC2012" == voc2012(devkit / "VOC2012")
    train, val = voc2012_segmentation(devkit, "train"), voc2012_segmentation(devkit, "val")
    assert [p.stem for p in train.images] == [p.stem for p in train.masks] == sorted(written)[:3]
    assert [p.stem for p in val.images] == sorted(written)[3:]
    assert train.classes[0] == "background" and train.classes[15] == "person"
    assert len(train.classes) == 21
    for i, path in enumerate(train.masks):
        mask = train.mask(i)
        expected = written[path.stem]
        assert mask.dtype == np.int16 and mask.shape == expected.shape
        np.testing.assert_array_equal(mask[expected != 255], expected[expected != 255])
        assert (mask[expected == 255] == -1).all() and (expected == 255).sum() > 0  # void
        assert set(np.unique(mask)) == {-1, 0, 15 if i % 2 == 0 else 8}


def test_voc2012_refuses_what_is_not_its_layout(tmp_path: Path) -> None:
    from PIL import Image

    devkit, written = write_voc2012(tmp_path / "voc")
    with pytest.raises(DomainclustError, match="split 'test' is not listed; splits here: "
                                               "train, val"):
        voc2012_segmentation(devkit, "test")
    with pytest.raises(DomainclustError, match="is not a VOC2012 segmentation folder"):
        voc2012(tmp_path)
    year = devkit / "VOC2012"
    first = sorted(written)[0]
    mask = year / "SegmentationClass" / f"{first}.png"
    Image.fromarray(np.full((36, 44), 30, np.uint8)).save(mask)
    with pytest.raises(DomainclustError, match=r"holds class id\(s\) \[30\]"):
        read_voc_mask(mask)
    Image.fromarray(np.zeros((36, 44, 3), np.uint8)).save(mask)  # a colour mask
    with pytest.raises(DomainclustError, match=f"{first}.png is a RGB image"):
        read_voc_mask(mask)
    Image.fromarray(np.zeros((20, 44), np.uint8)).save(mask)
    with pytest.raises(DomainclustError, match="is 44x20 px, its image"):
        voc2012_segmentation(devkit, "train").mask(0)
    mask.unlink()
    with pytest.raises(DomainclustError, match=f"lists {first}, but .*{first}.png does not"):
        voc2012_segmentation(devkit, "train")


def test_image_folder_is_unlabelled(tmp_path: Path) -> None:
    images = image_folder(write_flickr(tmp_path / "flickr", n=5))
    assert len(images) == 5 and set(images.labels) == {-1}


def test_prepare_store_ingests_once_with_shared_labels(imagenet_root: Path,
                                                       tmp_path: Path) -> None:
    logs: list[str] = []
    kwargs = {"options": {"tile_size": 32}, "data_dir": tmp_path, "log": logs.append}
    train = prepare_store("imagenet", imagenet_root, "train", **kwargs)
    val = prepare_store("imagenet", imagenet_root, "val", **kwargs)
    assert prepare_store("imagenet", imagenet_root, "val", **kwargs) == val
    assert len(logs) == 2  # the third call reused the finished store
    a, b = TileStore(train), TileStore(val)
    assert (a.n, b.n, a.tile_size) == (12, 6, 32)
    assert list(np.asarray(b.labels)) == [0, 1, 2, 0, 1, 2]
    assert sorted(np.unique(np.asarray(a.labels))) == [0, 1, 2]
    # The store keeps no source paths.
    assert str(imagenet_root) not in (val / "zarr.json").read_text()
