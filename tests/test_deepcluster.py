"""End-to-end DeepCluster runs on the real MNIST subset (small settings, CPU)."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.config import resolve
from domainclust.data.normalise import to_input
from domainclust.data.store import StoreSpec, TileStore, TileStoreWriter
from domainclust.engine import deepcluster
from domainclust.errors import DomainclustError
from domainclust.evaluation.models import load_trained
from domainclust.networks.model import PrototypeHead

# A quarter-width network on 300 digits, no end-of-run report (tests/test_report.py covers it):
# an epoch in a few seconds on one core, still 9 batches to interrupt and 10 clusters to find.
SMALL = ["subset_size=300", "k=10", "epochs=3", "batch_size=32", "pca_dim=16", "model.width=0.25",
         "report=false"]
SUBSET = 300


def config(store, *extra: str):
    return resolve(overrides=[f"store={store}", *SMALL, *extra])


def strip_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture(scope="module")
def uninterrupted(mnist_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "full"
    return run, deepcluster.pretrain(config(mnist_store), run, progress=False, log=lambda _: None)


def test_run_dir_layout_and_metrics(uninterrupted) -> None:
    run, history = uninterrupted
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.pt").exists()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2] and lines == history
    for r in lines:
        for key in ("loss", "nmi_prev", "nmi_labels", "n_clusters", "cluster_size_min",
                    "cluster_size_max", "seconds", "objective", "n_empty"):
            assert key in r
        assert r["n_clusters"] == 10 and r["cluster_size_min"] >= 1 and r["n_tiles"] == SUBSET
        assert set(r["seconds"]) == {"stage", "extract", "cluster", "train"}
    assert lines[0]["nmi_prev"] is None and 0 <= lines[1]["nmi_prev"] <= 1
    for epoch in range(3):
        with np.load(run / "assignments" / f"epoch_{epoch:04d}.npz") as a:
            assert len(a["indices"]) == SUBSET and len(np.unique(a["labels"])) == 10
    # Subset regime: a fresh random subset every epoch.
    with np.load(run / "assignments" / "epoch_0000.npz") as a, \
         np.load(run / "assignments" / "epoch_0001.npz") as b:
        assert not np.array_equal(a["indices"], b["indices"])


def test_resume_after_an_interrupted_epoch_reproduces_the_run(
    uninterrupted, mnist_store, tmp_path, monkeypatch
) -> None:
    _, expected = uninterrupted
    real_train = deepcluster.train_one_epoch
    calls = {"n": 0}

    def interrupted_train(model, loader, **kwargs):
        calls["n"] += 1
        if calls["n"] < 2:
            return real_train(model, loader, **kwargs)

        def two_batches_then_ctrl_c():
            for i, batch in enumerate(loader):
                if i == 2:
                    raise KeyboardInterrupt
                yield batch

        return real_train(model, two_batches_then_ctrl_c(), **kwargs)

    monkeypatch.setattr(deepcluster, "train_one_epoch", interrupted_train)
    run = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        deepcluster.pretrain(config(mnist_store), run, progress=False, log=lambda _: None)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # epoch 0 survived
    monkeypatch.setattr(deepcluster, "train_one_epoch", real_train)
    resumed = deepcluster.pretrain(config(mnist_store), run, progress=False, log=lambda _: None)
    got, want = strip_seconds(resumed), strip_seconds(expected)
    assert [r["epoch"] for r in got] == [0, 1, 2]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in g:
            if w[key] is None:
                assert g[key] is None, key
            else:
                assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), key


def test_a_finished_run_can_be_extended(uninterrupted, mnist_store, tmp_path) -> None:
    finished, before = uninterrupted
    run = tmp_path / "extend"
    shutil.copytree(finished, run)
    history = deepcluster.pretrain(config(mnist_store, "epochs=4"), run, progress=False,
                                   log=lambda _: None)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert history[:3] == before  # the finished epochs are kept, not retrained
    assert history[3]["nmi_prev"] is not None


def test_pic_clustering_trains_with_loader_workers(mnist_store, tmp_path) -> None:
    history = deepcluster.pretrain(
        config(mnist_store, "clustering=pic", "epochs=1", "lr=0.05", "workers=2"), tmp_path / "pic",
        progress=False, log=lambda _: None)
    assert history[0]["n_clusters"] > 1 and history[0]["cluster_size_min"] >= 2


def test_reassigning_every_second_epoch_keeps_subset_ids_and_head(
    mnist_store, tmp_path, monkeypatch
) -> None:
    resets = []
    real_reset = deepcluster.DeepClusterNet.reset_head
    monkeypatch.setattr(deepcluster.DeepClusterNet, "reset_head",
                        lambda self, k: (resets.append(k), real_reset(self, k))[1])
    run = tmp_path / "every2"
    history = deepcluster.pretrain(config(mnist_store, "reassign_every=2"), run, progress=False,
                                   log=lambda _: None)
    assert [r.get("reassigned", True) for r in history] == [True, False, True]
    assert set(history[1]["seconds"]) == {"stage", "train"}
    assert len(resets) == 2  # epochs 0 and 2; epoch 1 trains the same head on
    ids = [np.load(run / "assignments" / f"epoch_{e:04d}.npz") for e in range(3)]
    assert np.array_equal(ids[0]["indices"], ids[1]["indices"])
    assert np.array_equal(ids[0]["labels"], ids[1]["labels"])
    assert not np.array_equal(ids[1]["indices"], ids[2]["indices"])
    # Resuming at a kept epoch carries the same ids and head forward.
    monkeypatch.setattr(deepcluster.DeepClusterNet, "reset_head", real_reset)
    resumed = tmp_path / "resumed"
    deepcluster.pretrain(config(mnist_store, "reassign_every=2", "epochs=1"), resumed,
                         progress=False, log=lambda _: None)
    again = deepcluster.pretrain(config(mnist_store, "reassign_every=2"), resumed,
                                 progress=False, log=lambda _: None)
    for got, want in zip(strip_seconds(again), strip_seconds(history)):
        assert got.keys() == want.keys()
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_post_relu_features_and_plain_sampling_change_the_run(uninterrupted, mnist_store,
                                                              tmp_path) -> None:
    run, _ = uninterrupted
    history = deepcluster.pretrain(
        config(mnist_store, "cluster.features=post-relu", "sampler=plain", "epochs=1"),
        tmp_path / "ablation", progress=False, log=lambda _: None)
    with np.load(run / "assignments" / "epoch_0000.npz") as pre, \
         np.load(tmp_path / "ablation" / "assignments" / "epoch_0000.npz") as post:
        assert np.array_equal(pre["indices"], post["indices"])  # same subset, same network
        assert not np.array_equal(pre["labels"], post["labels"])
    assert np.isfinite(history[0]["loss"])


def test_the_prototype_head_starts_from_the_clustering_and_survives_a_checkpoint(
    mnist_store, tmp_path, monkeypatch
) -> None:
    """Before any step the prototype head already predicts the epoch's cluster ids (a fresh
    linear head is at chance); the checkpoint rebuilds it for resuming and for evaluation."""
    real_train = deepcluster.train_one_epoch
    agreement: dict[str, list[float]] = {"linear": [], "prototypes": []}
    last: dict[str, torch.nn.Module] = {}  # each run's network as its last epoch left it

    def measured_train(model, loader, **kwargs):
        model.eval()
        with torch.no_grad():
            hits = [(model(x).argmax(1) == y).float().mean().item() for x, y in loader]
        agreement[kind].append(float(np.mean(hits)))
        loss = real_train(model, loader, **kwargs)
        last[kind] = copy.deepcopy(model).eval()
        return loss

    monkeypatch.setattr(deepcluster, "train_one_epoch", measured_train)
    plain = ["data.augment=[]", "epochs=2"]
    for kind in ("linear", "prototypes"):
        deepcluster.pretrain(config(mnist_store, *plain, f"cluster.head={kind}"),
                             tmp_path / kind, progress=False, log=lambda _: None)
    assert max(agreement["linear"]) < 0.3  # 10 clusters: chance is 0.1
    assert min(agreement["prototypes"]) > 0.8
    monkeypatch.setattr(deepcluster, "train_one_epoch", real_train)

    run = tmp_path / "prototypes"
    trained = load_trained(run).model
    assert isinstance(trained.top, PrototypeHead) and trained.top.out_features == 10
    store = TileStore(mnist_store)
    tiles = to_input(torch.as_tensor(store.read(np.arange(64))), scale=store.attrs["scale"],
                     offset=store.attrs["offset"])
    with torch.no_grad():  # the trained head restored, not a new one
        torch.testing.assert_close(trained.eval()(tiles), last["prototypes"](tiles))
    history = deepcluster.pretrain(config(mnist_store, "data.augment=[]", "epochs=3",
                                          "cluster.head=prototypes"), run, progress=False,
                                   log=lambda _: None)
    assert [r["epoch"] for r in history] == [0, 1, 2] and np.isfinite(history[2]["loss"])


@pytest.mark.parametrize("setting, message", [
    ("cluster.features=relu", "cluster.features must be pre-relu or post-relu"),
    ("reassign_every=0", "reassign_every must be at least 1"),
    ("sampler=balanced", "train.sampler must be uniform or plain"),
    ("cluster.head=cosine", "cluster.head must be linear or prototypes"),
    ("cluster.temperature=0", "cluster.temperature must be greater than 0"),
])
def test_unknown_ablation_settings_are_refused(mnist_store, tmp_path, setting, message) -> None:
    with pytest.raises(DomainclustError, match=message):
        deepcluster.pretrain(config(mnist_store, setting), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_a_run_dir_with_another_config_is_refused(uninterrupted, mnist_store) -> None:
    run, _ = uninterrupted
    with pytest.raises(DomainclustError, match=r"different config \(differs in: cluster.k\)"):
        deepcluster.pretrain(config(mnist_store, "k=12"), run, progress=False)


def test_a_store_with_other_channels_than_the_checkpoint_is_refused(
    uninterrupted, tmp_path
) -> None:
    run, _ = uninterrupted
    other = tmp_path / "rgb.zarr"
    w = TileStoreWriter(other, StoreSpec(modality="mnist", channels=("r", "g", "b"), tile_size=32,
                                         dtype="uint8", scale=(1,) * 3, offset=(0,) * 3))
    w.append(np.zeros((700, 3, 32, 32), np.uint8))
    w.finish()
    # The store moved (same config, another path) and now holds other channels.
    stored = yaml.safe_load((run / "config.yaml").read_text())
    stored["data"]["store"] = str(other)
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    with pytest.raises(DomainclustError, match=r"trained on channels \['gray'\]"):
        deepcluster.pretrain(config(other), run, progress=False)


def test_k_larger_than_the_subset_is_refused(mnist_store, tmp_path) -> None:
    with pytest.raises(DomainclustError,
                       match=f"k={SUBSET + 1} is larger than the {SUBSET} tiles"):
        deepcluster.pretrain(config(mnist_store, f"k={SUBSET + 1}"), tmp_path / "r",
                             progress=False)


def test_cli_pretrain_with_set_and_clean_errors(mnist_store, tmp_path) -> None:
    runner = CliRunner()
    args = ["pretrain", "--store", str(mnist_store), "--run-dir", str(tmp_path / "cli"), "--quiet",
            "--modality", "mnist"] + [a for s in SMALL + ["epochs=1"] for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()) == 1
    state = torch.load(tmp_path / "cli" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and list(state["spec"]["channels"]) == ["gray"]


def test_cli_reports_a_missing_store_in_one_line(tmp_path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "domainclust", "pretrain", "--store", str(tmp_path / "none.zarr"),
         "--run-dir", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: store {tmp_path / 'none.zarr'} does not exist; create one with `domainclust ingest`"]
