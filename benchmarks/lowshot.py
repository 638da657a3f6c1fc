"""Shared driver of the low-shot benchmarks: recipe variants pretrained on a pool of unlabelled
tiles and scored by `domainclust finetune`'s frozen protocols (linear, linear-gap, knn) on a
fixed split."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from domainclust.config import resolve
from domainclust.data.modality import load_recipe
from domainclust.data.store import TileStore, write_subset
from domainclust.engine.deepcluster import pretrain
from domainclust.evaluation.data import Split, save_split
from domainclust.evaluation.lowshot.fewshot import FROZEN, low_shot
from domainclust.evaluation.results import write_finetune

METHODS = ("raw_pixels", "channel_stats", "random_init", "pretrained")


def shot_counts(text: str) -> list[int]:
    """`1,5,10` → [1, 5, 10]."""
    return [int(s) for s in text.split(",")]


def add_driver_arguments(ap: argparse.ArgumentParser, *, recipe: str, out: str,
                         protocol: bool = True) -> None:
    """The options every low-shot benchmark takes: output folder, variants, repeats, shots,
    and (unless the benchmark ranks several) the frozen protocol that scores and ranks."""
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--variant", action="append", default=[],
                    help=f"NAME:key=value;key=value ({recipe} recipe overrides)")
    ap.add_argument("--common", default="",
                    help="key=value;... applied to every variant (e.g. fewer epochs)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shots", type=shot_counts, default=[1, 5, 10])
    ap.add_argument("--select-shots", type=shot_counts, default=[5, 10],
                    help="shot counts ranked on the validation tiles")
    if protocol:
        ap.add_argument("--protocol", choices=FROZEN, default="linear",
                        help="linear: conv stages pooled to ~10k values (the paper's probe); "
                        "linear-gap: each stage averaged over the tile; knn")


def parse_variants(items: list[str], *, common: str = "") -> dict[str, list[str]]:
    """`NAME:key=value;key=value` → {NAME: `common` overrides + its own}; no item means the
    recipe itself."""
    shared = [o for o in common.split(";") if o]
    variants = {}
    for item in items or ["recipe:"]:
        name, _, rest = item.partition(":")
        variants[name] = [*shared, *(o for o in rest.split(";") if o)]
    return variants


def eval_dir(run: Path, protocol: str) -> Path:
    """Where a run's low-shot result of `protocol` goes (the linear one in `eval`)."""
    return run / ("eval" if protocol == "linear" else f"eval-{protocol}")


def tagged(name: str) -> Callable[[str], None]:
    """A log that prefixes every line with the run's name."""
    return lambda message: print(f"[{name}] {message}", flush=True)


def pretrain_run(name: str, overrides: list[str], *, recipe: Path, run: Path) -> None:
    """Pretrain `recipe` + `overrides` into `run` (a finished pretraining is resumed, not
    repeated)."""
    config = resolve(recipe=load_recipe(str(recipe)), overrides=["report=false", *overrides])
    pretrain(config, run, progress=False, log=tagged(name))


def run_variant(name: str, overrides: list[str], *, recipe: Path, run: Path, pool: Path,
                store: Path, labels: Path, split: Path, repeats: int, shots: list[int],
                max_test: int | None = None, protocol: str = "linear", seed: int = 0) -> dict:
    """Pretrain `recipe` + `overrides` on `pool`, score it by `protocol` on `split` (`seed`
    draws the shots); a finished score is kept."""
    if not (eval_dir(run, protocol) / "finetune.json").is_file():
        pretrain_run(name, [f"store={pool}", *overrides], recipe=recipe, run=run)
        result = low_shot(run, store, shots=shots, repeats=repeats, split_path=split,
                          labels_path=labels, max_test=max_test, protocol=protocol,
                          seed=seed, log=tagged(name))
        write_finetune(result, eval_dir(run, protocol))
    return read_result(run, protocol)


