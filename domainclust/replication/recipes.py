"""The paper's reference recipes: pretraining models and evaluation protocols, by name.

Two kinds of YAML file live in `recipes/paper/` (installed as `domainclust.recipes/paper`):

- `kind: pretrain` — one of the thesis's models (Table 5.1): the dataset it is pretrained on, the
  ingest options, a full `Config` (validated like any recipe) and the evaluations to run on it;
- `kind: evaluation` — a protocol (`linear`, `mlp`, `voc`, `low-shot`, `segment`) on a dataset,
  its settings,
  and the numbers the paper reports for it, per model and row (`null` where not transcribed).

Beside them, the domain recipes of `recipes/` (plain configs, no `kind`) are listed and shown
by name too, as `kind: domain`; `pretrain --config NAME` takes a domain recipe or the config of
a paper pretraining recipe (`pretrain_config`).

Every key is checked: an unknown key anywhere is an error naming the file and the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from domainclust import config as cfg
from domainclust.data.modality import domain_recipe_names, shipped_recipe
from domainclust.errors import DomainclustError
from domainclust.evaluation.probes.mlp import MlpSettings
from domainclust.evaluation.voc.protocols import VOC_PROTOCOLS, VocSettings

PAPER_FOLDER = "paper"
PROTOCOLS = ("linear", "mlp", "voc", "low-shot", "segment")
DATASETS = ("imagenet", "places365", "voc2007", "voc2012", "flickr")
# The paper's segmentation rows and the protocol of `finetune --task segment` each one is:
# fc6-8 trains the head on frozen conv layers, all trains every layer.
SEGMENT_LAYERS = {"fc6-8": "frozen", "all": "finetune"}
BASELINES = ("random", "none")


@dataclass
class LinearSettings:
    """Linear probes on frozen conv layers (every stage unless `layers` is given)."""

    layers: list[str] = field(default_factory=list)
    weight_decays: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    batch_size: int = 256


@dataclass
class VocProtocolSettings(VocSettings):
    """VOC07 classification: `layers` is `fc6-8` (conv layers frozen) or `all`."""

    layers: str = "fc6-8"


@dataclass
class LowShotSettings:
    """Low-shot fine-tuning: n labelled images per class, repeated, against random init."""

    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    repeats: int = 10
    protocol: str = "linear"  # linear | linear-gap | knn | finetune | both
    batch_size: int = 32
    max_test: int | None = None
    test_fraction: float = 0.2


@dataclass
class SegmentProtocolSettings:
    """Semantic segmentation: a decoder on the transferred trunk, trained on the train split's
    masks and scored (mIoU, void ignored) on the test split, once per row of `layers`."""

    layers: list[str] = field(default_factory=lambda: ["fc6-8", "all"])
    lrs: list[float] = field(default_factory=lambda: [0.003, 0.01, 0.03])
    steps: list[int] = field(default_factory=lambda: [2000, 4000, 8000])
    batch_size: int = 16
    flip: bool = True


SETTINGS: dict[str, type] = {"linear": LinearSettings, "mlp": MlpSettings,
                             "voc": VocProtocolSettings, "low-shot": LowShotSettings,
                             "segment": SegmentProtocolSettings}


@dataclass(frozen=True)
class PretrainRecipe:
    name: str
    title: str
    reference: str
    dataset: str  # the --data NAME whose images form the pool
    split: str  # the dataset split pretrained on (train)
    ingest: dict[str, Any]  # rgb adapter options (tile_size, ...)
    config: cfg.Config
    evaluations: tuple[str, ...]
    source: str  # the recipe file

    kind = "pretrain"


@dataclass(frozen=True)
class EvaluationRecipe:
    name: str
    title: str
    reference: str
    protocol: str
    dataset: str
    train_split: str
    test_split: str
    ingest: dict[str, Any]
    settings: Any  # the protocol's settings data class
    baseline: str  # random: also evaluate the same architecture at random init
    metric: str
    paper: dict[str, dict[str, float | None]]  # model name → row → value (%)
    source: str

    kind = "evaluation"


@dataclass(frozen=True)
class DomainRecipe:
    """A domain recipe of `recipes/` (or any config YAML without `kind`): a pretraining config."""

    name: str
    values: dict[str, Any]  # the file's mapping, merged under `--set` by `pretrain --config`
    config: cfg.Config  # resolved, with the overrides
    source: str

    kind = "domain"

    @property
    def title(self) -> str:
        c = self.config
        return (f"{c.modality or 'any'} tiles: {c.model.arch} x{c.model.width:g}, front-end "
                f"{c.model.frontend}, {c.cluster.method} k={c.cluster.k}")

    @property
    def reference(self) -> str:
        return self.source


Recipe = Any  # PretrainRecipe | EvaluationRecipe | DomainRecipe | claims.ReplicationRecipe

_PRETRAIN_KEYS = {"kind", "name", "title", "reference", "dataset", "split", "ingest", "config",
                  "evaluations"}
_EVAL_KEYS = {"kind", "name", "title", "reference", "protocol", "dataset", "train_split",
              "test_split", "ingest", "settings", "baseline", "metric", "paper"}


def _folder() -> Any:
    return resources.files("domainclust.recipes") / PAPER_FOLDER


def paper_recipe_names() -> list[str]:
    """Names of the paper's reference recipes (file stems in `paper/`), sorted."""
    return sorted(f.name[:-5] for f in _folder().iterdir() if f.name.endswith(".yaml"))


