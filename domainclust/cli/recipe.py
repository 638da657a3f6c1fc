"""`domainclust recipe ...`: the shipped recipes by name (the domain ones and the paper's); the
paper's run and compared with it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml

recipe_app = typer.Typer(no_args_is_help=True,
                         help="The shipped recipes (domain and the paper's): list, show, run, "
                              "compare.")

SET = typer.Option([], "--set", help="pretraining config key=value (epochs, k, ...); repeatable")
EVAL_SET = typer.Option([], "--eval-set", help="evaluation setting key=value (steps, repeats, "
                        "shots, ...), applied to every evaluation that has it; repeatable")


@recipe_app.command("list")
def list_recipes() -> None:
    """The shipped recipes: domain configs, the paper's models, then its protocols."""
    from domainclust.replication.recipes import load_recipe, recipe_names

    recipes = [load_recipe(n) for n in recipe_names()]
    for kind in ("domain", "pretrain", "evaluation", "replication"):
        typer.echo(f"{kind}:")
        for r in recipes:
            if r.kind == kind:
                typer.echo(f"  {r.name:20s} {r.title} ({r.reference})")


@recipe_app.command("show")
def show(name: str = typer.Argument(..., help="recipe name (see `recipe list`) or YAML file"),
         set_: list[str] = SET, eval_set: list[str] = EVAL_SET) -> None:
    """Print a recipe's fully resolved settings (YAML)."""
    from domainclust.replication.recipes import describe, load_recipe

    recipe = load_recipe(name, overrides=list(set_), eval_overrides=list(eval_set))
    typer.echo(yaml.safe_dump(describe(recipe), sort_keys=False), nl=False)


@recipe_app.command("run")
def run(name: str = typer.Argument(..., help="pretraining recipe name or YAML file"),
        data: list[str] = typer.Option(..., "--data", help="NAME=PATH of a dataset (imagenet, "
                                       "places365, voc2007, flickr); a bare PATH is the "
                                       "pretraining dataset; repeatable"),
        run_dir: Path = typer.Option(..., "--run-dir"),
        set_: list[str] = SET, eval_set: list[str] = EVAL_SET,
        ingest_set: list[str] = typer.Option([], "--ingest-set", help="ingest option "
                                             "key=value for every store (tile_size=...)"),
        only: list[str] = typer.Option([], "--only", help="run only these evaluations"),
        workers: int = typer.Option(1, "--workers", help="ingest processes"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars")) -> None:
    """Ingest if needed, pretrain, and run the recipe's evaluations (all resumable)."""
    from domainclust.replication.compare import compare_run, format_table
    from domainclust.replication.runner import run_recipe

    result = run_recipe(name, data=list(data), run_dir=run_dir, overrides=list(set_),
                        eval_overrides=list(eval_set), ingest_overrides=list(ingest_set),
                        only=[o for item in only for o in item.split(",") if o] or None,
                        workers=workers, progress=not quiet, log=typer.echo)
    typer.echo(format_table(compare_run(result.run_dir)))


@recipe_app.command("compare")
def compare(run_dir: Path = typer.Argument(..., help="run dir of `recipe run`"),
            out: Path | None = typer.Option(None, "--out", help="also write the rows as JSON")
            ) -> None:
    """Our figures beside the paper's, row by row, with the gap (ours - paper)."""
    from domainclust.atomic import atomic_write_text
    from domainclust.replication.compare import compare_run, format_table, to_dicts

    rows = compare_run(run_dir)
    typer.echo(format_table(rows))
    if out is not None:
        atomic_write_text(out, json.dumps(to_dicts(rows), indent=2) + "\n")
        typer.echo(f"wrote {out}")


REPLICATION = typer.Option("laptop-replication", "--recipe", help="replication recipe")


def _replication(name: str):
    from domainclust.errors import DomainclustError
    from domainclust.replication.recipes import load_recipe

    recipe = load_recipe(name)
    if recipe.kind != "replication":
        raise DomainclustError(f"'{name}' is a {recipe.kind} recipe, not a replication recipe")
    return recipe


@recipe_app.command("replicate")
def replicate(run_dir: Path = typer.Option(..., "--run-dir"), recipe: str = REPLICATION,
              variant: list[str] = typer.Option([], "--variant", help="only these variants"),
              quiet: bool = typer.Option(False, "--quiet", help="no progress bars")) -> None:
    """Pretrain and score each variant not yet measured, then print the table of claims."""
    from domainclust.replication.claims import run_replication

    table = run_replication(_replication(recipe), run_dir, variants=list(variant) or None,
                            progress=not quiet, log=typer.echo)
    typer.echo(table.table())


@recipe_app.command("claims")
def claims(run_dir: Path = typer.Argument(..., help="run dir of `recipe replicate`"),
           recipe: str = REPLICATION) -> None:
    """The table of claims from the variants measured so far (nothing is run)."""
    from domainclust.replication.claims import claims_table

    table = claims_table(_replication(recipe), run_dir)
    typer.echo(table.table())
    if not table.measured:
        typer.echo(f"no variant of {recipe} has results in {run_dir} yet: nothing is measured")


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
