"""`domainclust demo` end to end with shortened training (the full demo runs ~5 min)."""

import json

import pytest
from typer.testing import CliRunner

from domainclust.cli import app


@pytest.mark.slow
def test_demo_ingests_trains_and_writes_the_table(tmp_path) -> None:
    run = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--run-dir", str(run), "--quiet",
                                      "--set", "epochs=1", "--set", "subset_size=1000",
                                      "--set", "k=20"])
    assert result.exit_code == 0, result.output
    rows = json.loads((run / "demo.json").read_text())
    assert list(rows) == ["random init", "DeepCluster, 1 epochs"]
    for r in rows.values():
        assert 0.1 < r["knn_accuracy"] <= 1 and 0 <= r["nmi_labels"] <= 1
    assert "| random init |" in result.output and (run / "demo.md").exists()
    assert (run / "store.zarr" / "zarr.json").exists()
    assert (run / "checkpoints" / "last.pt").exists()
