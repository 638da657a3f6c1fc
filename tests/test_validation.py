"""The config check before `pretrain` writes anything: each bad setting is one line naming the
key, the value and what is allowed, and a refused command leaves the run dir usable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.config import resolve
from domainclust.errors import DomainclustError
from domainclust.validation import check_config

TINY = ["subset_size=100", "epochs=1", "batch_size=50", "pca_dim=8", "model.width=0.25",
        "report=false"]


def pretrain_args(store: Path, run: Path, settings: list[str]) -> list[str]:
    return ["pretrain", "--store", str(store), "--run-dir", str(run), "--quiet",
            *[a for s in settings for a in ("--set", s)]]


def test_a_refused_k_leaves_no_trace_and_the_corrected_command_runs(mnist_store: Path,
                                                                    tmp_path: Path) -> None:
    run = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "domainclust",
                           *pretrain_args(mnist_store, run, [*TINY, "k=101"])],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "cluster.k=101 is larger than the 100 tiles clustered per epoch" in proc.stderr
    assert not run.exists()
    run.mkdir()  # a folder that was there before stays empty
    refused = CliRunner().invoke(app, pretrain_args(mnist_store, run, [*TINY, "k=101"]))
    assert isinstance(refused.exception, DomainclustError) and list(run.iterdir()) == []
    result = CliRunner().invoke(app, pretrain_args(mnist_store, run, [*TINY, "k=10"]))
    assert result.exit_code == 0, result.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("setting, key, value", [
    ("k=-1", "cluster.k", "-1"),
    ("batch_size=0", "train.batch_size", "0"),
    ("lr=-1", "train.lr", "-1"),
    ("workers=-1", "data.workers", "-1"),
    ("pca_dim=0", "cluster.pca_dim", "0"),
    ("model.width=0", "model.width", "0"),
    ("epochs=-1", "train.epochs", "-1"),
    ("subset_size=0", "data.subset_size", "0"),
    ("model.dropout=1", "model.dropout", "1"),
    ("frontend=bogus", "model.frontend", "'bogus'"),
    ("arch=vgg19", "model.arch", "'vgg19'"),
    ("stem=stride4", "model.stem", "'stride4'"),
    ("clustering=spectral", "cluster.method", "'spectral'"),
    ("cluster.backend=cuml", "cluster.backend", "'cuml'"),
    ("sampler=balanced", "train.sampler", "'balanced'"),
    ("data.cache=disk", "data.cache", "'disk'"),
    ("device=gpu0", "device", "'gpu0'"),
])
def test_a_bad_setting_is_refused_in_one_line_naming_it(mnist_store: Path, tmp_path: Path,
                                                        setting: str, key: str,
                                                        value: str) -> None:
    result = CliRunner().invoke(app, pretrain_args(mnist_store, tmp_path / "r", [setting]))
    error = result.exception
    assert isinstance(error, DomainclustError), result.output
    message = str(error)
    assert key in message and f"got {value}" in message and "\n" not in message
    assert not (tmp_path / "r").exists()


def test_a_tile_size_other_than_the_stores_is_refused_unless_resizing_is_asked_for(
        mnist_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "domainclust",
                           *pretrain_args(mnist_store, run, [*TINY, "k=10", "tile_size=48"])],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "data.tile_size=48 differs from the store's 32 px tiles" in proc.stderr
    assert "resize=true" in proc.stderr and not run.exists()
    check_config(resolve(overrides=["tile_size=32"]), store_tile_size=32)  # the store's own
    check_config(resolve(overrides=["tile_size=24", "resize=true"]), store_tile_size=32)
    check_config(resolve(overrides=["tile_size=128", "resize=true"]), store_tile_size=32)  # 4x


def test_a_tile_size_far_above_the_stores_is_refused_before_any_memory_is_spent(
        mnist_store: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, pretrain_args(mnist_store, tmp_path / "r",
                                                   [*TINY, "k=10", "tile_size=4096",
                                                    "resize=true"]))
    assert isinstance(result.exception, DomainclustError), result.output
    assert str(result.exception).startswith(
        "data.tile_size=4096 is more than 4x the store's 32 px tiles")
    assert "at most 128" in str(result.exception)
    assert not (tmp_path / "r").exists()


def test_the_allowed_set_is_named_and_rules_need_the_store_and_the_world() -> None:
    with pytest.raises(DomainclustError,
                       match="none, sobel, sobel-per-channel or sobel-level, got 'bogus'"):
        resolve(overrides=["frontend=bogus"])
    config = resolve(overrides=["k=50", "batch_size=64"])
    check_config(config)  # without the store: nothing to say
    with pytest.raises(DomainclustError, match="cluster.k=50 is larger than the 40 tiles"):
        check_config(config, n_tiles=40)
    with pytest.raises(DomainclustError, match="batch_size=64 is not divisible by the 3"):
        check_config(config, n_tiles=100, world=3)
    pic = resolve(overrides=["clustering=pic", "cluster.pic_neighbors=5"])
    with pytest.raises(DomainclustError, match="pic_neighbors=5 needs more"):
        check_config(pic, n_tiles=5)
    config.model.arch = "vgg19"  # a Config changed in Python is checked as well
    with pytest.raises(DomainclustError, match="model.arch must be alexnet, vgg16, resnet18 or"):
        check_config(config)
