"""VOC2012 segmentation end to end on a tiny fixture in the real layout (palette PNG masks, void
255 borders): the rgb adapter keeps each image's mask beside its tile, `recipe run` builds the
train/val stores with their masks and scores the paper's two rows, `recipe compare` puts them
beside 43.2 / 45.1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reference_data import SIZE, write_imagenet, write_voc2012
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.modality import get_modality, ingest_options
from domainclust.data.store import TileStore
from domainclust.replication.compare import compare_run
from domainclust.replication.datasets import prepare_store
from domainclust.replication.layouts import VOC_SEGMENTATION_CLASSES

SIDE = min(SIZE)  # the centre square of the fixture's 44x36 images
LEFT = (SIZE[0] - SIDE) // 2


def nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """The centre square of `mask` at `size` px by nearest neighbour (pixel centres)."""
    pick = np.floor((np.arange(size) + 0.5) * SIDE / size).astype(int)
    return mask[:, LEFT:LEFT + SIDE][np.ix_(pick, pick)]


def ingest(sources: list[Path], out: Path, settings: list[str]) -> tuple[TileStore, dict]:
    modality = get_modality("rgb")
    report = modality.ingest(sources, out, options=ingest_options(modality, settings),
                             progress=False)
    return TileStore(out), report


@pytest.mark.parametrize("tile", [SIDE, 12])
def test_masks_are_stored_pixel_for_pixel_with_their_tile(tmp_path: Path, tile: int) -> None:
    devkit, masks = write_voc2012(tmp_path / "voc")
    year = devkit / "VOC2012"
    store, report = ingest([devkit], tmp_path / "s.zarr", [
        f"tile_size={tile}", f"masks={year / 'SegmentationClass'}", "voc_split=Segmentation/val"])
    assert not report["skipped"]
    assert store.n == 2 and store.mask_classes == list(VOC_SEGMENTATION_CLASSES)
    stored = store.read_masks(np.arange(store.n))
    expected = np.stack([nearest(masks[i], tile) for i in ("2007_000004", "2007_000005")])
    assert stored.shape == (2, tile, tile)
    assert np.array_equal(stored, expected)  # void 255 is stored as the store's ignore value
    assert store.mask_ignore == 255 and (stored == 255).any()
    assert set(np.unique(stored)) <= {0, 8, 15, 255}


def test_a_missing_or_misfit_mask_skips_its_image_alone(tmp_path: Path) -> None:
    devkit, _ = write_voc2012(tmp_path / "voc")
    folder = devkit / "VOC2012" / "SegmentationClass"
    (folder / "2007_000001.png").unlink()
    Image.new("L", (10, 10)).save(folder / "2007_000002.png")
    store, report = ingest([devkit], tmp_path / "s.zarr", [
        "tile_size=16", f"masks={folder}", "voc_split=Segmentation/train"])
    assert store.n == 1 and store.read_masks(np.arange(1)).shape == (1, 16, 16)
    reasons = " ".join(str(entry) for entry in report["skipped"])
    assert "no mask 2007_000001.png in the masks folder" in reasons
    assert "mask is 10x10 px" in reasons


def test_the_dataset_builder_makes_voc2012_stores_with_masks(tmp_path: Path) -> None:
    devkit, masks = write_voc2012(tmp_path / "voc")
    path = prepare_store("voc2012", devkit, "train", options={"tile_size": SIDE},
                         data_dir=tmp_path / "data", log=lambda _: None)
    store = TileStore(path)
    assert store.mask_classes == list(VOC_SEGMENTATION_CLASSES)
    expected = np.stack([nearest(masks[f"2007_00000{n}"], SIDE) for n in (1, 2, 3)])
    assert np.array_equal(store.read_masks(np.arange(store.n)), expected)
    again = prepare_store("voc2012", devkit, "train", options={"tile_size": SIDE},
                          data_dir=tmp_path / "data", log=lambda _: None)
    assert again == path  # reused, not ingested twice


@pytest.mark.slow
def test_recipe_run_scores_voc12_segmentation_beside_the_paper(tmp_path: Path) -> None:
    devkit, _ = write_voc2012(tmp_path / "voc", train=4, val=2)
    imagenet = write_imagenet(tmp_path / "ILSVRC2012")
    run = tmp_path / "run"
    args = ["recipe", "run", "km-ImNet-Sob", "--data", f"imagenet={imagenet}",
            "--data", f"voc2012={devkit}", "--run-dir", str(run), "--only", "voc12-segment",
            "--set", "epochs=1", "--set", "k=2", "--set", "batch_size=4",
            "--set", "model.width=0.25",
            "--set", "tile_size=32", "--set", "resize=true", "--set", "subset_size=8",
            "--set", "pca_dim=4", "--ingest-set", "tile_size=36", "--eval-set", "steps=2",
            "--eval-set", "lrs=0.01", "--eval-set", "batch_size=2", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    stores = sorted(p.name.split("-")[1] for p in (run / "data").glob("voc2012-*.zarr"))
    assert stores == ["train", "val"]
    record = json.loads((run / "results" / "voc12-segment.json").read_text())
    assert record["raw"]["km-ImNet-Sob"]["classes"] == list(VOC_SEGMENTATION_CLASSES)
    assert record["raw"]["km-ImNet-Sob"]["test_tiles"] == 2
    rows = {(r.model, r.row): r for r in compare_run(run) if r.evaluation == "voc12-segment"}
    for layer, paper in (("fc6-8", 43.2), ("all", 45.1)):
        ours = rows[("km-ImNet-Sob", layer)]
        assert ours.paper == paper and ours.ours is not None and 0 <= ours.ours <= 100
        assert rows[("random", layer)].ours is not None
    compared = CliRunner().invoke(app, ["recipe", "compare", str(run)])
    assert compared.exit_code == 0
    assert "| voc12-segment | DeepCluster (ECCV 2018) Table 4 | km-ImNet-Sob | fc6-8 |" in (
        compared.output)
    assert "43.2" in compared.output and "45.1" in compared.output
