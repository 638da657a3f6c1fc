"""The one low-shot result type: `finetune.json` as `write_finetune` writes it from a real
single-repeat run reads back unchanged, every table and the plot show the missing intervals as
n/a, and a damaged file is refused with its name."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from domainclust.config import load_yaml, resolve
from domainclust.engine.deepcluster import pretrain
from domainclust.errors import DomainclustError
from domainclust.evaluation.lowshot.result import load_lowshot
from domainclust.report.lowshot import lowshot_figure
from domainclust.report.page import lowshot_tables

pytest_plugins = ["test_evaluation_fixtures"]

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_single_repeat_result_reads_back_and_shows_no_interval(single_repeat_eval: Path) -> None:
    path = single_repeat_eval / "finetune.json"
    result = load_lowshot(path)
    assert json.loads(json.dumps(result.to_dict())) == json.loads(path.read_text())
    assert all(r.ci_low is None and r.ci_high is None and r.repeats == 1 for r in result.rows)
    assert [v.shots for v in result.verdict] == [1]
    assert {v.result for v in result.verdict} == {"inconclusive"}
    assert "95% CI n/a" in result.table().splitlines()[-1]
    html = lowshot_tables(result, source=path)
    assert "n/a" in html and "finetune.json" in html
    figure = lowshot_figure(result)
    assert figure.png.startswith(PNG) and "single repeat" in figure.caption
    assert (single_repeat_eval / "finetune.png").read_bytes().startswith(PNG)
    rows = list(csv.DictReader((single_repeat_eval / "finetune.csv").open()))
    assert rows and all(r["ci_low"] == "" and r["ci_high"] == "" for r in rows)


def test_a_damaged_finetune_json_is_refused_with_its_name(single_repeat_eval: Path,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "finetune.json"
    assert load_lowshot(path) is None
    good = json.loads((single_repeat_eval / "finetune.json").read_text())

    def refused(values: object, message: str) -> None:
        path.write_text(json.dumps(values))
        with pytest.raises(DomainclustError, match=message):
            load_lowshot(path)

    first = {k: v for k, v in good["rows"][0].items() if k != "protocol"}
    refused({**good, "rows": [first]}, r"finetune.json: rows\[0\] lacks protocol")
    refused({**good, "rows": [{**good["rows"][0], "mean": "high"}]}, r"rows\[0\].mean: expected float")
    refused({**good, "verdict": {"1": {**good["verdict"]["1"], "result": "maybe"}}},
            "result 'maybe' is not one of")
    refused({k: v for k, v in good.items() if k != "n_test"}, "lacks n_test")
    path.write_text("{")
    with pytest.raises(DomainclustError, match="not readable JSON"):
        load_lowshot(path)


def test_a_run_whose_evaluation_has_no_interval_is_extended_and_reported(
        tiny_run: Path, single_repeat_eval: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(single_repeat_eval, run / "eval")
    config = resolve(recipe=load_yaml(run / "config.yaml"), overrides=["epochs=2"])
    history = pretrain(config, run, progress=False, log=lambda _: None)
    assert [r["epoch"] for r in history] == [0, 1]
    page = (run / "report" / "index.html").read_text()
    assert 'id="fig-lowshot"' in page and "n/a" in page and "Left out" not in page

