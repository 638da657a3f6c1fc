"""Low-shot results of several folds as one: leave one subject, scan or scene out, once for each.

Every row holds the repeats of every fold, so with as many repeats per fold its mean is the mean
over folds; the verdict is judged on those repeats like any other (paired, since the methods of
one repeat share its shots). That interval is over shot draws on the folds' networks, not over
what differs between folds (subjects, pretraining seeds); `judge_over_folds` takes the fold as
the unit instead, and with a handful of folds its interval is as wide as that makes it.
"""

from __future__ import annotations

import numpy as np

from domainclust.errors import DomainclustError
from domainclust.evaluation.lowshot.fewshot import judge, summarise, verdict_of
from domainclust.evaluation.lowshot.result import LowShotResult, Row, Verdict
from domainclust.evaluation.stats import mean_ci


def pool_folds(results: list[LowShotResult], *, names: list[str]) -> LowShotResult:
    """One result from the folds' `results` (named `names`), which must score the same methods,
    protocols, shots and metrics with as many repeats each."""
    if len(results) < 2 or len(results) != len(names):
        raise DomainclustError("pooling folds takes two or more results, one name each")
    first = results[0]

    def layout(result: LowShotResult) -> list[tuple]:
        return [(r.method, r.protocol, r.shots, r.metric, r.repeats) for r in result.rows]

    for name, result in zip(names, results, strict=True):
        if layout(result) != layout(first) or result.n_classes != first.n_classes:
            raise DomainclustError(f"fold {name!r} scores other methods, shots, classes or "
                                   f"repeats than fold {names[0]!r}: its results do not pool")
    rows = []
    for i, row in enumerate(first.rows):
        values = [v for result in results for v in result.rows[i].values]
        rows.append(Row(method=row.method, protocol=row.protocol, shots=row.shots,
                        metric=row.metric, **summarise(values), values=values,
                        choices=[c for result in results for c in result.rows[i].choices]))
    protocol = first.settings["protocols"][0]
    return LowShotResult(
        rows=rows, verdict=[judge(rows, shots=v.shots, protocol=protocol) for v in first.verdict],
        split="; ".join(f"{name}: {r.split}" for name, r in zip(names, results, strict=True)),
        n_classes=first.n_classes, n_test=sum(r.n_test for r in results),
        checkpoint="; ".join(r.checkpoint for r in results), seed=first.seed,
        settings={**first.settings, "repeats": sum(r.settings["repeats"] for r in results),
                  "folds": list(names)})


def judge_over_folds(pooled: LowShotResult) -> list[Verdict]:
    """`pooled`'s verdicts with the fold as the unit: each fold's mean paired difference against
    the same strongest baseline, and the t-interval over those means."""
    folds = pooled.settings.get("folds")
    if not folds:
        raise DomainclustError("judging over folds takes a result pooled from folds")
    verdicts = []
    for v in pooled.verdict:
        ours = pooled.row(*v.method.split("/"), v.shots)
        best = pooled.row(*v.best_baseline.split("/"), v.shots)
        paired = np.asarray(ours.values) - np.asarray(best.values)
        verdicts.append(verdict_of(mean_ci(paired.reshape(len(folds), -1).mean(axis=1)),
                                   shots=v.shots, method=v.method,
                                   best_baseline=v.best_baseline))
    return verdicts
