"""`recipe run` of every reference recipe on tiny fixtures in the real layouts, end to end on CPU
(a few steps: the recipe overridden to one epoch, tiny k and tiles), then `recipe compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reference_data import write_flickr, write_imagenet, write_places365, write_voc2007
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.replication.compare import compare_run, format_table

TINY = ["--set", "epochs=1", "--set", "k=2", "--set", "batch_size=4", "--set", "tile_size=64",
        "--set", "resize=true", "--set", "subset_size=8", "--set", "pca_dim=4", "--ingest-set", "tile_size=72",
        "--eval-set", "steps=2", "--eval-set", "batch_size=4", "--eval-set", "repeats=1",
        "--eval-set", "shots=[1]", "--eval-set", "weight_decays=[0.001]",
        "--eval-set", "protocol=linear", "--quiet"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reference")
    return {"imagenet": write_imagenet(root / "ILSVRC2012"),
            "places365": write_places365(root / "places365"),
            "voc2007": write_voc2007(root / "voc"),
            "flickr": write_flickr(root / "flickr")}


def data_args(datasets: dict[str, Path]) -> list[str]:
    return [a for name, path in datasets.items() for a in ("--data", f"{name}={path}")]


def run_cli(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.slow
def test_km_imnet_sob_runs_every_evaluation_and_compares(datasets, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = run_cli(["recipe", "run", "km-ImNet-Sob", *data_args(datasets), "--run-dir", str(run),
                   *TINY])
    assert "| evaluation |" in out
    results = sorted(p.stem for p in (run / "results").glob("*.json"))
    assert results == ["imagenet-linear", "imagenet-low-shot", "imagenet-mlp",
                       "places365-linear", "voc07-all", "voc07-fc6-8"]
    rows = {(r.evaluation, r.model, r.row): r for r in compare_run(run)}
    conv1 = rows[("imagenet-linear", "km-ImNet-Sob", "conv1")]
    assert conv1.paper == 13.4 and conv1.ours is not None
    assert conv1.gap == pytest.approx(conv1.ours - 13.4)
    assert rows[("imagenet-linear", "random", "conv5")].ours is not None
    assert rows[("voc07-fc6-8", "random", "mAP")].paper == 29.0
    assert rows[("imagenet-mlp", "km-ImNet-Sob", "top-1")].paper == 44.0
    assert ("imagenet-mlp", "PIC-ImNet-Sob", "top-1") not in rows  # another model's number
    assert any(e == "imagenet-low-shot" and r.ours is not None for (e, _, _), r in rows.items())
    compared = run_cli(["recipe", "compare", str(run), "--out", str(tmp_path / "cmp.json")])
    assert "| imagenet-linear | thesis Table 5.3 | km-ImNet-Sob | conv1 |" in compared
    assert "13.4" in compared and "72.9" in compared
    assert len(json.loads((tmp_path / "cmp.json").read_text())) == len(rows)
    # A second run finds everything done and changes nothing.
    before = {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json")}
    run_cli(["recipe", "run", "km-ImNet-Sob", *data_args(datasets), "--run-dir", str(run),
             *TINY])
    assert before == {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PIC-ImNet-Sob", "km-ImNet-RGB", "km-fl1M-Sob", "km-fl2M-Sob",
                                  "km-ImNet-Sob-VGG16"])
def test_other_recipes_start_on_their_layouts(name: str, datasets, tmp_path: Path) -> None:
    """Each other model pretrains on its own pool (ImageNet or the Flickr folder) and runs the
    MLP evaluation (VGG16: the linear one, which is cheaper) on ImageNet."""
    only = "imagenet-linear" if "VGG16" in name else "imagenet-mlp"
    run = tmp_path / "run"
    run_cli(["recipe", "run", name, *data_args(datasets), "--run-dir", str(run), *TINY,
             "--only", only])
    table = format_table(compare_run(run))
    assert f"| {only} |" in table
    ours = [r for r in compare_run(run) if r.evaluation == only and r.model == name]
    assert ours and all(r.ours is not None for r in ours)
    if name == "PIC-ImNet-Sob":
        assert "| 45.9 |" in table  # the paper's PIC row sits beside ours
    not_run = [r for r in compare_run(run) if r.evaluation != only]
    assert all(r.ours is None for r in not_run)


def test_missing_data_is_a_clear_error(datasets, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["recipe", "run", "km-fl1M-Sob", "--data",
                                      f"imagenet={datasets['imagenet']}", "--run-dir",
                                      str(tmp_path / "r")])
    assert result.exit_code != 0
    assert "pass --data flickr=PATH" in str(result.exception)
    result = CliRunner().invoke(app, ["recipe", "run", "imagenet-mlp", "--data",
                                      str(datasets["imagenet"]), "--run-dir", str(tmp_path / "r")])
    assert "is an evaluation recipe" in str(result.exception)
