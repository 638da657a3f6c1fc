"""The laptop-scale claims table: its recipe resolves, and the verdicts follow from the CIs of
`finetune.json` files in the low-shot schema (written here by the test, as the protocol would)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.errors import DomainclustError
from domainclust.replication.claims import (
    FINETUNE_FILE,
    Claim,
    claim_rows,
    claims_table,
    format_claims,
    parse_replication,
)
from domainclust.replication.recipes import load_recipe

pytest_plugins = ["test_evaluation_fixtures"]


def finetune(pretrained: dict[int, tuple[float, float, float]],
             verdict: dict[int, tuple[float, float, float]] | None = None) -> dict:
    """finetune.json values: pretrained (mean, ci_low, ci_high) per shots, and a verdict."""
    rows = [{"method": "pretrained", "protocol": "linear", "shots": s, "metric": "top1", "mean": m,
             "ci_low": lo, "ci_high": hi, "repeats": 5} for s, (m, lo, hi) in pretrained.items()]
    rows += [{"method": "raw_pixels", "protocol": "linear", "shots": s, "metric": "top1",
              "mean": 0.1, "ci_low": 0.05, "ci_high": 0.15, "repeats": 5} for s in pretrained]
    out = {"rows": rows, "split": "stratified, seed=0"}
    if verdict is not None:
        out["verdict"] = {str(s): {"result": "helped", "best_baseline": "raw_pixels",
                                   "difference": d, "ci_low": lo, "ci_high": hi}
                          for s, (d, lo, hi) in verdict.items()}
    return out


def write(run: Path, variant: str, values: dict) -> None:
    path = run / variant / FINETUNE_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(values))


def test_the_laptop_recipe_resolves_every_variant() -> None:
    recipe = load_recipe("laptop-replication")
    assert recipe.kind == "replication"
    configs = {v: recipe.config(v, store="s.zarr") for v in recipe.variants}
    assert configs["raw-input"].model.frontend == "none"
    assert configs["deepcluster"].model.frontend == "sobel"
    assert (configs["k10"].cluster.k, configs["k1000"].cluster.k) == (10, 1000)
    assert configs["pic"].cluster.method == "pic"
    assert configs["reassign-once"].cluster.reassign_every == 10
    assert configs["plain-sampling"].train.sampler == "plain"
    assert configs["post-relu"].cluster.features == "post-relu"
    assert configs["deepcluster"].cluster.reassign_every == 1
    assert {c.kind for c in recipe.claims} == {"baseline", "contrast"}


def test_verdicts_follow_from_the_intervals(tmp_path: Path) -> None:
    recipe = load_recipe("laptop-replication")
    write(tmp_path, "deepcluster", finetune({1: (0.40, 0.35, 0.45), 5: (0.60, 0.55, 0.65)},
                                            verdict={1: (0.20, 0.15, 0.25),
                                                     5: (0.02, -0.01, 0.05)}))
    write(tmp_path, "raw-input", finetune({1: (0.30, 0.28, 0.32), 5: (0.70, 0.68, 0.72)}))
    table = claims_table(recipe, tmp_path)
    rows = {(r.claim, r.shots): r for r in table.rows}
    base = rows[("DeepCluster beats random init and raw pixels", 1)]
    assert (base.effect, base.verdict) == (pytest.approx(20.0), "holds")
    assert rows[("DeepCluster beats random init and raw pixels", 5)].verdict == "inconclusive"
    sobel1, sobel5 = rows[("Sobel vs raw input", 1)], rows[("Sobel vs raw input", 5)]
    assert sobel1.effect == pytest.approx(10.0) and sobel1.verdict == "holds"
    # Half-widths 5 and 2 points combine in quadrature: sqrt(29) ≈ 5.39.
    assert sobel1.ci_high - sobel1.effect == pytest.approx(29 ** 0.5)
    assert sobel5.verdict == "does not hold"
    assert rows[("k = 100 vs k = 10", None)].verdict == "not measured"
    assert rows[("pre-ReLU vs post-ReLU features", None)].verdict == "not measured"
    assert table.measured == ["deepcluster", "raw-input"]
    assert "| Sobel vs raw input | 1 | +10.0 |" in table.table()


def test_results_in_the_older_schema_are_not_measured() -> None:
    old = {"rows": [{"protocol": "all", "init": "pretrained", "shots": 1, "accuracies": [0.5]}]}
    claim = Claim(name="c", statement="", kind="baseline", variant="v")
    assert claim_rows(claim, {"v": old})[0].verdict == "not measured"


def test_single_repeat_results_are_inconclusive(single_repeat_eval: Path) -> None:
    values = json.loads((single_repeat_eval / "finetune.json").read_text())  # no intervals
    baseline = Claim(name="b", statement="", kind="baseline", variant="v")
    contrast = Claim(name="c", statement="", kind="contrast", a="v", b="w")
    rows = claim_rows(baseline, {"v": values}) + claim_rows(contrast, {"v": values, "w": values})
    assert [r.shots for r in rows] == [1, 1]
    assert all(r.verdict == "inconclusive" and r.ci_low is None and r.effect is not None
               and "no interval from one repeat" in r.detail for r in rows)
    assert "no interval from one repeat" in format_claims(rows)


def test_bad_replication_recipes_are_refused() -> None:
    good = {"kind": "replication", "name": "r", "base": "mnist.yaml", "modality": "mnist",
            "variants": {"a": []}, "claims": []}
    with pytest.raises(DomainclustError, match="unknown key"):
        parse_replication({**good, "epochs": 3}, source="r.yaml")
    with pytest.raises(DomainclustError, match="variant 'a'.*unknown config key"):
        parse_replication({**good, "variants": {"a": ["model.widht=2"]}}, source="r.yaml")
    with pytest.raises(DomainclustError, match="not defined under variants"):
        parse_replication({**good, "claims": [{"name": "x", "kind": "contrast", "a": "a",
                                               "b": "zz"}]}, source="r.yaml")
    with pytest.raises(DomainclustError, match="one protocol per table"):
        parse_replication({**good, "low_shot": {"protocol": "both"}}, source="r.yaml")


def test_cli_claims_says_when_nothing_is_measured(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["recipe", "claims", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nothing is measured" in result.output
    assert "| reassign every epoch vs every 10 |" in result.output
