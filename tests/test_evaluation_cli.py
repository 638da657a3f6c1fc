"""`domainclust eval knn|linear|clusters` on a real tiny DeepCluster run, and the bad inputs a user
can give them: each must end in one clear message, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluation_fixtures import write_store
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation import evaluate_clusters, evaluate_knn, evaluate_linear

pytest_plugins = ["test_evaluation_fixtures"]

runner = CliRunner()


def test_cli_knn_on_two_layers_writes_json(tiny_run: Path, small_store: Path,
                                           tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "knn", "--checkpoint", str(tiny_run), "--store",
                                 str(small_store), "--layer", "fc7,conv2", "--quiet",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "k-NN (k=20, T=0.07) on fc7 (4096 dims)" in result.output
    assert "; split: random (no source recorded), stratified, seed=0" in result.output
    rows = json.loads((tmp_path / "knn.json").read_text())
    assert [r["layer"] for r in rows] == ["fc7", "conv2"] and rows[1]["dim"] == 64 * 12 * 12  # 15 px map
    assert all(0.3 < r["accuracy"] <= 1 for r in rows)  # 10 classes: chance is 0.1
    assert rows[0]["n_train"] == 480 and rows[0]["n_test"] == 120


def test_linear_probes_every_conv_layer(tiny_run: Path, small_store: Path) -> None:
    result = evaluate_linear(tiny_run, small_store, weight_decays=(1e-3,), device="cpu")
    assert [r.layer for r in result.rows] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    # Quarter-width AlexNet with the 32 px stem: maps of 32, 15, 7, 7, 7 px, none collapsed.
    assert [r.dim for r in result.rows] == [24 * 20 * 20, 64 * 12 * 12, 96 * 7 * 7, 96 * 7 * 7,
                                            64 * 7 * 7]
    assert all(0.3 < r.top1 <= 1 for r in result.rows)
    assert "| conv1 | 9600 |" in result.table()
    assert "split: random (no source recorded)" in result.table().splitlines()[0]
    again = evaluate_linear(tiny_run, small_store, layers=["conv5"], weight_decays=(1e-3,),
                            device="cpu")
    assert again.rows[0].top1 == result.rows[4].top1  # seeded: the same split and probe
    baseline = evaluate_linear(tiny_run, small_store, layers=["conv5"], random_init=True,
                               weight_decays=(1e-3,), device="cpu")
    assert baseline.checkpoint.startswith("random init (seed 0)")


def test_clusters_nmi_and_edge_ratio(tiny_run: Path, small_store: Path) -> None:
    r = evaluate_clusters(tiny_run, small_store, device="cpu")
    assert r.n_tiles == 600 and r.n_classes == 10 and r.pca_dim == 16  # the run's pca_dim
    assert 0.1 < r.nmi_kmeans <= 1 and 0.2 < r.edge_ratio <= 1
    # The run trained on this store: its last-epoch clusters are compared with the labels too.
    assert r.assignments_epoch == 0 and r.n_assigned == 300 and 0 < r.nmi_assignments <= 1
    assert "intra-class edges in the 10-NN graph" in r.table()


def test_store_without_labels_or_with_a_wrong_labels_file(tiny_run: Path, small_store: Path,
                                                         tmp_path: Path) -> None:
    tiles = TileStore(small_store).read(np.arange(40))
    unlabelled = write_store(tmp_path / "unlabelled.zarr", tiles, labels=None)
    with pytest.raises(DomainclustError, match="has no labels; evaluation needs a labelled store"):
        evaluate_knn(tiny_run, unlabelled, device="cpu")
    np.save(tmp_path / "labels.npy", np.arange(39) % 10)
    with pytest.raises(DomainclustError, match="holds 39 labels but the store has 40 tiles"):
        evaluate_knn(tiny_run, unlabelled, labels_path=tmp_path / "labels.npy", device="cpu")


def test_checkpoint_whose_channels_differ_from_the_store(tiny_run: Path, tmp_path: Path) -> None:
    rgb = write_store(tmp_path / "rgb.zarr", np.zeros((20, 3, 32, 32), np.uint8),
                      labels=np.arange(20) % 2, channels=("red", "green", "blue"))
    with pytest.raises(DomainclustError, match=r"needs channel\(s\) \['gray'\] that store .* lacks "
                                               r"\(it has \['red', 'green', 'blue'\]\)"):
        evaluate_linear(tiny_run, rgb, device="cpu")


def test_cli_errors_are_one_line_without_traceback(tiny_run: Path, tmp_path: Path) -> None:
    rgb = write_store(tmp_path / "rgb.zarr", np.zeros((20, 3, 32, 32), np.uint8),
                      labels=np.arange(20) % 2, channels=("red", "green", "blue"))
    proc = subprocess.run([sys.executable, "-m", "domainclust", "eval", "clusters",
                           "--checkpoint", str(tiny_run), "--store", str(rgb), "--quiet"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "channel(s) ['gray']" in lines[0]
    result = runner.invoke(app, ["eval", "knn", "--checkpoint", str(tmp_path / "none.pt"),
                                 "--store", str(rgb)])
    assert isinstance(result.exception, DomainclustError)
    assert "checkpoint" in str(result.exception) and "does not exist" in str(result.exception)


def test_eval_knn_and_linear_take_split_by(tiny_run: Path, small_store: Path) -> None:
    for command in ("knn", "linear"):
        result = runner.invoke(app, ["eval", command, "--checkpoint", str(tiny_run), "--store",
                                     str(small_store), "--split-by", "blocks", "--quiet"])
        assert isinstance(result.exception, DomainclustError), result.output
        assert "records no (row, col) tile positions" in str(result.exception)