def recipe_names() -> list[str]:
    """Every shipped recipe by name: the domain recipes, then the paper's."""
    return [*domain_recipe_names(), *paper_recipe_names()]


def _check_keys(values: dict[str, Any], known: set[str], *, source: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise DomainclustError(f"recipe {source}: unknown key(s) {', '.join(unknown)}; known keys: "
                               f"{', '.join(sorted(known))}")
    missing = sorted(k for k in ("kind", "name", "dataset") if k not in values)
    if missing:
        raise DomainclustError(f"recipe {source}: missing key(s) {', '.join(missing)}")


def _choice(value: Any, choices: tuple[str, ...], *, key: str, source: str) -> str:
    if value not in choices:
        raise DomainclustError(f"recipe {source}: {key} must be one of {', '.join(choices)}, "
                               f"got {value!r}")
    return value


def _mapping(value: Any, *, key: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DomainclustError(f"recipe {source}: {key} must be a mapping, got {value!r}")
    return value


def parse_recipe(values: dict[str, Any], *, source: str, overrides: list[str] | None = None,
                 eval_overrides: list[str] | None = None) -> Recipe:
    """A recipe from its YAML mapping (a `replication` one is parsed by `claims`); `overrides` are `--set` keys of a pretraining config,
    `eval_overrides` `key=value` settings of an evaluation protocol."""
    kind = values.get("kind")
    if kind is None:
        name = Path(source).name.removesuffix(".yaml").removesuffix(".yml")
        try:
            config = cfg.resolve(recipe=values, overrides=overrides)
        except DomainclustError as exc:
            raise DomainclustError(f"recipe {source}: {exc}") from None
        return DomainRecipe(name=name, values=values, config=config, source=source)
    if kind == "pretrain":
        _check_keys(values, _PRETRAIN_KEYS, source=source)
        evaluations = values.get("evaluations") or []
        if not isinstance(evaluations, list) or not all(isinstance(e, str) for e in evaluations):
            raise DomainclustError(f"recipe {source}: evaluations must be a list of recipe names")
        try:
            config = cfg.resolve(recipe=_mapping(values.get("config"), key="config",
                                                 source=source), overrides=overrides)
        except DomainclustError as exc:
            raise DomainclustError(f"recipe {source}: {exc}") from None
        return PretrainRecipe(
            name=str(values["name"]), title=str(values.get("title", "")),
            reference=str(values.get("reference", "")),
            dataset=_choice(values["dataset"], DATASETS, key="dataset", source=source),
            split=str(values.get("split", "train")),
            ingest=_mapping(values.get("ingest"), key="ingest", source=source),
            config=config, evaluations=tuple(evaluations), source=source)
    if kind == "evaluation":
        _check_keys(values, _EVAL_KEYS, source=source)
        protocol = _choice(values.get("protocol"), PROTOCOLS, key="protocol", source=source)
        settings = build_settings(protocol, _mapping(values.get("settings"), key="settings",
                                                     source=source),
                                  overrides=eval_overrides or [], source=source)
        return EvaluationRecipe(
            name=str(values["name"]), title=str(values.get("title", "")),
            reference=str(values.get("reference", "")), protocol=protocol,
            dataset=_choice(values["dataset"], DATASETS, key="dataset", source=source),
            train_split=str(values.get("train_split", "train")),
            test_split=str(values.get("test_split", "val")),
            ingest=_mapping(values.get("ingest"), key="ingest", source=source),
            settings=settings,
            baseline=_choice(values.get("baseline", "random"), BASELINES, key="baseline",
                             source=source),
            metric=str(values.get("metric", "top-1 (%)")),
            paper=_paper_numbers(values.get("paper"), source=source), source=source)
    if kind == "replication":
        from domainclust.replication.claims import parse_replication

        return parse_replication(values, source=source)
    raise DomainclustError(f"recipe {source}: kind must be pretrain, evaluation or replication "
                           f"(or absent, for a config recipe), got {kind!r}")


def build_settings(protocol: str, values: dict[str, Any], *, overrides: list[str],
                   source: str) -> Any:
    """The protocol's settings from the recipe's mapping plus the `key=value` overrides that
    name one of its fields (others are for other protocols and are ignored here). A single
    value given for a list field is that one-element list, so `steps=2` sets both a protocol's
    step count and another's grid of step counts."""
    cls = SETTINGS[protocol]
    lists = {f.name for f in dataclasses.fields(cls) if f.default_factory is not
             dataclasses.MISSING and isinstance(f.default_factory(), list)}
    names = {f.name for f in dataclasses.fields(cls)}
    values = dict(values)
    for item in overrides:
        key, _, raw = item.partition("=")
        if key.strip() in names:
            value = cfg.parse_value(raw)
            lifted = key.strip() in lists and value is not None and not isinstance(value, list)
            values[key.strip()] = [value] if lifted else value
    try:
        settings = cfg.build_dataclass(cls, values, where="settings.")
    except DomainclustError as exc:
        raise DomainclustError(f"recipe {source}: {exc}") from None
    if protocol == "voc" and settings.layers not in VOC_PROTOCOLS:
        raise DomainclustError(f"recipe {source}: settings.layers must be one of "
                               f"{', '.join(VOC_PROTOCOLS)}, got {settings.layers!r}")
    if protocol == "segment" and (not settings.layers
                                  or not set(settings.layers) <= set(SEGMENT_LAYERS)):
        raise DomainclustError(f"recipe {source}: settings.layers must list some of "
                               f"{', '.join(SEGMENT_LAYERS)}, got {settings.layers!r}")
    return settings


def _paper_numbers(values: Any, *, source: str) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for model, rows in _mapping(values, key="paper", source=source).items():
        rows = _mapping(rows, key=f"paper.{model}", source=source)
        for row, value in rows.items():
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise DomainclustError(f"recipe {source}: paper.{model}.{row} must be a number "
                                       f"or null, got {value!r}")
        out[str(model)] = {str(r): (None if v is None else float(v)) for r, v in rows.items()}
    return out


def load_recipe(name: str, *, overrides: list[str] | None = None,
                eval_overrides: list[str] | None = None) -> Recipe:
    """A bundled reference recipe by name, or a recipe YAML file by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return parse_recipe(cfg.load_yaml(path), source=str(path), overrides=overrides,
                            eval_overrides=eval_overrides)
    if name.removesuffix(".yaml") in domain_recipe_names():
        return parse_recipe(shipped_recipe(name), source=f"{name.removesuffix('.yaml')}.yaml",
                            overrides=overrides, eval_overrides=eval_overrides)
    entry = _folder() / f"{name}.yaml"
    if not entry.is_file():
        raise DomainclustError(f"recipe '{name}' is neither a file nor a shipped recipe; "
                               f"shipped: {', '.join(recipe_names())}")
    with resources.as_file(entry) as file:
        values = cfg.load_yaml(file)
    recipe = parse_recipe(values, source=f"{PAPER_FOLDER}/{name}.yaml", overrides=overrides,
                          eval_overrides=eval_overrides)
    if recipe.name != name:
        raise DomainclustError(f"recipe {PAPER_FOLDER}/{name}.yaml names itself '{recipe.name}'; "
                               "a recipe's name must match its file name")
    return recipe


def pretrain_config(name: str) -> dict[str, Any]:
    """What `pretrain --config` takes, as a config mapping: a config YAML file by path, a
    domain recipe by name (`landsat`), or a paper pretraining recipe's config (`km-ImNet-Sob`)."""
    if Path(name).is_file():
        return cfg.load_yaml(Path(name))
    recipe = load_recipe(name)
    if isinstance(recipe, DomainRecipe):
        return recipe.values
    if isinstance(recipe, PretrainRecipe):
        return cfg.to_dict(recipe.config)
    raise DomainclustError(f"'{name}' is {'an' if recipe.kind == 'evaluation' else 'a'} "
                           f"{recipe.kind} recipe, not a pretraining config; --config takes one "
                           f"of {', '.join(pretrain_recipe_names())} or a YAML file")


def pretrain_recipe_names() -> list[str]:
    """The shipped recipes `pretrain --config` takes by name."""
    paper = [n for n in paper_recipe_names() if load_recipe(n).kind == "pretrain"]
    return [*domain_recipe_names(), *paper]


def evaluations_of(recipe: PretrainRecipe, *, eval_overrides: list[str] | None = None,
                   only: list[str] | None = None) -> list[EvaluationRecipe]:
    """The evaluation recipes a pretraining recipe lists (those in `only`, when given).

    An `--eval-set` key must belong to one of the recipe's evaluations, selected or not, so the
    same overrides work with and without `only`."""
    names = list(recipe.evaluations)
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise DomainclustError(f"{recipe.name} has no evaluation {', '.join(unknown)}; its "
                               f"evaluations: {', '.join(names)}")
    out = []
    for n in names:
        ev = load_recipe(n, eval_overrides=eval_overrides)
        if not isinstance(ev, EvaluationRecipe):
            raise DomainclustError(f"{recipe.source}: '{n}' in evaluations is a {ev.kind} "
                                   "recipe")
        out.append(ev)
    if eval_overrides:
        check_overrides_used(out, eval_overrides)
    return [ev for ev in out if not only or ev.name in only]


def check_overrides_used(evaluations: list[EvaluationRecipe], overrides: list[str]) -> None:
    """Refuse an `--eval-set` key that no evaluation of the run has (a typo would be silent)."""
    known = {f.name for ev in evaluations for f in dataclasses.fields(SETTINGS[ev.protocol])}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or key.strip() not in known:
            raise DomainclustError(f"--eval-set {item}: no evaluation of this run has the setting "
                                   f"'{key.strip()}'; settings: {', '.join(sorted(known))}")


def describe(recipe: Recipe) -> dict[str, Any]:
    """Everything the recipe resolves to, as plain data (what `recipe show` prints)."""
    if recipe.kind == "replication":
        return {"kind": recipe.kind, "name": recipe.name, "title": recipe.title,
                "base": recipe.base, "modality": recipe.modality,
                "overrides": recipe.overrides, "low_shot": recipe.low_shot,
                "variants": {v: cfg.to_dict(recipe.config(v, store="RUN/store.zarr"))
                             for v in recipe.variants},
                "claims": [dataclasses.asdict(c) for c in recipe.claims],
                "source": recipe.source}
    if isinstance(recipe, DomainRecipe):
        return {"kind": recipe.kind, "name": recipe.name, "title": recipe.title,
                "config": cfg.to_dict(recipe.config), "source": recipe.source}
    if isinstance(recipe, PretrainRecipe):
        return {"kind": recipe.kind, "name": recipe.name, "title": recipe.title,
                "reference": recipe.reference, "dataset": recipe.dataset, "split": recipe.split,
                "ingest": recipe.ingest, "config": cfg.to_dict(recipe.config),
                "evaluations": list(recipe.evaluations), "source": recipe.source}
    return {"kind": recipe.kind, "name": recipe.name, "title": recipe.title,
            "reference": recipe.reference, "protocol": recipe.protocol,
            "dataset": recipe.dataset, "train_split": recipe.train_split,
            "test_split": recipe.test_split, "ingest": recipe.ingest,
            "settings": dataclasses.asdict(recipe.settings), "baseline": recipe.baseline,
            "metric": recipe.metric, "paper": recipe.paper, "source": recipe.source}