def pretrain_sources(items: list[str], *, common: str, recipe: Path, out: Path) -> None:
    """Each `NAME:overrides` source pretrained into OUT/NAME and never scored: a pool of other
    subjects, scenes or sensors (`store=` among its overrides) that variants continue from with
    `model.init=OUT/NAME`."""
    for name, overrides in (parse_variants(items, common=common) if items else {}).items():
        if name in ("select", "test") or not any(o.startswith("store=") for o in overrides):
            raise SystemExit(f"source {name!r}: needs its own store= and a name other than "
                             "select or test")
        pretrain_run(name, overrides, recipe=recipe, run=out / name)


def read_result(run: Path, protocol: str) -> dict:
    """A finished run's low-shot result of `protocol`."""
    return json.loads((eval_dir(run, protocol) / "finetune.json").read_text())


def top1(result: dict, method: str, shots: int) -> float:
    """Mean top-1 of `method` under the result's (first) protocol."""
    protocol = result["settings"]["protocols"][0]
    return next(row["mean"] for row in result["rows"]
                if row["method"] == method and row["shots"] == shots
                and row["metric"] == "top1" and row["protocol"] == protocol)


def summary(results: dict[str, dict]) -> str:
    lines = ["| variant | shots | raw pixels | channel stats | random init | pretrained | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        for s, v in r["verdict"].items():
            pct = [f"{100 * top1(r, m, int(s)):.1f}" for m in METHODS]
            ci = ("" if v["ci_low"] is None else
                  f" [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}]")
            lines.append(f"| {name} | {s} | {' | '.join(pct)} | {v['result']} "
                         f"({100 * v['difference']:+.1f}{ci} vs {v['best_baseline']}) |")
    return "\n".join(lines)


def write_stages(store: TileStore, splits: dict[str, Split], out: Path,
                 pools: dict[str, np.ndarray] | None = None) -> dict[str, tuple]:
    """Per stage (`select`, `test`): its split file and a pretraining pool, the stage's tiles in
    `pools` (labelled or not) or else its labelled training side."""
    stages = {}
    for stage, split in splits.items():
        save_split(out / f"{stage}-split.npz", split)
        tiles = split.train if pools is None else pools[stage]
        pool = write_subset(store, tiles, out / f"{stage}-pretrain.zarr")
        stages[stage] = (out / f"{stage}-split.npz", pool.path)
        print(f"{stage}: {split.describe()}; pretraining pool {pool.n} tiles")
    return stages


def select_then_test(variants: dict[str, list[str]], *, stages: dict[str, tuple], recipe: Path,
                     out: Path, store: Path, labels: Path, repeats: int, shots: list[int],
                     rank_shots: list[int], max_test: int | None = None,
                     protocol: str = "linear", seed: int = 0) -> tuple[str, dict]:
    """Every variant pretrained on the `select` pool and scored at `rank_shots` on validation
    tiles; the one with the best mean pretrained top-1 there is then pretrained on the `test`
    pool and scored once at `shots` on the test tiles, so nothing is chosen on the test split.
    `{stage}` in an override stands for the stage's name, for a pool or an init that differs
    between stages. Every score is by `protocol`, its shots drawn by `seed`. Returns the chosen
    variant and its test result."""
    def run(stage: str, name: str) -> dict:
        split, pool = stages[stage]
        overrides = [o.replace("{stage}", stage) for o in variants[name]]
        return run_variant(name, overrides, recipe=recipe, run=out / stage / name,
                           pool=pool, store=store, labels=labels, split=split, repeats=repeats,
                           shots=rank_shots if stage == "select" else shots, max_test=max_test,
                           protocol=protocol, seed=seed)

    selection = {}
    for name in variants:
        selection[name] = run("select", name)
        print(summary({name: selection[name]}), flush=True)
    chosen = max(selection, key=lambda n: sum(top1(selection[n], "pretrained", s)
                                              for s in rank_shots))
    print(f"validation tiles:\n{summary(selection)}\nchosen on validation: {chosen}")
    tested = run("test", chosen)
    print(f"test tiles, scored once:\n{summary({chosen: tested})}")
    return chosen, tested
