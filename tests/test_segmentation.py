"""Low-shot segmentation: the decoder on every trunk, the scores, the shot draw, the baselines,
and `segment.json` written by the real protocol on a store ingested from GeoTIFFs with masks."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import geotiff_data as gd  # kept next to the tests (prepend import mode)
import numpy as np
import pytest
import torch
from browser import find_chromium, probe_page
from domainclust.modalities.geo.geotiff import MODALITY
from sklearn.utils.class_weight import compute_class_weight
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.config import ARCHS, STEMS, resolve
from domainclust.data.store import TileStore
from domainclust.engine.deepcluster import pretrain
from domainclust.errors import DomainclustError
from domainclust.evaluation.features import read_float_tiles
from domainclust.evaluation.lowshot.fewshot import judge
from domainclust.evaluation.lowshot.result import Row, load_lowshot
from domainclust.networks.model import DeepClusterNet, ModelSpec
from domainclust.report import write_report
from domainclust.report.segment import PALETTE, colour_masks, load_segment, panel_scale
from domainclust.segmentation import SegmentationNet, SegmentSettings, confusion, scores
from domainclust.segmentation.baselines import fit_pixel_logistic, neighbourhood_features
from domainclust.segmentation.examples import load_examples
from domainclust.segmentation.protocol import (
    class_masks,
    low_shot_segment,
    presence,
    sample_shot_tiles,
    segment_table,
    write_segment,
)
from domainclust.segmentation.training import balanced_weights, predict_masks, train_segmenter

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
TILE = 32
FAST = SegmentSettings(lrs=(0.01, 0.05), steps=(3, 6), default_steps=3, batch_size=8,
                       decoder_width=16)


STEM_TILES = {"stride1": 33, "stride2": 70, "imagenet": 100}  # odd sizes, not powers of two


@pytest.mark.parametrize(("arch", "stem"), list(itertools.product(ARCHS, STEMS)))
def test_the_decoder_answers_at_the_tile_size_for_every_trunk(arch: str, stem: str) -> None:
    """Every backbone family with every stem (read from the config, so a new one is covered),
    at tile sizes no stage divides exactly, behind a Sobel front-end that changes the channels."""
    tile = STEM_TILES[stem]
    spec = ModelSpec(arch=arch, frontend="sobel", channels=("a", "b", "c"), raw_channels=(),
                     tile_size=tile, stem=stem, width=0.125)
    net = SegmentationNet(DeepClusterNet(spec, n_clusters=2), n_classes=5, width=8)
    out = net(torch.randn(2, 3, tile, tile))
    assert out.shape == (2, 5, tile, tile)
    assert len(net.stages) >= 4  # several stages feed the decoder
    out.sum().backward()
    assert all(p.grad is not None for p in net.decoder_parameters())


def test_scores_of_a_hand_made_confusion() -> None:
    true = np.array([[0, 0, 1, 1], [2, 2, -1, -1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 1, 2]])
    m = confusion(true, pred, n_classes=3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # the -1 pixels are ignored
    got = scores(m, names=["water", "crop", "urban"])
    assert got["iou/water"] == pytest.approx(1 / 3) and got["iou/crop"] == pytest.approx(2 / 3)
    assert got["iou/urban"] == pytest.approx(1 / 2)
    assert got["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert got["pixel_accuracy"] == pytest.approx(4 / 6) and "dice" not in got
    binary = scores(confusion(np.array([0, 1, 1, 1]), np.array([1, 1, 1, 0]), n_classes=2))
    assert binary["dice"] == pytest.approx(2 * 2 / (3 + 3))
    absent = scores(confusion(np.array([0, 0]), np.array([0, 1]), n_classes=3))
    assert set(absent) == {"miou", "pixel_accuracy", "iou/0"}  # only classes present count


def row(method: str, protocol: str, values: list[float]) -> Row:
    return Row(method=method, protocol=protocol, shots=4, metric="miou",
               mean=float(np.mean(values)), ci_low=None, ci_high=None, repeats=len(values),
               values=values)


def test_the_verdict_compares_with_the_strongest_baseline_on_miou() -> None:
    rows = [row("majority", "none", [0.2, 0.2, 0.2]),
            row("pixel_logistic", "none", [0.5, 0.52, 0.48]),
            row("random_init", "frozen", [0.4, 0.45, 0.42]),
            row("pretrained", "frozen", [0.6, 0.63, 0.61])]
    v = judge(rows, shots=4, protocol="frozen", metric="miou")
    assert v.best_baseline == "pixel_logistic/none" and v.result == "helped"
    assert v.difference == pytest.approx(0.34 / 3)
    rows[-1] = row("pretrained", "frozen", [0.45, 0.55, 0.5])
    assert judge(rows, shots=4, protocol="frozen", metric="miou").result == "inconclusive"


def test_shot_tiles_show_every_class_or_are_refused() -> None:
    masks = np.zeros((6, 4, 4), np.int64)
    masks[1, 0, 0] = 1  # class 1 only in tile 1, class 2 only in tile 4
    masks[4, 1, 1] = 2
    present = presence(masks, n_classes=3)
    for seed in range(5):
        idx = sample_shot_tiles(present, np.arange(6), shots=3,
                                rng=np.random.default_rng(seed))
        assert len(idx) == 3 and present[idx].any(0).all()
    with pytest.raises(DomainclustError, match="shows every class"):
        sample_shot_tiles(present, np.arange(6), shots=1, rng=np.random.default_rng(0))
    with pytest.raises(DomainclustError, match="appear in no training tile"):
        sample_shot_tiles(present, np.array([0, 2, 3]), shots=3, rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def masked_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' Sentinel-2-like scenes ingested with their land-cover rasters as masks."""
    root = tmp_path_factory.mktemp("seg")
    gd.write_sample_set(root / "scenes")
    out = root / "s2.zarr"
    MODALITY.ingest([root / "scenes"], out, workers=1, progress=False,
                    options={**MODALITY.defaults, "tile_size": TILE,
                             "labels": "./{stem}_labels.tif", "bands": [2, 3, 4, 8]})
    return out


