"""What a modality adapter declares, and the entry-point registry the core finds them through.

Adapters live outside the core (the bundled `domainclust.modalities` package, whose source is
the repository's `modalities/` folder, or any third-party package) and register a `Modality`
under the entry-point group `domainclust.modalities`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol

from domainclust.config import load_yaml, parse_value
from domainclust.errors import DomainclustError

ENTRY_POINT_GROUP = "domainclust.modalities"
RECIPES = "domainclust.recipes"  # the package the repository's recipes/ folder installs as


class Ingest(Protocol):
    def __call__(
        self,
        sources: list[Path],
        out: Path,
        *,
        options: dict[str, Any],
        workers: int,
        progress: bool,
        report: Path | None = None,
        add: bool = False,
    ) -> dict[str, Any]:
        """Write (or resume, or with `add` extend) a complete TileStore at `out`; return the
        ingest report, also written to `report` (default: beside the store)."""


@dataclass(frozen=True)
class Modality:
    name: str
    description: str
    channels: tuple[str, ...]
    tile_size: int
    recipe: str  # file name in domainclust.recipes (the repo's recipes/ folder)
    ingest: Ingest
    raw_channels: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # ingest options and their defaults

    def load_recipe(self) -> dict[str, Any]:
        """The adapter's shipped recipe (a file of that name in the working directory is not
        read in its place)."""
        return shipped_recipe(self.recipe)


def ingest_options(modality: Modality, overrides: list[str]) -> dict[str, Any]:
    """The adapter's defaults with `key=value` overrides (values parsed as YAML)."""
    options = dict(modality.defaults)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in options:
            known = ", ".join(sorted(options)) or "none"
            raise DomainclustError(
                f"--set {item}: the {modality.name} adapter's options are: {known}"
            )
        options[key] = parse_value(raw)
    return options


def domain_recipe_names() -> list[str]:
    """The shipped domain recipes by name (`recipes/*.yaml`, installed as `domainclust.recipes`;
    the paper's are in its `paper/` folder)."""
    return sorted(f.name[:-5] for f in resources.files(RECIPES).iterdir()
                  if f.name.endswith(".yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    """A config recipe: a YAML file by path, else a shipped domain recipe by name (`landsat` or
    `landsat.yaml`)."""
    path = Path(name)
    return load_yaml(path) if path.is_file() else shipped_recipe(name)


def shipped_recipe(name: str) -> dict[str, Any]:
    """The shipped domain recipe `name`, with or without `.yaml`."""
    stem = name.removesuffix(".yaml")
    if stem not in domain_recipe_names():
        raise DomainclustError(f"recipe '{name}' is neither a file nor a shipped recipe; "
                               f"shipped: {', '.join(domain_recipe_names())}")
    with resources.as_file(resources.files(RECIPES) / f"{stem}.yaml") as p:
        return load_yaml(p)


def _load(ep: metadata.EntryPoint) -> Modality:
    try:
        modality = ep.load()
    except Exception as exc:  # noqa: BLE001 - report any adapter failure as the user's problem to fix
        raise DomainclustError(
            f"modality adapter '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(modality, Modality):
        raise DomainclustError(f"entry point '{ep.name}' ({ep.value}) is not a Modality")
    return modality


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_modalities() -> dict[str, Modality | DomainclustError]:
    """Every registered adapter, or the error that kept it from loading."""
    found: dict[str, Modality | DomainclustError] = {}
    for name, ep in _entry_points().items():
        try:
            found[name] = _load(ep)
        except DomainclustError as exc:
            found[name] = exc
    return found


def get_modality(name: str) -> Modality:
    """Load only the adapter asked for, so one broken third-party adapter breaks nothing else."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is domainclust installed with `pip install -e .`?)"
        raise DomainclustError(f"unknown modality '{name}'; registered modalities: {known}")
    return _load(eps[name])
