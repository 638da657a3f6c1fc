"""Low-shot fine-tuning against random init on the real tiny run: both protocols, seeded repeats,
the CSV/JSON/PNG it writes, and the error for a class with fewer examples than the shots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.errors import DomainclustError
from domainclust.evaluation import FinetuneSettings, low_shot
from domainclust.evaluation.finetune import augment
from domainclust.evaluation.report import write_finetune

pytest_plugins = ["test_evaluation_fixtures"]

FAST = FinetuneSettings(steps=3, batch_size=16)


@pytest.mark.slow
def test_both_protocols_pretrained_and_random(tiny_run: Path, small_store: Path,
                                              tmp_path: Path) -> None:
    result = low_shot(tiny_run, small_store, shots=[1, 3], repeats=2, protocol="both",
                      settings=FAST, max_test=60, device="cpu")
    keys = {(r.protocol, r.init, r.shots) for r in result.rows}
    assert keys == {(p, i, s) for p in ("all", "head") for i in ("pretrained", "random")
                    for s in (1, 3)}
    assert all(len(r.accuracies) == 2 and all(0 <= a <= 1 for a in r.accuracies)
               for r in result.rows)
    assert result.n_test == 60 and result.n_classes == 10
    head3 = result.row("head", "pretrained", 3)
    assert head3.mean > 0.2  # chance is 0.1
    assert "| head | 3 |" in result.table() and "±" in result.table()

    paths = write_finetune(result, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 8 and rows[0]["repeat_1"] and float(rows[0]["mean"]) <= 1
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["steps"] == 3 and data["rows"][0]["std"] >= 0


@pytest.mark.slow
def test_runs_are_seeded(tiny_run: Path, small_store: Path) -> None:
    def run(seed: int) -> list[float]:
        r = low_shot(tiny_run, small_store, shots=[2], repeats=1, protocol="head", max_test=60,
                     seed=seed, device="cpu")
        return [a for row in r.rows for a in row.accuracies]

    assert run(0) == run(0)
    assert run(0) != run(1)


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
        "--repeats", "1", "--protocol", "head", "--max-test", "40", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| head | 1 |" in result.output and "| head | 2 |" in result.output
    assert {p.name for p in tmp_path.iterdir()} == {"finetune.csv", "finetune.json",
                                                     "finetune.png"}
    bad = CliRunner().invoke(app, ["finetune", "--checkpoint", str(tiny_run), "--store",
                                   str(small_store), "--shots", "1,x"])
    assert isinstance(bad.exception, DomainclustError) and "--shots" in str(bad.exception)


def test_augment_translates_within_bounds_and_is_seeded() -> None:
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1
    a = augment(x, shift=0.1, flip=True, generator=torch.Generator().manual_seed(0))
    b = augment(x, shift=0.1, flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.sum().item() == pytest.approx(x.sum().item(), rel=0.05)  # moved, not cropped off
    assert augment(x, shift=0.0, flip=False, generator=torch.Generator()) is x
