"""Run configuration: typed sections, YAML in and out, and `--set key=value` overrides.

A recipe is a YAML file with the same nesting as `Config`. Overrides accept the full dotted
path (`cluster.k=100`) or one of the short keys in `SHORT_KEYS` (`k=100`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from domainclust.errors import DomainclustError

# The allowed values of the settings that name a choice: the one list every module checks against.
Arch = Literal["alexnet", "vgg16", "resnet18", "resnet50"]
Stem = Literal["auto", "imagenet", "stride2", "stride1"]  # auto: from the tile size
Frontend = Literal["none", "sobel", "sobel-per-channel", "sobel-level"]
ClusterMethod = Literal["kmeans", "pic"]
ClusterBackend = Literal["auto", "faiss", "cuvs", "torch"]  # auto: the first that works here
ClusterFeatures = Literal["pre-relu", "post-relu"]
Head = Literal["linear", "prototypes"]
Sampler = Literal["uniform", "plain"]
Cache = Literal["auto", "ram", "memmap"]
BatchAugment = Literal["auto", "batched", "albumentations"]

ARCHS: tuple[str, ...] = typing.get_args(Arch)
STEMS: tuple[str, ...] = typing.get_args(Stem)[1:]  # the stems a backbone is built with
FRONTENDS: tuple[str, ...] = typing.get_args(Frontend)
CLUSTER_METHODS: tuple[str, ...] = typing.get_args(ClusterMethod)
BACKENDS: tuple[str, ...] = typing.get_args(ClusterBackend)
CLUSTER_FEATURES: tuple[str, ...] = typing.get_args(ClusterFeatures)
SAMPLERS: tuple[str, ...] = typing.get_args(Sampler)
CACHES: tuple[str, ...] = typing.get_args(Cache)
BATCH_AUGMENT: tuple[str, ...] = typing.get_args(BatchAugment)


def one_of(allowed: tuple[str, ...]) -> str:
    """An allowed set as a message says it: `a or b`, `a, b or c`."""
    *rest, last = allowed
    return f"{', '.join(rest)} or {last}" if rest else last


def _default_augment() -> list[dict[str, Any]]:
    # The paper's augmentation: RandomResizedCrop (size filled from the tile size) + h-flip.
    return [
        {"RandomResizedCrop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}},
        {"HorizontalFlip": {"p": 0.5}},
    ]


@dataclass
class DataConfig:
    """Where tiles come from and how an epoch's subset is drawn and staged."""

    store: str | None = None
    subset_size: int | None = None  # None: the whole pool every epoch
    tiles_per_chunk: int | None = None  # None: a proportional share of every chunk
    tile_size: int | None = None  # None: the store's tile size
    resize: bool = False  # a tile_size other than the store's is an error unless this is set
    cache: Cache = "auto"
    workers: int | None = None  # DataLoader processes; None: 0 on CPU, up to 8 with a GPU
    batch_augment: BatchAugment = "auto"  # auto: batched with CUDA
    augment: list[dict[str, Any]] = field(default_factory=_default_augment)


@dataclass
class ModelConfig:
    arch: Arch = "alexnet"
    stem: Stem = "auto"  # imagenet is the paper's
    width: float = 1.0  # conv width multiplier; 1 is the paper's network
    frontend: Frontend = "sobel"
    raw_channels: list[str] = field(default_factory=list)  # channels that bypass the front-end
    dropout: float = 0.5
    init: str | None = None  # start from this run dir, checkpoint or export (trunk only)


@dataclass
class ClusterConfig:
    method: ClusterMethod = "kmeans"
    k: int = 1000
    pca_dim: int = 256
    iterations: int = 20
    backend: ClusterBackend = "auto"
    pic_neighbors: int = 5
    features: ClusterFeatures = "pre-relu"  # what is clustered; pre-relu is the paper's
    reassign_every: int = 1  # epochs between re-clusterings; in between, labels and head stay
    head: Head = "linear"  # linear: re-initialised each clustering (the paper's); prototypes: v2's
    # Of the prototype head's cosine logits. v2's 0.1 diverged on MNIST with this SGD and the
    # whitened input (loss above ln k, rising); 0.5 trained there.
    temperature: float = 0.5


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    updates_factor: float = 1.0  # updates per epoch = factor * |subset| / batch_size
    sampler: Sampler = "uniform"  # uniform over clusters (the paper's); plain: over tiles


