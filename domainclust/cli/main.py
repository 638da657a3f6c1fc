"""The `domainclust` command: a thin typer layer over the Python API."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from domainclust.cli.evaluate import register as register_evaluation
from domainclust.cli.recipe import register as register_recipes
from domainclust.errors import DomainclustError
from domainclust.report.command import register as register_report

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="DeepCluster pretraining on unlabeled domain imagery.")

SET_HELP = "key=value override (short keys: epochs, k, batch_size, lr, arch, ...); repeatable"


@app.command()
def pretrain(
    run_dir: Path = typer.Option(..., "--run-dir", help="where config, metrics and checkpoints go"),
    store: str | None = typer.Option(
        None, "--store", help="TileStore to train on: a folder or a URL (http(s)://, s3://, ...)"),
    config: str | None = typer.Option(
        None, "--config", help="recipe: a YAML file or a shipped recipe's name (`recipe list`)"),
    modality: str | None = typer.Option(None, "--modality", help="use this modality's recipe"),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the report at the end"),
    init: Path | None = typer.Option(
        None, "--init", help="start the trunk from a run dir, checkpoint or exported backbone "
                             "(model.init; conv1 matched to the store's channels by name)"),
) -> None:
    """Train (or resume) DeepCluster on a TileStore."""
    from domainclust import config as cfg
    from domainclust.data.modality import get_modality
    from domainclust.engine.deepcluster import pretrain as run_pretrain
    from domainclust.replication.recipes import pretrain_config

    recipe: dict = {}
    if modality:
        recipe = get_modality(modality).load_recipe()
    if config:
        recipe = cfg.merge(recipe, pretrain_config(config))
    overrides = list(set_)
    if store:
        overrides.append(f"store={store}")
    if no_report:
        overrides.append("report=false")
    resolved = cfg.resolve(recipe=recipe, overrides=overrides)
    if init is not None:  # not through --set: a path is not parsed as YAML
        resolved.model.init = str(init.absolute())
    run_pretrain(resolved, run_dir, progress=not quiet)


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir"),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Pretrain on the bundled MNIST subset and compare with random initialisation."""
    from domainclust.demo import run_demo

    run_demo(run_dir, overrides=list(set_), progress=not quiet)


@app.command()
def ingest(
    sources: list[Path] = typer.Argument(None, help="files or folders to ingest"),
    modality: str = typer.Option(..., "--modality", help="adapter to use (see `modalities`)"),
    out: Path = typer.Option(..., "--out", help="TileStore to write: a new folder, or a store domainclust made (resumed)"),
    set_: list[str] = typer.Option([], "--set", help="adapter option key=value; repeatable"),
    workers: int = typer.Option(1, "--workers", help="reader processes"),
    dask: str | None = typer.Option(
        None, "--dask", help="run reads and writes on a Dask cluster: scheduler address or local:N"),
    shard_chunks: int | None = typer.Option(
        None, "--shard-chunks", help="chunks per zarr v3 shard (new stores of millions of tiles)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    report: Path = typer.Option(None, "--report",
                                help="where the report naming skipped files goes "
                                     "(default: <out>.ingest-report.json beside the store)"),
    add: bool = typer.Option(False, "--add", help="extend an existing store with new sources"),
) -> None:
    """Turn source files into a TileStore through a modality adapter.

    Skipped files are listed by path on stderr and in the report file, never in the store.
    """
    import inspect

    from domainclust.data.modality import get_modality, ingest_options

    m = get_modality(modality)
    engine = {k: v for k, v in {"dask": dask, "shard_chunks": shard_chunks}.items() if v}
    accepted = inspect.signature(m.ingest).parameters
    for key in engine:
        if key not in accepted:
            flag = "--" + key.replace("_", "-")
            raise DomainclustError(f"the {m.name} adapter's ingest does not support {flag}")
    result = m.ingest(list(sources or []), out, options=ingest_options(m, list(set_)),
                      workers=workers, progress=not quiet, report=report, add=add, **engine)
    typer.echo(f"{out}: {result['tiles_written']} tiles written, "
               f"{len(result['skipped'])} file(s) skipped")


@app.command("modalities")
def list_modalities() -> None:
    """List the registered modality adapters."""
    from domainclust.config import resolve
    from domainclust.data.modality import available_modalities

    for name, m in sorted(available_modalities().items()):
        if isinstance(m, DomainclustError):
            typer.echo(f"{name:10s} (unavailable: {m})")
            continue
        frontend = resolve(recipe=m.load_recipe()).model.frontend
        typer.echo(f"{name:10s} channels={','.join(m.channels)} tile={m.tile_size} "
                   f"frontend={frontend} recipe={m.recipe}\n{'':10s} {m.description}")


register_evaluation(app)
register_report(app)
register_recipes(app)


def main() -> None:
    try:
        app()
    except DomainclustError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished epochs are saved, run the same command to resume",
                   err=True)
        sys.exit(130)
