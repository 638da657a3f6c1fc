"""The laptop-scale test of the paper's claims: variants pretrained on a small labelled set,
each scored by the low-shot protocol, and one table saying for each claim whether it holds.

A replication recipe (`kind: replication`) names a base recipe, the low-shot settings and the
claims. A claim is either

- `baseline`: DeepCluster against the best practitioner baseline (raw pixels, channel
  statistics, random init) of one variant: the low-shot protocol's own `verdict`; or
- `contrast`: variant `a` against variant `b` (e.g. Sobel vs raw input): the difference of
  their pretrained means. The two runs are independent, so its 95 % CI combines the two
  intervals' half-widths in quadrature (a normal approximation, stated in the table).

Each variant's results are its run dir's `eval/finetune.json`, in the low-shot schema: `rows`
(`method` in raw_pixels / channel_stats / random_init / pretrained, `protocol`, `shots`,
`metric`, `mean`, `ci_low`, `ci_high`, `repeats`), `split`, and `verdict` per shot count
(`result`, `best_baseline`, `difference`, `ci_low`, `ci_high`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainclust import config as cfg
from domainclust.data.store import TileStore, write_subset
from domainclust.errors import DomainclustError
from domainclust.evaluation.data import save_split, store_split

CLAIM_KINDS = ("baseline", "contrast")
FINETUNE_FILE = Path("eval") / "finetune.json"
SPLIT_FILE = "split.npz"  # the held-out tiles never pretrain; every variant is scored on them
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    kind: str
    variant: str | None = None  # baseline: the variant judged
    a: str | None = None  # contrast: a - b
    b: str | None = None


@dataclass(frozen=True)
class ReplicationRecipe:
    name: str
    title: str
    base: str  # a modality recipe file (mnist.yaml) the variants start from
    modality: str
    overrides: list[str]  # applied to every variant
    variants: dict[str, list[str]]
    low_shot: dict[str, Any]
    claims: list[Claim]
    source: str
    reference: str = "thesis Tables 4.1 and 5.2, at laptop scale"

    kind = "replication"

    @property
    def protocol(self) -> str:
        return str(self.low_shot.get("protocol", "linear"))

    def config(self, variant: str, *, store: str) -> cfg.Config:
        from domainclust.data.modality import load_recipe

        return cfg.resolve(recipe=load_recipe(self.base),
                           overrides=[*self.overrides, *self.variants[variant], f"store={store}"])


_KEYS = {"kind", "name", "title", "base", "modality", "overrides", "variants", "low_shot",
         "claims"}
_CLAIM_KEYS = {"name", "statement", "kind", "variant", "a", "b"}


def parse_replication(values: dict[str, Any], *, source: str) -> ReplicationRecipe:
    unknown = sorted(set(values) - _KEYS)
    if unknown:
        raise DomainclustError(f"recipe {source}: unknown key(s) {', '.join(unknown)}; known "
                               f"keys: {', '.join(sorted(_KEYS))}")
    variants = {str(k): [str(o) for o in (v or [])]
                for k, v in (values.get("variants") or {}).items()}
    claims = []
    for i, c in enumerate(values.get("claims") or []):
        bad = sorted(set(c) - _CLAIM_KEYS)
        if bad:
            raise DomainclustError(f"recipe {source}: claims[{i}]: unknown key(s) {', '.join(bad)}")
        claim = Claim(name=str(c.get("name", f"claim {i}")), statement=str(c.get("statement", "")),
                      kind=str(c.get("kind")), variant=c.get("variant"), a=c.get("a"),
                      b=c.get("b"))
        if claim.kind not in CLAIM_KINDS:
            raise DomainclustError(f"recipe {source}: claims[{i}].kind must be one of "
                                   f"{', '.join(CLAIM_KINDS)}, got {claim.kind!r}")
        used = [claim.variant] if claim.kind == "baseline" else [claim.a, claim.b]
        missing = [v for v in used if v not in variants]
        if missing:
            raise DomainclustError(f"recipe {source}: claim '{claim.name}' uses variant(s) "
                                   f"{missing} not defined under variants")
        claims.append(claim)
    recipe = ReplicationRecipe(
        name=str(values.get("name")), title=str(values.get("title", "")),
        base=str(values.get("base")), modality=str(values.get("modality")),
        overrides=[str(o) for o in values.get("overrides") or []], variants=variants,
        low_shot=dict(values.get("low_shot") or {}), claims=claims, source=source)
    if recipe.protocol not in ("linear", "finetune"):
        raise DomainclustError(f"recipe {source}: low_shot.protocol must be linear or finetune (one "
                               f"protocol per table), got {recipe.protocol!r}")
    for name in variants:  # every variant must resolve to a valid config
        try:
            recipe.config(name, store="store.zarr")
        except DomainclustError as exc:
            raise DomainclustError(f"recipe {source}: variant '{name}': {exc}") from None
    return recipe


@dataclass(frozen=True)
class ClaimRow:
    claim: str
    statement: str
    shots: int | None
    effect: float | None  # percentage points
    ci_low: float | None
    ci_high: float | None
    verdict: str  # holds | does not hold | inconclusive | not measured
    detail: str = ""


def verdict_of(ci_low: float, ci_high: float) -> str:
    if ci_low > 0:
        return "holds"
    if ci_high < 0:
        return "does not hold"
    return "inconclusive"


def _pretrained(values: dict[str, Any], *, protocol: str) -> dict[int, dict[str, Any]]:
    rows = [r for r in values.get("rows", []) if r.get("method") == "pretrained"
            and r.get("protocol", protocol) == protocol]
    return {int(r["shots"]): r for r in rows}


def claim_rows(claim: Claim, results: dict[str, dict[str, Any] | None], *,
               protocol: str = "linear") -> list[ClaimRow]:
    """One row per shot count (percentage points), from the variants' finetune.json values."""
    base = {"claim": claim.name, "statement": claim.statement}
    needed = [claim.variant] if claim.kind == "baseline" else [claim.a, claim.b]
    if any(results.get(v) is None for v in needed):
        absent = [v for v in needed if results.get(v) is None]
        return [ClaimRow(**base, shots=None, effect=None, ci_low=None, ci_high=None,
                         verdict="not measured", detail=f"no results for {', '.join(absent)}")]
    out = []
    old_schema = ClaimRow(**base, shots=None, effect=None, ci_low=None, ci_high=None,
                          verdict="not measured",
                          detail="finetune.json lacks the verdict / CI of the low-shot schema")
    if claim.kind == "baseline":
        verdicts = _verdicts(results[claim.variant])
        if verdicts is None:
            return [old_schema]
        for shots, v in sorted(verdicts.items()):
            ci = None if v["ci_low"] is None else (100 * float(v["ci_low"]),
                                                   100 * float(v["ci_high"]))
            out.append(_claim_row(base, shots=shots, effect=100 * float(v["difference"]), ci=ci,
                                  detail=f"vs {v.get('best_baseline', '?')}"))
        return out
    a, b = (_pretrained(results[x], protocol=protocol) for x in (claim.a, claim.b))
    if not all("ci_low" in r for r in [*a.values(), *b.values()]) or not (a and b):
        return [old_schema]
    for shots in sorted(set(a) & set(b)):
        ra, rb = a[shots], b[shots]
        diff = 100 * (float(ra["mean"]) - float(rb["mean"]))
        ci = None
        if ra["ci_low"] is not None and rb["ci_low"] is not None:
            half = 100 * math.hypot((float(ra["ci_high"]) - float(ra["ci_low"])) / 2,
                                    (float(rb["ci_high"]) - float(rb["ci_low"])) / 2)
            ci = (diff - half, diff + half)
        out.append(_claim_row(base, shots=shots, effect=diff, ci=ci,
                              detail=f"{claim.a} - {claim.b}, independent runs"))
    return out


