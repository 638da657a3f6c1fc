"""Folds pooled into one low-shot result: every fold's repeats in each row, the verdict judged on
them (paired) and again over the folds' means, the pooled result stored and read back like any
other, and folds that score different things refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from domainclust.errors import DomainclustError
from domainclust.evaluation import low_shot
from domainclust.evaluation.lowshot.folds import judge_over_folds, pool_folds
from domainclust.evaluation.lowshot.result import load_lowshot
from domainclust.evaluation.results import write_finetune

pytest_plugins = ["test_evaluation_fixtures"]


def test_two_folds_pool_their_repeats_and_are_judged_on_them(
        tiny_run: Path, small_store: Path, single_repeat_eval: Path, tmp_path: Path) -> None:
    folds = [low_shot(tiny_run, small_store, shots=[1], repeats=2, max_test=20, seed=seed,
                      device="cpu") for seed in (0, 1)]
    assert folds[0].split != folds[1].split
    pooled = pool_folds(folds, names=["a", "b"])

    for i, row in enumerate(pooled.rows):
        parts = [fold.rows[i].values for fold in folds]
        assert row.values == parts[0] + parts[1] and row.repeats == 4
        assert row.mean == pytest.approx(np.mean([np.mean(p) for p in parts]))
    for v in pooled.verdict:
        ours = pooled.row("pretrained", "linear", v.shots)
        best = max((r for r in pooled.rows if r.shots == v.shots and r.metric == "top1"
                    and r.method != "pretrained"), key=lambda r: r.mean)
        diff = np.asarray(ours.values) - np.asarray(best.values)
        half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
        assert v.best_baseline == f"{best.method}/linear"
        assert v.difference == pytest.approx(diff.mean())
        assert (v.ci_low, v.ci_high) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert pooled.n_test == folds[0].n_test + folds[1].n_test
    assert pooled.settings["folds"] == ["a", "b"] and pooled.settings["repeats"] == 4

    write_finetune(pooled, tmp_path)
    stored = tmp_path / "finetune.json"
    assert load_lowshot(stored).to_dict() == json.loads(stored.read_text())
    assert json.loads(stored.read_text())["settings"]["folds"] == ["a", "b"]
    assert judge_over_folds(load_lowshot(stored)) == judge_over_folds(pooled)

    for v, by_repeat in zip(judge_over_folds(pooled), pooled.verdict, strict=True):
        assert (v.shots, v.best_baseline) == (by_repeat.shots, by_repeat.best_baseline)
        ours, (method, protocol) = v.method.split("/"), v.best_baseline.split("/")
        per_fold = [np.mean(np.asarray(f.row(*ours, v.shots).values)
                            - np.asarray(f.row(method, protocol, v.shots).values)) for f in folds]
        half = stats.t.ppf(0.975, 1) * np.std(per_fold, ddof=1) / np.sqrt(2)
        assert v.difference == pytest.approx(np.mean(per_fold))
        assert (v.ci_low, v.ci_high) == pytest.approx((v.difference - half, v.difference + half))

    other = load_lowshot(single_repeat_eval / "finetune.json")  # a single repeat
    with pytest.raises(DomainclustError, match="fold 'single' scores other"):
        pool_folds([folds[0], other], names=["a", "single"])
    with pytest.raises(DomainclustError, match="two or more"):
        pool_folds([folds[0]], names=["a"])
    with pytest.raises(DomainclustError, match="pooled from folds"):
        judge_over_folds(folds[0])
