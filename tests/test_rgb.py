"""The `rgb` adapter on real photographs (scikit-image's bundled samples, no downloads)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from domainclust.modalities.images.rgb import MODALITY, RgbAdapter
from PIL import Image
from skimage import data as skimage_data
from typer.testing import CliRunner

from domainclust import cli
from domainclust.data.ingest import default_report_path, run_ingest
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

SIZE = 48
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Real RGB photographs bundled in the scikit-image wheel."""
    return {name: getattr(skimage_data, name)() for name in PHOTOS}


def run(sources: list[Path], out: Path, **options: object) -> dict:
    opts = {**MODALITY.defaults, "tile_size": SIZE, **options}
    return MODALITY.ingest(sources, out, options=opts, workers=1, progress=False)


def reference_tile(image: Image.Image, size: int) -> np.ndarray:
    """torchvision-style preprocessing: shorter side to `size`, then a centre crop."""
    w, h = image.size
    nw, nh = (round(w * size / h), size) if w >= h else (size, round(h * size / w))
    resized = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR))
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top:top + size, left:left + size].transpose(2, 0, 1)


@pytest.fixture(scope="module")
def imagenet(photos, tmp_path_factory) -> Path:
    """ImageNet layout: train/<class>/<image>, PNG so that content is lossless."""
    root = tmp_path_factory.mktemp("imagenet") / "train"
    classes = {"n0001": ["astronaut", "chelsea"], "n0002": ["coffee", "rocket"],
               "n0003": ["immunohistochemistry"]}
    for cls, names in classes.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            Image.fromarray(photos[name]).save(root / cls / f"{name}.png", compress_level=1)
    return root


