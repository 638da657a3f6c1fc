"""The `domainclust report` command (thin: parses, then calls `write_report`)."""

from __future__ import annotations

from pathlib import Path

import typer

from domainclust.report.build import ReportSettings  # loaded with this package anyway


def report(
    run_dir: Path = typer.Argument(..., help="run dir (finished or in progress)"),
    store: Path | None = typer.Option(None, "--store", help="TileStore (default: the run's)"),
    out: Path | None = typer.Option(None, "--out", help="folder for index.html + PNGs "
                                                        "(default: RUN_DIR/report)"),
    channels: str | None = typer.Option(
        None, "--channels", help="1 or 3 comma-separated channel names to show (gray or a "
                                 "false-colour composite, e.g. B08,B04,B03)"),
    pool: int = typer.Option(ReportSettings.pool, "--pool",
                             help="tiles embedded for the neighbour queries"),
    seed: int = typer.Option(0, "--seed", help="seed of the tiles, clusters and queries shown"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Write a self-contained HTML report of a run: curves, clusters, filters, neighbours."""
    from domainclust.report import write_report

    composite = tuple(c.strip() for c in channels.split(",")) if channels else None
    write_report(run_dir, store=store, out=out, progress=not quiet, log=typer.echo,
                 settings=ReportSettings(composite=composite, pool=pool, seed=seed))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