@pytest.fixture(scope="module")
def masked_run(masked_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("seg_run") / "run"
    config = resolve(recipe={}, overrides=[f"store={masked_store}", "k=5", "epochs=1",
                                           "batch_size=16", "pca_dim=8", "model.width=0.125",
                                           "frontend=none"])
    pretrain(config, run, progress=False, log=lambda _: None)
    return run


def test_pixel_logistic_learns_land_cover_from_the_bands(masked_store: Path) -> None:
    store = TileStore(masked_store)
    classes, masks = class_masks(store)
    x = read_float_tiles(store, np.arange(store.n), tile_size=TILE)
    assert neighbourhood_features(x[:2]).shape == (2 * TILE * TILE, 4 * 9)
    train, test = np.arange(0, store.n, 2), np.arange(1, store.n, 2)
    model, choice = fit_pixel_logistic(x[train], masks[train], n_classes=len(classes),
                                       folds=[], seed=0)
    got = scores(confusion(masks[test], model.predict(x[test]), n_classes=len(classes)))
    assert not choice["validated"] and got["pixel_accuracy"] > 0.9  # signatures separate


def test_balanced_classes_find_more_of_the_rarest_class(masked_store: Path) -> None:
    store = TileStore(masked_store)
    classes, masks = class_masks(store)
    k, y = len(classes), torch.as_tensor(masks)
    x = read_float_tiles(store, np.arange(store.n), tile_size=TILE)
    labelled = masks[masks >= 0]
    np.testing.assert_allclose(balanced_weights(y, n_classes=k).numpy(), compute_class_weight(
        "balanced", classes=np.arange(k), y=labelled), rtol=1e-5)
    rare = int(np.argmin(np.bincount(labelled, minlength=k)))
    spec = ModelSpec(arch="resnet18", frontend="none", channels=tuple("abcd"), raw_channels=(),
                     tile_size=TILE, stem="stride1", width=0.125)
    found = {}
    for balance in (False, True):
        torch.manual_seed(0)
        net = SegmentationNet(DeepClusterNet(spec, n_clusters=2), n_classes=k, width=8)
        settings = replace(FAST, balance_classes=balance)
        train_segmenter(net, x, y, lr=0.05, steps=(30,), frozen=True, settings=settings, seed=0)
        pixel, choice = fit_pixel_logistic(x, masks, n_classes=k, folds=[], seed=0,
                                           balanced=balance)
        assert choice["balanced"] is balance
        found[balance] = [int((predict_masks(net, x) == rare).sum()),
                          int((pixel.predict(x) == rare).sum())]
    assert all(b > u for b, u in zip(found[True], found[False])), found


def test_segment_json_from_the_real_protocol(masked_store: Path, masked_run: Path,
                                             tmp_path: Path) -> None:
    result = low_shot_segment(masked_run, masked_store, shots=[1, 4], repeats=2,
                              protocol="both", settings=FAST, device="cpu")
    keys = {(r.method, r.protocol, r.shots) for r in result.rows}
    nets = {(m, p, s) for m in ("random_init", "pretrained") for p in ("frozen", "finetune")
            for s in (1, 4)}
    assert keys == nets | {(m, "none", s) for m in ("majority", "pixel_logistic") for s in (1, 4)}
    metrics = {r.metric for r in result.rows}
    assert {"miou", "pixel_accuracy"} <= metrics and any(m.startswith("iou/") for m in metrics)
    assert result.split.startswith("grouped spatial blocks")
    for method in ("random_init", "pretrained"):
        assert all(not c["validated"] for c in result.row(method, "frozen", 1, "miou").choices)
        assert all(c["validated"] and c["lr"] in FAST.lrs
                   for c in result.row(method, "finetune", 4, "miou").choices)
    assert result.row("pixel_logistic", "none", 4, "miou").mean > result.row(
        "majority", "none", 4, "miou").mean
    assert [v.shots for v in result.verdict] == [1, 4]
    assert segment_table(result).splitlines()[-1].startswith("verdict at 4 shot tiles (miou)")
    paths = write_segment(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert set(data) >= {"rows", "split", "verdict"} and set(data["verdict"]) == {"1", "4"}
    assert load_lowshot(paths["json"]).verdict[1].method == "pretrained/frozen"


def test_cli_finetune_task_segment(masked_store: Path, masked_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "finetune", "--task", "segment", "--checkpoint", str(masked_run), "--store",
        str(masked_store), "--shots", "2", "--repeats", "1", "--device", "cpu",
        "--steps", "2,4", "--balance-classes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "verdict at 2 shot tiles" in result.output
    written = json.loads((out / "segment.json").read_text())
    assert written["settings"]["task"] == "segment"
    assert written["settings"]["segment"]["balance_classes"] is True
    assert written["settings"]["segment"]["steps"] == [2, 4]
    pixel = next(r for r in written["rows"] if r["method"] == "pixel_logistic")
    assert pixel["choices"][0]["balanced"] is True  # the baseline was weighted too
    assert (out / "segment_examples.npz").is_file()
    assert (out / "segment_examples.html").is_file()
    classify = CliRunner().invoke(app, ["finetune", "--checkpoint", str(masked_run), "--store",
                                        str(masked_store), "--balance-classes"])
    assert classify.exit_code != 0 and "options of --task segment" in str(classify.exception)
    plain = CliRunner().invoke(app, ["finetune", "--task", "segment", "--checkpoint",
                                     str(masked_run), "--store", str(masked_run / "nothing")])
    assert plain.exit_code != 0


def test_masks_are_drawn_with_the_fixed_colour_table_and_unlabelled_pixels_marked() -> None:
    drawn = colour_masks(np.array([[[0, 1], [-1, 20]]]), scale=2)
    assert drawn.shape == (1, 4, 4, 3)
    assert drawn[0, 0, 0].tolist() == [0, 0, 0] and drawn[0, 0, 2].tolist() == [128, 0, 0]
    assert drawn[0, 2, 2].tolist() == [0, 64, 128]  # the VOC colours of classes 0, 1 and 20
    ignored = drawn[0, 2:, :2].reshape(-1, 3)
    assert not any((PALETTE[:21] == c).all(1).any() for c in ignored)  # no class colour
    assert len({tuple(c) for c in ignored}) == 2  # a checkerboard


def panels(page: str) -> dict[str, np.ndarray]:
    from PIL import Image

    return {m[0]: np.asarray(Image.open(io.BytesIO(base64.b64decode(m[1]))).convert("RGB"))
            for m in re.findall(r'<img id="(seg-[^"]+)"[^>]*src="data:image/png;base64,([^"]+)"',
                                page)}


def test_report_shows_the_protocols_own_predictions_on_seeded_test_tiles(
        masked_store: Path, masked_run: Path, tmp_path: Path) -> None:
    result = low_shot_segment(masked_run, masked_store, shots=[2], repeats=1, settings=FAST,
                              max_test=3, examples=3, device="cpu")
    ex = result.examples
    assert len(ex.indices) == 3  # every test tile: the kept masks are all that was scored
    assert {m for m, _, _ in ex.methods} == {"majority", "pixel_logistic", "random_init",
                                              "pretrained"}
    for m, p, s in ex.methods:
        kept = scores(confusion(ex.truth, ex.prediction(m, p, s), n_classes=result.n_classes))
        assert kept["miou"] == pytest.approx(result.row(m, p, s, "miou").values[0])
    np.testing.assert_allclose(ex.tiles, read_float_tiles(
        TileStore(masked_store), np.array(ex.indices), tile_size=TILE).numpy())
    eval_dir = masked_run / "eval"
    paths = write_segment(result, eval_dir)
    try:
        assert "examples" not in json.loads(paths["json"].read_text())
        stored = load_examples(paths["examples"])
        assert stored.methods == ex.methods and stored.shot_tiles == ex.shot_tiles
        report = write_report(masked_run, out=tmp_path / "report", progress=False,
                              log=lambda _: None)
        own_page = paths["page"].read_text()
        other = tmp_path / "other"
        other.mkdir()
        shutil.copy(paths["json"], other / "segment.json")
        replace(stored, classes=stored.classes[::-1]).save(other / "segment_examples.npz")
    finally:
        shutil.rmtree(eval_dir)
    table, overlays, notes = load_segment(other / "segment.json")
    assert table is not None and overlays is None  # another result's examples are not shown
    assert "are not of its result" in notes[0]
    page = report.page.read_text()
    assert "Low-shot segmentation" in page and "pixel_logistic" in page and "verdict" in page
    shown, scale = panels(page), panel_scale(TILE)
    assert len(shown) == 3 * (2 + len(ex.methods))
    for t in range(3):
        np.testing.assert_array_equal(shown[f"seg-2-{t}-truth"],
                                      colour_masks(ex.truth[t:t + 1], scale=scale)[0])
        for m, p, s in ex.methods:
            np.testing.assert_array_equal(shown[f"seg-2-{t}-{m}-{p}"], colour_masks(
                stored.prediction(m, p, s)[t:t + 1], scale=scale)[0])
        assert shown[f"seg-2-{t}-image"].shape == (TILE * scale, TILE * scale, 3)
        assert shown[f"seg-2-{t}-image"].std() > 5  # a picture, not a blank
    assert panels(own_page).keys() == shown.keys()
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (.ci/run installs it): the page is not opened")
    seen = probe_page(report.page, chromium=chromium)
    assert seen["failed"] == [] and seen["fetched"] == []
    decoded = {i["id"]: i for i in seen["images"] if i["id"].startswith("seg-")}
    assert decoded.keys() == shown.keys()
    assert all(i["complete"] and i["width"] == TILE * scale for i in decoded.values())