@pytest.fixture(scope="module")
def imagenet_store(imagenet, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("stores") / "imagenet.zarr"
    return out, run([imagenet], out, group_size=2)


def test_tiles_are_the_resized_centre_crop(imagenet_store, imagenet, photos) -> None:
    out, report = imagenet_store
    store = TileStore(out)
    assert store.channels == ("red", "green", "blue") and store.tile_size == SIZE
    assert report["tiles_written"] == store.n == 5 and report["skipped"] == []
    tiles = store.read(np.arange(store.n))
    order = sorted(imagenet.rglob("*.png"))
    for tile, path in zip(tiles, order):
        image = Image.open(path)
        expected = reference_tile(image, SIZE)
        diff = np.abs(tile.astype(int) - expected)
        assert diff.mean() < 0.5 and diff.max() <= 6, path.name  # sub-pixel crop offset only
        if image.size[0] == image.size[1] or (image.size[0] - image.size[1]) % 2 == 0:
            w, h = image.size
            s = min(w, h)
            crop = image.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
            exact = np.asarray(crop.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
            assert np.abs(tile.astype(int) - exact.transpose(2, 0, 1))[:, 1:-1, 1:-1].max() <= 1
    w, h = photos["chelsea"].shape[1], photos["chelsea"].shape[0]
    boxes = dict(zip([p.stem for p in order], store.meta("position")))
    assert boxes["chelsea"].tolist() == [(w - h) / 2, 0, (w + h) / 2, h]
    assert store.to_float(__import__("torch").from_numpy(tiles)).max() <= 1.0


def test_labels_from_class_folders(imagenet_store) -> None:
    store = TileStore(imagenet_store[0])
    assert store.labels.tolist() == [0, 0, 1, 1, 2]
    assert store.attrs["provenance"]["classes"] == ["n0001", "n0002", "n0003"]


def test_labels_none_and_labels_csv(imagenet, tmp_path) -> None:
    run([imagenet], tmp_path / "none.zarr", labels="none")
    assert not TileStore(tmp_path / "none.zarr").has_labels
    table = tmp_path / "meta" / "labels.csv"
    table.parent.mkdir()
    rel = Path(os.path.relpath(imagenet, table.parent))  # paths relative to the CSV's folder
    rows = [("path", "label"), (rel / "n0001/astronaut.png", "person"),
            (imagenet / "n0001/chelsea.png", "cat"), (rel / "n0002/coffee.png", "drink"),
            (rel / "n0003/immunohistochemistry.png", "cell"), (rel / "gone.png", "cat")]
    with table.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    report = run([imagenet], tmp_path / "csv.zarr", labels=str(table))
    store = TileStore(tmp_path / "csv.zarr")
    assert store.attrs["provenance"]["classes"] == ["cat", "cell", "drink", "person"]
    assert store.labels.tolist() == [3, 0, 2, 1]
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "not listed in" in reasons["train/n0002/rocket.png"]
    assert any("gone.png" in item and "not among the source images" in reason
               for item, reason in reasons.items())


def test_voc_layout_reads_only_jpegimages(photos, tmp_path) -> None:
    year = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        Image.fromarray(photos[name]).save(year / "JPEGImages" / f"00000{i}.jpg", quality=95)
        Image.fromarray(photos[name][..., 0]).save(year / "SegmentationClass" / f"00000{i}.png")
        (year / "Annotations" / f"00000{i}.xml").write_text("<annotation/>")
    (year / "ImageSets/Main/trainval.txt").write_text("000001\n000003\n")
    run([tmp_path / "VOCdevkit"], tmp_path / "all.zarr")
    store = TileStore(tmp_path / "all.zarr")
    assert store.n == len(PHOTOS) and not store.has_labels
    run([tmp_path / "VOCdevkit"], tmp_path / "split.zarr", voc_split="trainval")
    assert TileStore(tmp_path / "split.zarr").meta("image_size").tolist() == [
        [451, 300], [640, 427]]
    with pytest.raises(DomainclustError, match="test.txt not found"):
        run([year], tmp_path / "bad.zarr", voc_split="test")


def test_other_modes_become_rgb(photos, tmp_path) -> None:
    folder = tmp_path / "modes"
    folder.mkdir()
    camera = skimage_data.camera()
    Image.fromarray(camera).save(folder / "gray.png")
    Image.fromarray(camera.astype(np.uint16) * 257).save(folder / "gray16.png")
    Image.fromarray(skimage_data.logo()).save(folder / "rgba.png")
    Image.fromarray(photos["chelsea"]).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(photos["coffee"]).convert("P").save(folder / "palette.gif")
    run([folder], tmp_path / "modes.zarr", fast_jpeg=False)
    store = TileStore(tmp_path / "modes.zarr")
    names = ["cmyk", "gray", "gray16", "palette", "rgba"]
    tiles = dict(zip(names, store.read(np.arange(5)), strict=True))
    assert all(t.shape == (3, SIZE, SIZE) for t in tiles.values())
    gray = tiles["gray"]
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()
    assert np.abs(tiles["gray16"].astype(int) - tiles["gray"]).max() <= 1
    logo = skimage_data.logo()
    alpha = Image.fromarray(logo[..., 3]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    alpha = np.asarray(alpha)
    assert (tiles["rgba"][:, alpha == 0] == 0).all()  # transparent → black (premultiplied)
    cmyk_ref = reference_tile(Image.fromarray(photos["chelsea"]), SIZE)
    assert np.abs(tiles["cmyk"].astype(int) - cmyk_ref).mean() < 6


def test_fast_jpeg_decoding_matches_full_decoding(photos, tmp_path) -> None:
    folder = tmp_path / "jpeg"
    folder.mkdir()
    for name in PHOTOS:
        Image.fromarray(photos[name]).save(folder / f"{name}.jpg", quality=92)
    run([folder], tmp_path / "fast.zarr")
    run([folder], tmp_path / "full.zarr", fast_jpeg=False)
    fast, full = (TileStore(tmp_path / n).read(np.arange(5)) for n in ("fast.zarr", "full.zarr"))
    assert np.abs(fast.astype(int) - full).mean() < 1.5
    np.testing.assert_allclose(TileStore(tmp_path / "fast.zarr").meta("position"),
                               TileStore(tmp_path / "full.zarr").meta("position"))


def test_corrupt_and_truncated_images_are_skipped_with_a_reason(photos, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(photos["chelsea"]).save(folder / "a_good.jpg")
    data = (folder / "a_good.jpg").read_bytes()
    (folder / "b_truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "c_not_an_image.jpg").write_bytes(b"this is not a JPEG at all")
    (folder / "notes.txt").write_text("ignored: not an image")
    report = run([folder], tmp_path / "mixed.zarr")
    assert report["tiles_written"] == 1 and report["tiles_dropped"] == 2
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "truncated" in reasons[str(folder / "b_truncated.jpg")]
    assert "cannot decode image" in reasons[str(folder / "c_not_an_image.jpg")]
    saved = json.loads(default_report_path(tmp_path / "mixed.zarr").read_text())
    assert saved["skipped"] == report["skipped"]
    single = run([folder / "a_good.jpg"], tmp_path / "single.zarr")  # a file as the source
    assert single["tiles_written"] == 1 and single["skipped"] == []
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DomainclustError, match="ingest wrote no tiles"):
        run([bad], tmp_path / "bad.zarr")


def test_bad_inputs_give_clean_cli_messages(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "empty")], "no images (.jpg, .png"),
        ([str(tmp_path / "missing")], "missing does not exist"),
        ([str(tmp_path / "empty"), "--set", "tile_size=big"], "tile_size: expected int"),
        ([str(tmp_path / "empty"), "--set", "labels=maybe"], "labels: expected one of"),
        ([str(tmp_path / "empty"), "--set", "colour=1"], "options are:"),
    ]
    for args, message in cases:
        argv = ["domainclust", "ingest", "--modality", "rgb", "--out", str(tmp_path / "o.zarr")]
        monkeypatch.setattr(sys, "argv", argv + args)
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err, err
        assert "Traceback" not in err


class InterruptedAdapter(RgbAdapter):
    """Stops the ingest like Ctrl-C would, after `after` items were read."""

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def read(self, item, options):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super().read(item, options)


def test_resume_after_interruption_does_not_duplicate_tiles(imagenet, imagenet_store, tmp_path):
    out = tmp_path / "resumed.zarr"
    options = {**MODALITY.defaults, "tile_size": SIZE, "group_size": 2}
    with pytest.raises(KeyboardInterrupt):
        run_ingest(InterruptedAdapter(after=2), [imagenet], out, options=options, progress=False)
    with pytest.raises(DomainclustError, match="incomplete"):
        TileStore(out)
    report = run([imagenet], out, group_size=2)
    again = run([imagenet], out, group_size=2)  # a finished store is left as it is
    resumed, fresh = TileStore(out), TileStore(imagenet_store[0])
    assert report["tiles_written"] == again["tiles_written"] == resumed.n == fresh.n == 5
    np.testing.assert_array_equal(resumed.read(np.arange(5)), fresh.read(np.arange(5)))
    np.testing.assert_array_equal(resumed.labels, fresh.labels)
    np.testing.assert_array_equal(resumed.meta("source"), fresh.meta("source"))


def test_adapter_pickles_for_spawned_workers() -> None:
    clone = pickle.loads(pickle.dumps(MODALITY.ingest))
    assert isinstance(clone.args[0], RgbAdapter)


@pytest.mark.slow
def test_cli_ingest_with_workers_then_pretrain(photos, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, image in photos.items():  # 5 photos × 8 real crops/flips = 40 JPEGs
        h, w = image.shape[:2]
        for i, (top, left) in enumerate([(0, 0), (0, w // 3), (h // 3, 0), (h // 3, w // 3)]):
            crop = image[top:top + 2 * h // 3, left:left + 2 * w // 3]
            Image.fromarray(crop).save(folder / f"{name}_{i}.jpg", quality=90)
            Image.fromarray(crop[:, ::-1]).save(folder / f"{name}_{i}_flip.jpg", quality=90)
    store = tmp_path / "photos.zarr"
    runner = CliRunner()
    result = runner.invoke(cli.app, [
        "ingest", "--modality", "rgb", str(folder), "--out", str(store), "--set", "tile_size=32",
        "--set", "group_size=8", "--workers", "2", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "40 tiles written, 0 file(s) skipped" in result.output
    result = runner.invoke(cli.app, [
        "pretrain", "--modality", "rgb", "--store", str(store), "--run-dir", str(tmp_path / "run"),
        "--set", "epochs=1", "--set", "k=4", "--set", "batch_size=10", "--set", "pca_dim=16",
        "--set", "arch=resnet18", "--set", "device=cpu", "--quiet",  # 512-d features: a fast PCA
    ])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert len(metrics) == 1 and metrics[0]["n_tiles"] == 40 and np.isfinite(metrics[0]["loss"])
