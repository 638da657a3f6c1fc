import pytest

from domainclust import config as cfg
from domainclust.errors import DomainclustError


def test_short_keys_reach_their_section() -> None:
    c = cfg.resolve(overrides=["k=12", "lr=0.1", "arch=vgg16", "clustering=pic", "pca_dim=64",
                               "subset_size=1000", "tile_size=64", "seed=3", "device=cpu",
                               "workers=2", "epochs=4", "batch_size=32", "frontend=none"])
    assert (c.cluster.k, c.train.lr, c.model.arch, c.cluster.method) == (12, 0.1, "vgg16", "pic")
    assert (c.cluster.pca_dim, c.data.subset_size, c.data.tile_size) == (64, 1000, 64)
    assert (c.seed, c.device, c.data.workers, c.train.epochs) == (3, "cpu", 2, 4)
    assert (c.train.batch_size, c.model.frontend) == (32, "none")


def test_dotted_keys_and_recipe_layering() -> None:
    recipe = {"cluster": {"k": 50}, "train": {"lr": 0.02}}
    c = cfg.resolve(recipe=recipe, overrides=["train.momentum=0.5", "k=7"])
    assert (c.cluster.k, c.train.lr, c.train.momentum) == (7, 0.02, 0.5)
    assert c.cluster.pca_dim == 256  # untouched default


def test_unknown_keys_and_wrong_types_are_named() -> None:
    with pytest.raises(DomainclustError, match="cluster.kk"):
        cfg.resolve(overrides=["cluster.kk=3"])
    with pytest.raises(DomainclustError, match="cluster.k: expected int"):
        cfg.resolve(overrides=["k=many"])
    with pytest.raises(DomainclustError, match="key=value"):
        cfg.resolve(overrides=["k"])


def test_values_that_are_not_yaml_stay_strings() -> None:
    c = cfg.resolve(overrides=["store={stem}.zarr", "model.raw_channels=[depth]"])
    assert c.data.store == "{stem}.zarr" and c.model.raw_channels == ["depth"]


def test_yaml_roundtrip_and_differences() -> None:
    c = cfg.resolve(overrides=["k=9"])
    again = cfg.from_dict(__import__("yaml").safe_load(cfg.dump_yaml(c)))
    assert again == c
    assert cfg.differences(c, cfg.resolve(overrides=["k=9", "lr=1.0"])) == ["train.lr"]
