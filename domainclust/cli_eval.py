"""Evaluation, fine-tuning and export commands (issue 4): registered on the main app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `eval`, `finetune` and `export` commands to `app` (not built yet)."""
