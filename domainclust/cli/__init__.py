"""The `domainclust` command line: thin typer commands over the Python API."""

from domainclust.cli.main import app, main

__all__ = ["app", "main"]