def _claim_row(base: dict[str, str], *, shots: int, effect: float,
               ci: tuple[float, float] | None, detail: str) -> ClaimRow:
    """A measured row; without an interval (a single repeat) it cannot be decided."""
    if ci is None:
        return ClaimRow(**base, shots=shots, effect=effect, ci_low=None, ci_high=None,
                        verdict="inconclusive", detail=f"{detail}; no interval from one repeat")
    return ClaimRow(**base, shots=shots, effect=effect, ci_low=ci[0], ci_high=ci[1],
                    verdict=verdict_of(*ci), detail=detail)


def _verdicts(values: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
    verdict = values.get("verdict")
    if isinstance(verdict, dict):
        return {int(k): v for k, v in verdict.items()}
    if isinstance(verdict, list):
        return {int(v["shots"]): v for v in verdict}
    return None


def read_results(run_dir: Path, variants: list[str]) -> dict[str, dict[str, Any] | None]:
    """{variant: finetune.json values, or None when that variant has not been measured}."""
    out: dict[str, dict[str, Any] | None] = {}
    for v in variants:
        path = Path(run_dir) / v / FINETUNE_FILE
        out[v] = json.loads(path.read_text()) if path.is_file() else None
    return out


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def format_claims(rows: list[ClaimRow]) -> str:
    lines = ["| claim | shots | effect (pp) | 95% CI | verdict | detail |",
             "|---|---:|---:|---|---|---|"]
    for r in rows:
        ci = "" if r.ci_low is None else f"[{_num(r.ci_low, signed=True)}, " \
                                          f"{_num(r.ci_high, signed=True)}]"
        lines.append(f"| {r.claim} | {'' if r.shots is None else r.shots} | "
                     f"{_num(r.effect, signed=True)} | {ci} | {r.verdict} | {r.detail} |")
    return "\n".join(lines)


@dataclass
class ClaimsTable:
    rows: list[ClaimRow] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)  # variants with results

    def table(self) -> str:
        return format_claims(self.rows)


