"""The low-shot experiment on a real tiny run: every method and protocol, the same selection
path for both initialisations, seeded repeats, what it writes, and the verdict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation import low_shot
from domainclust.evaluation.data import Split, save_split
from domainclust.evaluation.features import GLOBAL_AVERAGE, TARGET_DIMS, read_float_tiles
from domainclust.evaluation.lowshot.fewshot import METHODS, FeatureSource, Row, judge
from domainclust.evaluation.lowshot.finetune import FinetuneSettings
from domainclust.evaluation.models import load_trained
from domainclust.evaluation.probes.knn import knn_predict
from domainclust.evaluation.results import write_finetune
from domainclust.evaluation.training import augment, recompute_batchnorm

pytest_plugins = ["test_evaluation_fixtures"]

FAST = FinetuneSettings(lrs=(0.01, 0.03), steps=(2, 4), default_steps=2, batch_size=16)


@pytest.mark.slow
def test_every_method_and_protocol_with_cis_and_a_verdict(tiny_run: Path, small_store: Path,
                                                          tmp_path: Path) -> None:
    result = low_shot(tiny_run, small_store, shots=[1, 3], repeats=2, protocol="both",
                      settings=FAST, max_test=60, device="cpu")
    keys = {(r.method, r.protocol, r.shots) for r in result.rows}
    linear = {(m, "linear", s) for m in METHODS for s in (1, 3)}
    tuned = {(m, "finetune", s) for m in ("random_init", "pretrained") for s in (1, 3)}
    assert keys == linear | tuned
    assert {r.metric for r in result.rows} == {"top1", "balanced_accuracy"}
    for r in result.rows:
        assert r.repeats == 2 and len(r.values) == 2
        assert r.ci_low <= r.mean <= r.ci_high
    # One selection path for both initialisations: validated choices with 3 shots (3 folds
    # exist), the documented defaults with 1 shot.
    for method in ("random_init", "pretrained"):
        one = result.row(method, "linear", 1).choices
        three = result.row(method, "linear", 3).choices
        assert all(not c["validated"] and c["layer"] == "conv3" for c in one)
        assert all(c["validated"] for c in three)
        tuned3 = result.row(method, "finetune", 3).choices
        assert all(c["validated"] and c["lr"] in FAST.lrs and c["steps"] in FAST.steps
                   for c in tuned3)
    assert result.n_test == 60 and result.n_classes == 10
    assert result.row("pretrained", "linear", 3).mean > 0.2  # chance is 0.1
    assert [v.shots for v in result.verdict] == [1, 3]
    assert result.table().splitlines()[-1].startswith("verdict at 3 shots: ")

    paths = write_finetune(result, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(result.rows) and rows[0]["repeat_1"]
    data = json.loads(paths["json"].read_text())
    assert set(data["rows"][0]) >= {"method", "protocol", "shots", "metric", "mean", "ci_low",
                                    "ci_high", "repeats"}
    assert set(data["verdict"]["3"]) >= {"result", "best_baseline", "difference", "ci_low",
                                         "ci_high"}
    assert data["split"].startswith("random (no source recorded)")


@pytest.mark.slow
def test_the_same_seed_repeats_every_score_and_another_seed_changes_them(
    tiny_run: Path, small_store: Path
) -> None:
    def run(seed: int) -> list[float]:
        r = low_shot(tiny_run, small_store, shots=[2], repeats=1, max_test=60, seed=seed,
                     device="cpu")
        return [a for row in r.rows for a in row.values]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_knn_protocol_scores_every_method_with_the_shots_as_the_bank(
        tiny_run: Path, small_store: Path, tmp_path: Path) -> None:
    result = low_shot(tiny_run, small_store, shots=[1, 3], repeats=2, protocol="knn",
                      max_test=60, device="cpu")
    assert {(r.method, r.protocol, r.shots) for r in result.rows} == {
        (m, "knn", s) for m in METHODS for s in (1, 3)}
    for r in result.rows:
        assert r.repeats == 2 and r.ci_low <= r.mean <= r.ci_high
    # One shot per class leaves nothing to leave out: the nearest shot, on the default layer.
    # With three, layer and k come from leave-one-out on the 30 shots (k below 30).
    for method in ("random_init", "pretrained"):
        assert all(c == {"layer": "conv3", "k": 1, "validated": False}
                   for c in result.row(method, "knn", 1).choices)
        three = result.row(method, "knn", 3).choices
        assert all(c["validated"] and c["k"] in (1, 3, 5, 10, 20) for c in three)
    assert all(c["layer"] is None for c in result.row("raw_pixels", "knn", 3).choices)
    assert result.row("pretrained", "knn", 3).mean > 0.2  # chance is 0.1
    # The verdict weighs pretrained k-NN against the best baseline's k-NN, paired.
    assert [(v.method, v.best_baseline.endswith("/knn")) for v in result.verdict] == [
        ("pretrained/knn", True)] * 2
    data = json.loads(write_finetune(result, tmp_path)["json"].read_text())
    assert data["settings"]["protocols"] == ["knn"]
    assert set(data["verdict"]) == {"1", "3"}
    cli = CliRunner().invoke(app, [
        "finetune", "--checkpoint", str(tiny_run), "--store", str(small_store), "--shots", "1",
        "--repeats", "1", "--max-test", "20", "--protocol", "knn", "--out", str(tmp_path)])
    assert cli.exit_code == 0, cli.output
    assert "| pretrained | knn | 1 |" in cli.output


def test_linear_gap_averages_each_conv_stage_over_the_tile(
        tiny_run: Path, small_store: Path, tmp_path: Path) -> None:
    trained = load_trained(tiny_run)
    store = TileStore(small_store)
    grid, gap = (FeatureSource("pretrained", store, tile_size=trained.spec.tile_size,
                               device=torch.device("cpu"), pool=np.arange(40), model=trained.model,
                               target=target)(np.arange(5))
                 for target in (TARGET_DIMS, GLOBAL_AVERAGE))
    maps = trained.model.eval().backbone.forward_stages(trained.model.frontend(
        read_float_tiles(store, np.arange(1), tile_size=trained.spec.tile_size)))
    for stage, fmap in maps.items():  # one value per channel, not the paper's ~10k grid
        assert gap[stage].shape == (5, fmap.shape[1])
        assert grid[stage].shape[1] > fmap.shape[1]
    assert gap["features"].shape == grid["features"].shape  # fc7 is a vector already

    cli = CliRunner().invoke(app, [
        "finetune", "--checkpoint", str(tiny_run), "--store", str(small_store), "--shots", "1",
        "--repeats", "1", "--max-test", "20", "--protocol", "linear-gap", "--out", str(tmp_path)])
    assert cli.exit_code == 0, cli.output
    data = json.loads((tmp_path / "finetune.json").read_text())
    assert {(r["method"], r["protocol"]) for r in data["rows"]} == {
        (m, "linear-gap") for m in METHODS}
    assert data["verdict"]["1"]["method"] == "pretrained/linear-gap"
    assert data["settings"]["protocols"] == ["linear-gap"]


@pytest.mark.filterwarnings("error::UserWarning")
def test_a_class_absent_from_the_test_tiles_is_said_once_and_balanced_over_the_rest(
        tiny_run: Path, small_store: Path, tmp_path: Path) -> None:
    labels = TileStore(small_store).labels
    order = np.random.default_rng(0).permutation(len(labels))
    test = np.sort(order[:100][labels[order[:100]] != 9])  # no digit 9 among the test tiles
    save_split(tmp_path / "split.npz", Split(train=np.sort(order[100:]), test=test, source=""))
    cli = CliRunner().invoke(app, [
        "finetune", "--checkpoint", str(tiny_run), "--store", str(small_store), "--shots", "1",
        "--repeats", "2", "--protocol", "linear", "--split", str(tmp_path / "split.npz"),
        "--out", str(tmp_path / "eval")])
    assert cli.exit_code == 0, cli.output
    assert cli.output.count("no test tile of class 9: balanced accuracy averages the 9 "
                            "classes the test tiles hold") == 1
    rows = json.loads((tmp_path / "eval" / "finetune.json").read_text())["rows"]
    balanced = [r for r in rows if r["metric"] == "balanced_accuracy"]
    assert len(balanced) == len(METHODS) and all(0 <= r["mean"] <= 1 for r in balanced)


def test_knn_leave_one_out_never_lets_a_shot_vote_for_itself() -> None:
    # Four points on the unit circle, each closest to itself and then to the other class's
    # neighbour: left out, every point must be given the other class.
    angles = np.array([0.0, 0.1, 1.5, 1.6])
    bank = np.stack([np.cos(angles), np.sin(angles)], 1)
    y = np.array([0, 1, 0, 1])
    assert (knn_predict(bank, y, bank, k=1) == y).all()
    assert (knn_predict(bank, y, bank, k=1, leave_one_out=True) == 1 - y).all()


def test_a_class_with_fewer_examples_than_the_shots_is_refused(tiny_run: Path,
                                                               small_store: Path) -> None:
    # 60 digits per class, 20% held out: 48 to draw shots from.
    with pytest.raises(DomainclustError, match=r"class \d has only 48 training example\(s\), "
                                               "fewer than the 50 shots requested"):
        low_shot(tiny_run, small_store, shots=[1, 50], repeats=1, device="cpu")
    with pytest.raises(DomainclustError, match="unknown protocol 'some'"):
        low_shot(tiny_run, small_store, shots=[1], protocol="some", device="cpu")


def test_cli_finetune_writes_table_and_plot(tiny_run: Path, small_store: Path,
                                            tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "finetune", "--checkpoint", str(tiny_run), "--store", str(small_store), "--shots", "2,1",
        "--repeats", "1", "--max-test", "40", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| raw_pixels | linear | 1 |" in result.output
    assert "| pretrained | linear | 2 |" in result.output
    assert "verdict at 2 shots: inconclusive" in result.output  # one repeat: no interval
    assert {p.name for p in tmp_path.iterdir()} == {"finetune.csv", "finetune.json",
                                                     "finetune.png"}
    bad = CliRunner().invoke(app, ["finetune", "--checkpoint", str(tiny_run), "--store",
                                   str(small_store), "--shots", "1,x"])
    assert isinstance(bad.exception, DomainclustError) and "--shots" in str(bad.exception)


def _row(method: str, protocol: str, values: list[float], shots: int = 5) -> Row:
    v = np.asarray(values)
    return Row(method=method, protocol=protocol, shots=shots, metric="top1", mean=float(v.mean()),
               ci_low=None, ci_high=None, repeats=len(v), values=list(values))


def test_verdict_against_the_strongest_baseline_on_hand_made_tables() -> None:
    raw = _row("raw_pixels", "linear", [0.60, 0.62, 0.61, 0.63])
    rnd = _row("random_init", "linear", [0.70, 0.72, 0.69, 0.71])
    better = _row("pretrained", "linear", [0.75, 0.78, 0.74, 0.77])
    v = judge([raw, rnd, better], shots=5, protocol="linear")
    assert v.result == "helped" and v.best_baseline == "random_init/linear"
    assert v.difference == pytest.approx(0.055) and v.ci_low > 0
    worse = _row("pretrained", "linear", [0.65, 0.66, 0.64, 0.66])
    assert judge([raw, rnd, worse], shots=5, protocol="linear").result == "did not help"
    noisy = _row("pretrained", "linear", [0.80, 0.62, 0.78, 0.66])
    assert judge([raw, rnd, noisy], shots=5, protocol="linear").result == "inconclusive"
    # The strongest baseline may come from another protocol.
    tuned = _row("random_init", "finetune", [0.90, 0.91, 0.92, 0.90])
    v = judge([raw, rnd, tuned, better], shots=5, protocol="linear")
    assert v.result == "did not help" and v.best_baseline == "random_init/finetune"


def test_batchnorm_statistics_are_recomputed_exactly_on_the_shots() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(40, 1, 8, 8) * 3 + 2
    recompute_batchnorm(net, x, batch_size=64)
    with torch.no_grad():
        h = net[0](x)
    bn = net[1]
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3)), rtol=1e-2)
    assert bn.momentum == 0.1 and net.training  # momentum and mode restored


def test_augment_translates_within_bounds_and_is_seeded() -> None:
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1
    a = augment(x, shift=0.1, flip=True, generator=torch.Generator().manual_seed(0))
    b = augment(x, shift=0.1, flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.sum().item() == pytest.approx(x.sum().item(), rel=0.05)  # moved, not cropped off
    assert augment(x, shift=0.0, flip=False, generator=torch.Generator()) is x


def test_a_dimension_constant_on_the_pool_cannot_swamp_a_test_tile() -> None:
    from domainclust.evaluation.lowshot.frozen import Standardiser
    from domainclust.evaluation.probes.linear import STD_FLOOR

    rng = np.random.default_rng(0)
    pool = np.column_stack([rng.normal(3.0, 2.0, 500), np.zeros(500)]).astype(np.float32)
    st = Standardiser.fit(pool)
    z = st(np.array([[5.0, 1.0]], np.float32))[0]
    assert z[0] == pytest.approx((5.0 - pool[:, 0].mean()) / pool[:, 0].std(), rel=1e-5)
    typical = np.sqrt((pool[:, 0].std() ** 2 + 0.0) / 2)
    assert z[1] == pytest.approx(1.0 / (STD_FLOOR * typical), rel=1e-5)  # 141, not 1e6
