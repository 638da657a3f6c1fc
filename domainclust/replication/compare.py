"""`recipe compare`: our figures beside the paper's, row by row, with the gap.

Rows come from the run dir's `results/*.json` and the paper's numbers from the evaluation
recipes recorded in its `recipe.json`. A row the paper reports but the run has not produced
yet shows "not run"; a row without a paper number shows "-" there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domainclust.errors import DomainclustError
from domainclust.replication.runner import RECIPE_FILE, RESULTS_DIR


@dataclass(frozen=True)
class ComparedRow:
    evaluation: str
    reference: str
    model: str
    row: str
    ours: float | None
    paper: float | None

    @property
    def gap(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


def compare_run(run_dir: Path | str) -> list[ComparedRow]:
    run = Path(run_dir)
    record_path = run / RECIPE_FILE
    if not record_path.is_file():
        raise DomainclustError(f"{run} has no {RECIPE_FILE}; is it a `recipe run` run dir?")
    record = json.loads(record_path.read_text())
    model = record["recipe"]["name"]
    out: list[ComparedRow] = []
    for ev in record["evaluations"]:
        result = _result(run / RESULTS_DIR / f"{ev['name']}.json")
        ours = {(r["model"], r["row"]): float(r["value"]) for r in result.get("rows", [])}
        paper = {(m, row): v for m, rows in ev["paper"].items() if m in (model, "random")
                 for row, v in rows.items()}
        keys = list(ours) + [k for k in paper if k not in ours]
        for m, row in keys:
            out.append(ComparedRow(evaluation=ev["name"], reference=ev["reference"], model=m,
                                   row=row, ours=ours.get((m, row)), paper=paper.get((m, row))))
        if not keys:
            out.append(ComparedRow(evaluation=ev["name"], reference=ev["reference"], model=model,
                                   row="(not run)", ours=None, paper=None))
    return out


def _result(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DomainclustError(f"{path} is not valid JSON ({exc}); delete it to rerun that "
                               "evaluation") from None


def _cell(value: float | None, *, missing: str, signed: bool = False) -> str:
    if value is None:
        return missing
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def format_table(rows: list[ComparedRow]) -> str:
    lines = ["| evaluation | paper table | model | row | ours | paper | gap |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.evaluation} | {r.reference} | {r.model} | {r.row} | "
                     f"{_cell(r.ours, missing='not run')} | {_cell(r.paper, missing='-')} | "
                     f"{_cell(r.gap, missing='', signed=True)} |")
    return "\n".join(lines)


def to_dicts(rows: list[ComparedRow]) -> list[dict[str, Any]]:
    return [{**asdict(r), "gap": r.gap} for r in rows]
