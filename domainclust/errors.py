"""The one exception type the CLI turns into a clean message instead of a traceback."""

from __future__ import annotations


class DomainclustError(Exception):
    """A problem with the user's input or environment, phrased so the user can act on it."""
