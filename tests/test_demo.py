"""`domainclust demo` end to end with shortened training on a quarter-width network (the full
demo runs ~7 min)."""

import json

import pytest
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.data.store import TileStore


@pytest.mark.slow
def test_demo_ingests_trains_and_writes_the_table(tmp_path) -> None:
    run = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--run-dir", str(run), "--quiet",
                                      "--set", "epochs=1", "--set", "subset_size=500",
                                      "--set", "k=20", "--set", "model.width=0.25"])
    assert result.exit_code == 0, result.output
    data = json.loads((run / "demo.json").read_text())
    assert [k for k in data if k not in ("split", "epochs")] == ["raw_pixels", "random_init",
                                                                  "pretrained"]
    for name in ("random_init", "pretrained"):
        r = data[name]
        assert r["layer"] in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc7")
        assert max(r["validation"].values()) == r["validation"][r["layer"]]
        assert 0.5 < r["knn_accuracy"] <= 1
    assert data["raw_pixels"]["layer"] == "pixels" and data["split"].startswith("random")
    assert "| pretrained |" in result.output and (run / "demo.md").exists()
    assert TileStore(run / "pretrain.zarr").n == 4000  # the 1000 test digits never pretrained
    assert (run / "store.zarr" / "zarr.json").exists()
    assert (run / "checkpoints" / "last.pt").exists()
