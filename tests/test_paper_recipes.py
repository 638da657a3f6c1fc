"""The paper's reference recipes: the five models against thesis Table 5.1, every recipe
resolves, unknown keys are refused, and the paper's numbers are attached where the issue gives
them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.errors import DomainclustError
from domainclust.replication.recipes import (
    EvaluationRecipe,
    PretrainRecipe,
    evaluations_of,
    load_recipe,
    recipe_names,
)

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "paper"

# Thesis Table 5.1, transcribed: (clustering, k, input, lr, weight decay, epochs,
# updates-per-epoch factor, images per epoch (None: all of ImageNet), pool dataset).
TABLE_5_1 = {
    "PIC-ImNet-Sob": ("pic", None, "sobel", 0.05, 1e-5, 500, 1.0, None, "imagenet"),
    "km-ImNet-Sob": ("kmeans", 10000, "sobel", 0.02, 1e-5, 500, 1.0, None, "imagenet"),
    "km-ImNet-RGB": ("kmeans", 1000, "none", 0.02, 1e-6, 500, 1.0, None, "imagenet"),
    "km-fl1M-Sob": ("kmeans", 10000, "sobel", 0.02, 1e-5, 167, 3.0, 1_000_000, "flickr"),
    "km-fl2M-Sob": ("kmeans", 10000, "sobel", 0.02, 1e-5, 167, 3.0, 2_000_000, "flickr"),
}


@pytest.mark.parametrize("name", sorted(TABLE_5_1))
def test_the_five_models_match_table_5_1(name: str) -> None:
    method, k, frontend, lr, wd, epochs, factor, subset, dataset = TABLE_5_1[name]
    recipe = load_recipe(name)
    assert isinstance(recipe, PretrainRecipe)
    c = recipe.config
    assert (c.cluster.method, c.model.frontend, c.train.lr, c.train.weight_decay) == (
        method, frontend, lr, wd)
    if k is not None:
        assert c.cluster.k == k
    assert (c.train.epochs, c.train.updates_factor, c.data.subset_size) == (epochs, factor, subset)
    assert recipe.dataset == dataset
    # Shared by all five: AlexNet-BN, batch 256, momentum 0.9, 224 px crops of 256 px images,
    # PCA-whitening to 256, 20 k-means iterations, 5-NN PIC graph, RandomResizedCrop + h-flip.
    assert (c.model.arch, c.train.batch_size, c.train.momentum) == ("alexnet", 256, 0.9)
    assert (c.data.tile_size, recipe.ingest["tile_size"]) == (224, 256)
    assert (c.cluster.pca_dim, c.cluster.iterations, c.cluster.pic_neighbors) == (256, 20, 5)
    assert [next(iter(a)) for a in c.data.augment] == ["RandomResizedCrop", "HorizontalFlip"]
    assert c.data.augment[0]["RandomResizedCrop"]["scale"] == [0.08, 1.0]


def test_vgg16_variant_differs_from_km_imnet_sob_only_in_architecture() -> None:
    a, b = load_recipe("km-ImNet-Sob"), load_recipe("km-ImNet-Sob-VGG16")
    from domainclust.config import differences

    assert differences(a.config, b.config) == ["model.arch"]
    assert b.config.model.arch == "vgg16"


def test_every_recipe_resolves_with_its_evaluations() -> None:
    names = recipe_names()
    assert set(TABLE_5_1) <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name
        if isinstance(recipe, PretrainRecipe):
            evaluations = evaluations_of(recipe)
            assert evaluations and all(isinstance(e, EvaluationRecipe) for e in evaluations)


def test_paper_numbers_are_attached() -> None:
    linear = load_recipe("imagenet-linear")
    assert linear.paper["km-ImNet-Sob"] == {"conv1": 13.4, "conv2": 31.9, "conv3": 40.2,
                                            "conv4": 37.7, "conv5": 36.0}
    assert load_recipe("imagenet-mlp").paper == {
        "random": {"top-1": 12.0}, "km-ImNet-Sob": {"top-1": 44.0},
        "PIC-ImNet-Sob": {"top-1": 45.9}}
    fc68, everything = load_recipe("voc07-fc6-8"), load_recipe("voc07-all")
    assert (fc68.settings.layers, everything.settings.layers) == ("fc6-8", "all")
    assert fc68.paper == {"km-ImNet-Sob": {"mAP": 70.9}, "random": {"mAP": 29.0}}
    assert everything.paper == {"km-ImNet-Sob": {"mAP": 72.9}, "random": {"mAP": 61.9}}


def test_voc12_segmentation_recipe_carries_the_papers_two_rows(tmp_path: Path) -> None:
    from domainclust.replication.recipes import SEGMENT_LAYERS, describe
    from domainclust.replication.runner import not_runnable

    recipe = load_recipe("voc12-segment")
    assert (recipe.protocol, recipe.dataset) == ("segment", "voc2012")
    assert (recipe.train_split, recipe.test_split) == ("train", "val")
    assert recipe.paper == {"km-ImNet-Sob": {"fc6-8": 43.2, "all": 45.1},
                            "best-competitor": {"fc6-8": 35.8, "all": 37.7}}
    assert [SEGMENT_LAYERS[layer] for layer in recipe.settings.layers] == ["frozen", "finetune"]
    described = describe(recipe)
    assert described["settings"]["layers"] == ["fc6-8", "all"]
    assert described["metric"] == "mIoU (%)"
    listed = CliRunner().invoke(app, ["recipe", "list"])
    assert listed.exit_code == 0 and "voc12-segment" in listed.output
    shown = yaml.safe_load(CliRunner().invoke(app, ["recipe", "show", "voc12-segment"]).output)
    assert shown["paper"]["km-ImNet-Sob"]["all"] == 45.1
    # `recipe run` runs it once the data is given, and says which --data it lacks otherwise.
    assert not_runnable(recipe, {"voc2012": Path(".")}) is None
    assert "--data voc2012=PATH" in not_runnable(recipe, {})
    values = yaml.safe_load((RECIPES / "voc12-segment.yaml").read_text())
    bad = {**values, "settings": {**values["settings"], "layers": ["conv5"]}}
    with pytest.raises(DomainclustError, match="settings.layers must list some of fc6-8, all"):
        load_recipe(str(write(tmp_path / "seg.yaml", bad)))


def write(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_unknown_keys_are_errors_anywhere(tmp_path: Path) -> None:
    base = yaml.safe_load((RECIPES / "km-ImNet-Sob.yaml").read_text())
    with pytest.raises(DomainclustError, match="unknown key.*epoch_count"):
        load_recipe(str(write(tmp_path / "a.yaml", {**base, "epoch_count": 3})))
    bad_config = {**base, "config": {**base["config"], "train": {"lr": 0.1, "learning": 1}}}
    with pytest.raises(DomainclustError, match="a.yaml.*train.learning"):
        load_recipe(str(write(tmp_path / "a.yaml", bad_config)))
    ev = yaml.safe_load((RECIPES / "imagenet-mlp.yaml").read_text())
    with pytest.raises(DomainclustError, match="settings.stepz"):
        load_recipe(str(write(tmp_path / "b.yaml", {**ev, "settings": {"stepz": 3}})))
    with pytest.raises(DomainclustError, match="paper.random.top-1 must be a number"):
        load_recipe(str(write(tmp_path / "b.yaml", {**ev, "paper": {"random": {"top-1": "x"}}})))
    with pytest.raises(DomainclustError, match="protocol must be one of"):
        load_recipe(str(write(tmp_path / "b.yaml", {**ev, "protocol": "svm"})))
    with pytest.raises(DomainclustError, match="recipe 'km-ImNet-Sobel' is neither a file nor a shipped"):
        load_recipe("km-ImNet-Sobel")


def test_overrides_reach_the_config_and_the_settings() -> None:
    recipe = load_recipe("km-ImNet-Sob", overrides=["epochs=2", "k=8"])
    assert (recipe.config.train.epochs, recipe.config.cluster.k) == (2, 8)
    evaluations = evaluations_of(recipe, eval_overrides=["steps=3", "repeats=1"])
    by_name = {e.name: e for e in evaluations}
    assert by_name["imagenet-mlp"].settings.steps == 3
    assert by_name["voc07-all"].settings.steps == 3
    assert by_name["imagenet-low-shot"].settings.repeats == 1
    with pytest.raises(DomainclustError, match="no evaluation of this run has the setting 'stepz'"):
        evaluations_of(recipe, eval_overrides=["stepz=3"])


def test_cli_list_and_show() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["recipe", "list"])
    assert listed.exit_code == 0, listed.output
    assert "km-fl2M-Sob" in listed.output and "imagenet-mlp" in listed.output
    shown = runner.invoke(app, ["recipe", "show", "km-ImNet-RGB", "--set", "epochs=3"])
    assert shown.exit_code == 0, shown.output
    resolved = yaml.safe_load(shown.output)
    # Fully resolved: keys the recipe file does not set appear with their defaults.
    assert resolved["config"]["train"]["epochs"] == 3
    assert resolved["config"]["model"]["frontend"] == "none"
    assert resolved["config"]["data"]["cache"] == "auto"
    assert resolved["config"]["train"]["weight_decay"] == 1e-6


@pytest.mark.parametrize("name", ["geotiff.yaml", "sentinel2.yaml", "landsat.yaml", "mri.yaml"])
def test_measured_recipes_keep_the_intensity_level(name: str) -> None:
    """The measured choice (Landsat; the MNI152 T1; low-shot protocol): no gradient-only
    front-end."""
    from domainclust.config import resolve
    from domainclust.data.modality import load_recipe as load_domain_recipe

    config = resolve(recipe=load_domain_recipe(name))
    assert config.model.frontend == "none"

