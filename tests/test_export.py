"""Export → load → forward gives the checkpoint's features; the card says what the input must be;
no checkpoint or export is ever unpickled into running code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation import evaluate_knn, load_trained
from domainclust.networks.export import export_backbone, load_backbone

pytest_plugins = ["test_evaluation_fixtures"]


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "backbone"
    export_backbone(tiny_run, out)
    return out


def test_export_load_forward_gives_the_checkpoint_features(exported: Path, tiny_run: Path,
                                                           small_store: Path) -> None:
    store = TileStore(small_store)
    x = store.to_float(torch.from_numpy(store.read(np.arange(16))))
    original = load_trained(tiny_run).model.eval()
    backbone = load_backbone(exported)
    assert isinstance(backbone, torch.nn.Module) and not backbone.training
    assert not any(name.startswith("top.") for name, _ in backbone.named_parameters())
    with torch.no_grad():
        assert torch.equal(backbone(x), original.features(x))
        stages = backbone.forward_stages(x)
        assert torch.equal(stages["conv3"], original.backbone.forward_stages(
            original.frontend(x))["conv3"])
    raw = torch.from_numpy(store.read(np.arange(4)))
    assert torch.equal(backbone.normalise(raw), store.to_float(raw))


def test_card_describes_input_normalisation_and_origin(exported: Path, tiny_run: Path,
                                                       small_store: Path) -> None:
    card = json.loads((exported / "card.json").read_text())
    assert card["architecture"] == "alexnet" and card["feature_dim"] == 4096
    assert card["input"]["channels"] == ["gray"] and card["input"]["tile_size"] == 32
    assert card["input"]["frontend"] == "sobel" and card["input"]["raw_channels"] == []
    norm = card["input"]["normalisation"]
    assert norm["known"] and norm["scale"] == pytest.approx([1 / 255]) and norm["offset"] == [0.0]
    assert norm["storage_dtype"] == "uint8"
    assert card["store"]["path"] == str(small_store) and card["store"]["available"]
    assert card["store"]["modality"] == "mnist" and card["store"]["count"] == 600
    assert card["recipe"]["cluster"]["k"] == 10 and card["training"]["epochs_trained"] == 1
    assert card["source"]["run_dir"] == str(tiny_run)
    assert (exported / "backbone.safetensors").read_bytes()[8:9] == b"{"  # safetensors header


def test_an_export_directory_evaluates_like_its_checkpoint(exported: Path, tiny_run: Path,
                                                           small_store: Path) -> None:
    a = evaluate_knn(tiny_run, small_store, layers=["conv2"], device="cpu")[0]
    b = evaluate_knn(exported, small_store, layers=["conv2"], device="cpu")[0]
    assert a.accuracy == b.accuracy


def test_export_when_the_store_is_gone_records_what_is_known(tiny_run: Path,
                                                             tmp_path: Path) -> None:
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    state["store"]["path"] = str(tmp_path / "moved.zarr")
    torch.save(state, tmp_path / "ckpt.pt")
    card = export_backbone(tmp_path / "ckpt.pt", tmp_path / "out")
    assert not card["input"]["normalisation"]["known"] and not card["store"]["available"]
    assert "does not exist" in card["store"]["unavailable_because"]
    assert card["store"]["channels"] == ["gray"] and card["recipe"] is None
    with pytest.raises(DomainclustError, match="records no normalisation"):
        load_backbone(tmp_path / "out").normalise(torch.zeros(1, 1, 32, 32))


def test_corrupt_or_missing_exports_are_refused(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(DomainclustError, match="not an exported backbone"):
        load_backbone(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "card.json").write_text((exported / "card.json").read_text())
    blob = bytearray((exported / "backbone.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (copy / "backbone.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DomainclustError, match="does not match the checksum"):
        load_backbone(copy)


class Payload:
    """Unpickling this would run a shell command that writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def malicious_files(tmp_path: Path) -> list[tuple[Path, Path]]:
    out = []
    for kind in ("torch", "pickle"):
        marker = tmp_path / f"pwned-{kind}"
        path = tmp_path / f"evil-{kind}.pt"
        state = {"format": 1, "epoch": 0, "spec": {}, "n_clusters": 1, "model": Payload(marker)}
        if kind == "torch":
            torch.save(state, path)
        else:
            path.write_bytes(pickle.dumps(state))
        out.append((path, marker))
    return out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path: Path,
                                                                 small_store: Path) -> None:
    runner = CliRunner()
    for path, marker in malicious_files(tmp_path):
        with pytest.raises(DomainclustError, match="could not be loaded safely"):
            load_trained(path)
        with pytest.raises(DomainclustError, match="could not be loaded safely"):
            export_backbone(path, tmp_path / "x")
        result = runner.invoke(app, ["eval", "knn", "--checkpoint", str(path), "--store",
                                     str(small_store)])
        assert isinstance(result.exception, DomainclustError)
        result = runner.invoke(app, ["export", "--checkpoint", str(path), "--out",
                                     str(tmp_path / "y")])
        assert isinstance(result.exception, DomainclustError)
        assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # Control: the payload is real, an unrestricted unpickle does run it.
    path, marker = malicious_files(tmp_path)[0]
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_cli_export_writes_a_backbone_that_loads(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(tiny_run), "--out",
                                      str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "exported alexnet (1 channel(s) ['gray'], 32 px, front-end sobel" in result.output
    assert load_backbone(tmp_path / "e").feature_dim == 4096
