"""The low-shot result as one type: what `low_shot` returns, `write_finetune` stores as
`finetune.json` and the report reads back with `load_lowshot`.

A confidence interval is None when the repeats cannot give one (a single repeat); `interval`
shows it as "n/a", and every table and plot goes through it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from domainclust.config import build_dataclass
from domainclust.errors import DomainclustError
from domainclust.evaluation.stats import DID_NOT_HELP, HELPED, INCONCLUSIVE

RESULTS = (HELPED, DID_NOT_HELP, INCONCLUSIVE)
NO_INTERVAL = "n/a"

T = TypeVar("T")


@dataclass
class Row:
    """One method x protocol x shots x metric, summarised over the repeats."""

    method: str
    protocol: str
    shots: int
    metric: str
    mean: float
    ci_low: float | None  # None with a single repeat
    ci_high: float | None
    repeats: int
    values: list[float]
    choices: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Verdict:
    """Pretrained against the strongest baseline at one shot count (paired difference)."""

    shots: int
    result: str  # one of RESULTS
    method: str  # the pretrained row compared: "pretrained/<protocol>"
    best_baseline: str  # "<method>/<protocol>"
    difference: float
    ci_low: float | None
    ci_high: float | None


@dataclass
class LowShotResult:
    rows: list[Row]
    verdict: list[Verdict]
    split: str
    n_classes: int
    n_test: int
    checkpoint: str
    seed: int
    settings: dict[str, Any]

    def row(self, method: str, protocol: str, shots: int, metric: str = "top1") -> Row:
        return next(r for r in self.rows
                    if (r.method, r.protocol, r.shots, r.metric) == (method, protocol, shots, metric))

    def to_dict(self) -> dict[str, Any]:
        """The `finetune.json` form: verdicts keyed by the shot count."""
        out = asdict(self)
        out["verdict"] = {str(v.shots): {k: val for k, val in asdict(v).items() if k != "shots"}
                          for v in self.verdict}
        return out

    def table(self) -> str:
        title = (f"low-shot accuracy on {self.n_test} test tiles, {self.n_classes} classes, "
                 f"{self.rows[0].repeats} repeats, mean [95% CI]; split: {self.split}")
        lines = [title, "| method | protocol | shots | top-1 | balanced |", "|---|---|---:|---:|---:|"]
        for r in self.rows:
            if r.metric != "top1":
                continue
            b = self.row(r.method, r.protocol, r.shots, "balanced_accuracy")
            lines.append(f"| {r.method} | {r.protocol} | {r.shots} | {_percent(r)} | "
                         f"{_percent(b)} |")
        for v in self.verdict:
            ci = interval(v.ci_low, v.ci_high, scale=100, fmt="+.1f")
            lines.append(f"verdict at {v.shots} shots: {v.result} ({v.method} vs "
                         f"{v.best_baseline}: {100 * v.difference:+.1f} points, 95% CI {ci})")
        return "\n".join(lines)


def interval(low: float | None, high: float | None, *, scale: float = 1.0,
             fmt: str = ".3f") -> str:
    """`[low, high]` formatted, or "n/a" when there is no interval."""
    if low is None or high is None:
        return NO_INTERVAL
    return f"[{scale * low:{fmt}}, {scale * high:{fmt}}]"


def _percent(r: Row) -> str:
    return f"{100 * r.mean:.1f}% {interval(r.ci_low, r.ci_high, scale=100, fmt='.1f')}"


def load_lowshot(path: Path) -> LowShotResult | None:
    """The result stored at `path`, None when there is none; a malformed file is refused."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DomainclustError(f"{path} is not readable JSON ({exc})") from None
    return from_dict(data, source=path)


def from_dict(data: Any, *, source: Path) -> LowShotResult:
    """A result from its `finetune.json` form; errors name `source` and the faulty entry."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise DomainclustError(f"{source}: expected an object with a non-empty list 'rows'")
    rows = [_parse(Row, r, where=f"rows[{i}]", source=source)
            for i, r in enumerate(data["rows"])]
    verdicts = data.get("verdict")
    if not isinstance(verdicts, dict):
        raise DomainclustError(f"{source}: expected 'verdict' as an object keyed by shots")
    verdict = []
    for shots, v in verdicts.items():
        if not str(shots).isdigit() or not isinstance(v, dict):
            raise DomainclustError(f"{source}: verdict[{shots!r}] is not a verdict per shot count")
        verdict.append(_parse(Verdict, {**v, "shots": int(shots)}, where=f"verdict[{shots}]",
                              source=source))
        if v["result"] not in RESULTS:
            raise DomainclustError(f"{source}: verdict[{shots}] result {v['result']!r} is not "
                                   f"one of {', '.join(RESULTS)}")
    result = _parse(LowShotResult, {**data, "verdict": []}, where="", source=source)
    return dataclasses.replace(result, rows=rows,
                               verdict=sorted(verdict, key=lambda v: v.shots))


def _parse(cls: type[T], values: Any, *, where: str, source: Path) -> T:
    required = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if not isinstance(values, dict) or k not in values]
    if missing:
        raise DomainclustError(f"{source}: {where or 'the file'} lacks {', '.join(missing)}")
    return build_dataclass(cls, values, where=f"{where}." if where else "", what=f"{source}: key")