def claims_table(recipe: ReplicationRecipe, run_dir: Path | str) -> ClaimsTable:
    results = read_results(Path(run_dir), list(recipe.variants))
    rows = [row for claim in recipe.claims
            for row in claim_rows(claim, results, protocol=recipe.protocol)]
    return ClaimsTable(rows=rows, measured=[v for v, r in results.items() if r is not None])


def run_replication(
    recipe: ReplicationRecipe,
    run_dir: Path | str,
    *,
    variants: list[str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> ClaimsTable:
    """Ingest the base modality's data once and split it, then pretrain every variant not yet
    measured on the training side (each in RUN/<variant>, resumable), score it on the held-out
    side, and build the claims table."""
    from domainclust.data.modality import get_modality
    from domainclust.engine.deepcluster import pretrain

    run = Path(run_dir)
    chosen = variants or list(recipe.variants)
    unknown = [v for v in chosen if v not in recipe.variants]
    if unknown:
        raise DomainclustError(f"{recipe.name} has no variant {', '.join(unknown)}; variants: "
                               f"{', '.join(recipe.variants)}")
    modality = get_modality(recipe.modality)
    store = run / "store.zarr"
    modality.ingest([], store, options=dict(modality.defaults), workers=1, progress=progress)
    full = TileStore(store)
    split = store_split(full, full.labels, split_path=None, test_fraction=TEST_FRACTION, seed=0)
    save_split(run / SPLIT_FILE, split)
    pool = write_subset(full, split.train, run / "pretrain.zarr")
    for v in chosen:
        if (run / v / FINETUNE_FILE).is_file():
            continue
        log(f"variant {v}: {' '.join(recipe.variants[v]) or '(base recipe)'}")
        pretrain(recipe.config(v, store=str(pool.path)), run / v, progress=progress, log=log)
        measure_low_shot(run / v, store, settings=recipe.low_shot, split_path=run / SPLIT_FILE,
                         log=log)
    return claims_table(recipe, run)


def measure_low_shot(run_dir: Path, store: Path, *, settings: dict[str, Any],
                     split_path: Path | None = None, log: Callable[[str], None]) -> Path:
    """The low-shot protocol on a variant's checkpoint; writes RUN/eval/finetune.json."""
    from domainclust.evaluation.lowshot.fewshot import low_shot
    from domainclust.evaluation.lowshot.finetune import FinetuneSettings
    from domainclust.evaluation.results import write_finetune

    s = dict(settings)
    result = low_shot(run_dir, store, shots=list(s.pop("shots", [1, 5, 10])),
                      repeats=int(s.pop("repeats", 10)), protocol=str(s.pop("protocol", "linear")),
                      settings=FinetuneSettings(**s), split_path=split_path, log=log)
    return write_finetune(result, run_dir / FINETUNE_FILE.parent)["json"]