@dataclass
class Config:
    seed: int = 0
    device: str = "auto"
    modality: str | None = None
    report: bool = True  # write RUN/report/ at the end of pretrain
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SHORT_KEYS: dict[str, str] = {
    "epochs": "train.epochs",
    "k": "cluster.k",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "arch": "model.arch",
    "stem": "model.stem",
    "frontend": "model.frontend",
    "clustering": "cluster.method",
    "reassign_every": "cluster.reassign_every",
    "sampler": "train.sampler",
    "pca_dim": "cluster.pca_dim",
    "subset_size": "data.subset_size",
    "tile_size": "data.tile_size",
    "resize": "data.resize",
    "seed": "seed",
    "device": "device",
    "workers": "data.workers",
    "store": "data.store",
}

# Keys that may change between runs sharing a run dir (extending a finished run, moving hardware).
RESUMABLE_KEYS = frozenset({"train.epochs", "device", "data.workers", "data.cache",
                            "data.batch_augment", "report"})


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _build(cls: type, values: dict[str, Any], where: str, what: str = "config key") -> Any:
    if not isinstance(values, dict):
        raise DomainclustError(f"{where or what}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DomainclustError(
            f"unknown {what}(s) {', '.join(where + k for k in unknown)}; "
            f"known keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}{name}.", what)
        else:
            kwargs[name] = _coerce(value, hint, f"{what} {where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, label: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        members = [o for o in options if o is not type(None)]
        if len(members) > 1:  # e.g. float | str: the first member the value fits
            for member in members:
                try:
                    return _coerce(value, member, label)
                except DomainclustError:
                    pass
            kinds = " or ".join(getattr(m, "__name__", str(m)) for m in members)
            raise DomainclustError(f"{label}: expected {kinds}, got {value!r}")
        hint = members[0]
        origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if not isinstance(value, str) or value not in allowed:
            raise DomainclustError(f"{label} must be {one_of(allowed)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise DomainclustError(f"{label}: expected a list, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint) or (
        hint is int and isinstance(value, bool)
    ):
        raise DomainclustError(
            f"{label}: expected {hint.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def from_dict(values: dict[str, Any]) -> Config:
    return _build(Config, values, "")


def build_dataclass(cls: type, values: dict[str, Any], *, where: str = "",
                    what: str = "config key") -> Any:
    """Any settings data class from a mapping, with the checks of `from_dict` (unknown keys and
    wrong types are errors); messages name keys as `what` (e.g. `rgb option`), `where` prefixes
    them (`voc.`)."""
    return _build(cls, values, where, what)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DomainclustError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DomainclustError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise DomainclustError(f"config {path} must hold a mapping at the top level")
    return values


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` strings; values are parsed as YAML scalars (`k=100`, `store=a.zarr`)."""
    values = _deep_copy(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise DomainclustError(f"--set expects key=value, got '{item}'")
        path = SHORT_KEYS.get(key.strip(), key.strip()).split(".")
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DomainclustError(f"--set {item}: '{part}' is not a section")
        node[path[-1]] = parse_value(raw)
    return values


def parse_value(raw: str) -> Any:
    """A `--set` value as a YAML scalar/list (`3`, `0.1`, `[1, 2]`, `null`); text that is not
    valid YAML (`{stem}_labels.tif`) stays a string."""
    if not raw.strip():
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _deep_copy(values: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(values))


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: `update` wins, sections merge key by key."""
    out = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve(
    *, recipe: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults, then the recipe, then `--set` overrides."""
    values = merge(to_dict(Config()), recipe or {})
    return from_dict(apply_overrides(values, overrides or []))


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{prefix}{key}.")
        elif x != y:
            out.append(prefix.rstrip("."))

    walk(to_dict(a), to_dict(b), "")
    return out
