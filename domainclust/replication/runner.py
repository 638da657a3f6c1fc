"""`recipe run`: ingest the datasets a reference recipe needs, pretrain, run its evaluations.

Everything lands in one run dir, and every step resumes:

    R/config.yaml, metrics.jsonl, checkpoints/   the pretraining run (resumes per epoch)
    R/recipe.json                                 the recipe, resolved (a different one is refused)
    R/data/<dataset>-<split>-<digest>.zarr        ingested stores (reused once complete)
    R/random_init.pt                              the random-init baseline network
    R/results/<evaluation>.json                   rows (model, row, value %) and the raw result

An evaluation whose dataset was not given is reported as skipped and runs on a later call that
gives it; a finished evaluation is not run again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainclust.atomic import atomic_write_text
from domainclust.errors import DomainclustError
from domainclust.replication import protocols
from domainclust.replication.datasets import prepare_store
from domainclust.replication.layouts import voc2007
from domainclust.replication.recipes import (
    EvaluationRecipe,
    PretrainRecipe,
    describe,
    evaluations_of,
    load_recipe,
)

RECIPE_FILE = "recipe.json"
RESULTS_DIR = "results"


@dataclass
class RecipeRun:
    run_dir: Path
    recipe: PretrainRecipe
    done: list[str]
    skipped: dict[str, str]  # evaluation → why


def parse_data(values: list[str], *, default: str) -> dict[str, Path]:
    """`NAME=PATH` pairs (a bare PATH is the recipe's pretraining dataset) → {name: path}."""
    out: dict[str, Path] = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = default, item
        name = name.strip()
        if name in out:
            raise DomainclustError(f"--data {item}: dataset '{name}' given twice")
        if not Path(path).exists():
            raise DomainclustError(f"--data {item}: {path} does not exist")
        out[name] = Path(path)
    return out


def _record_recipe(run_dir: Path, recipe: PretrainRecipe,
                   evaluations: list[EvaluationRecipe]) -> None:
    path = run_dir / RECIPE_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("recipe", {}).get("name") != recipe.name:
            raise DomainclustError(f"{run_dir} holds a run of recipe "
                                   f"'{old.get('recipe', {}).get('name')}', not '{recipe.name}'; "
                                   "use another --run-dir")
    record = {"recipe": describe(recipe), "evaluations": [describe(e) for e in evaluations]}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def run_recipe(
    name: str,
    *,
    data: list[str],
    run_dir: Path | str,
    overrides: list[str] | None = None,
    eval_overrides: list[str] | None = None,
    ingest_overrides: list[str] | None = None,
    only: list[str] | None = None,
    workers: int = 1,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> RecipeRun:
    """Ingest if needed, pretrain (or resume), then every evaluation not yet done."""
    from domainclust.engine.deepcluster import pretrain

    recipe = load_recipe(name, overrides=overrides)
    if not isinstance(recipe, PretrainRecipe):
        hint = (f"; pretrain on it with `domainclust pretrain --config {name} --store S.zarr "
                "--run-dir R`" if recipe.kind == "domain" else "")
        raise DomainclustError(f"'{name}' is {'an' if recipe.kind == 'evaluation' else 'a'} "
                               f"{recipe.kind} recipe; `recipe run` takes a pretraining recipe "
                               f"(see `recipe list`){hint}")
    evaluations = evaluations_of(recipe, eval_overrides=eval_overrides, only=only)
    paths = parse_data(data, default=recipe.dataset)
    if recipe.dataset not in paths:
        raise DomainclustError(f"{recipe.name} pretrains on {recipe.dataset}: pass --data "
                               f"{recipe.dataset}=PATH")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    _record_recipe(run, recipe, evaluations)
    extra = _ingest_overrides(ingest_overrides or [])

    def store(dataset: str, split: str, options: dict[str, Any]) -> Path:
        return prepare_store(dataset, paths[dataset], split, options={**options, **extra},
                             data_dir=run / "data", workers=workers, progress=progress, log=log)

    pool = store(recipe.dataset, recipe.split, recipe.ingest)
    config = dataclasses.replace(recipe.config,
                                 data=dataclasses.replace(recipe.config.data, store=str(pool)))
    pretrain(config, run, progress=progress, log=log)

    done, skipped = [], {}
    for ev in evaluations:
        out = run / RESULTS_DIR / f"{ev.name}.json"
        if out.is_file():
            done.append(ev.name)
            continue
        why = not_runnable(ev, paths)
        if why:
            skipped[ev.name] = why
            log(f"{ev.name}: skipped ({why})")
            continue
        log(f"{ev.name}: {ev.title}")
        record = _evaluate(ev, run=run, model=recipe.name, seed=config.seed,
                           device=config.device, root=paths[ev.dataset], store=store,
                           progress=progress, log=log)
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
        done.append(ev.name)
    return RecipeRun(run_dir=run, recipe=recipe, done=done, skipped=skipped)


def not_runnable(ev: EvaluationRecipe, paths: dict[str, Path]) -> str | None:
    """Why `recipe run` cannot run `ev` now (it is then skipped and reported), else None."""
    if ev.dataset not in paths:
        return f"no --data {ev.dataset}=PATH given"
    return None


def _ingest_overrides(items: list[str]) -> dict[str, Any]:
    from domainclust.config import parse_value

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise DomainclustError(f"--ingest-set expects key=value, got '{item}'")
        out[key.strip()] = parse_value(raw)
    return out


def _evaluate(ev: EvaluationRecipe, *, run: Path, model: str, seed: int, device: str,
              root: Path, store: Callable[[str, str, dict[str, Any]], Path], progress: bool,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Rows of the pretrained network, then of the random-init baseline when the recipe asks."""
    networks = [(model, run)]
    if ev.baseline == "random":
        networks.append(("random", protocols.write_random_init(run, run / "random_init.pt",
                                                               seed=seed)))
    rows: list[protocols.Row] = []
    raw: dict[str, Any] = {}
    for name, checkpoint in networks:
        if ev.protocol == "voc":
            r, values = protocols.voc_rows(ev, checkpoint=checkpoint, model=name,
                                           voc_root=voc2007(root), seed=seed, device=device,
                                           log=log)
        elif ev.protocol == "low-shot":
            r, values = protocols.low_shot_rows(
                ev, checkpoint=checkpoint, model=name,
                store=store(ev.dataset, ev.train_split, ev.ingest),
                out=run / RESULTS_DIR / ev.name, seed=seed, device=device, log=log)
        else:
            stores = {split: store(ev.dataset, split, ev.ingest)
                      for split in (ev.train_split, ev.test_split)}
            if ev.protocol == "segment":
                r, values = protocols.segment_rows(ev, checkpoint=checkpoint, model=name,
                                                   stores=stores, seed=seed, device=device,
                                                   log=log)
            else:
                run_protocol = (protocols.linear_rows if ev.protocol == "linear"
                                else protocols.mlp_rows)
                r, values = run_protocol(ev, checkpoint=checkpoint, model=name, stores=stores,
                                         seed=seed, device=device, progress=progress)
        for row in r:
            log(f"  {row['model']:>16s} {row['row']:>20s} {row['value']:6.2f}")
        rows += r
        raw[name] = values
    return {"evaluation": ev.name, "protocol": ev.protocol, "metric": ev.metric,
            "reference": ev.reference, "rows": rows, "raw": raw}
