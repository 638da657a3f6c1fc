"""Continued pretraining (`model.init`): a new run's trunk taken from an earlier network.

The init is a run dir (its latest checkpoint), a checkpoint file or an exported backbone. Only
the trunk is taken, never DeepCluster's top layer (every clustering replaces it anyway).
The architecture must be the same (arch, width, stem, front-end, tile size). The channels may
differ: conv1's kernels are matched to the new channels by name (`domainclust.data.channels`); a
channel the init lacks gets the mean of the init's kernels over its channels.

A front-end decides which of conv1's input columns belong to which store channel: `none` one
column per channel, `sobel-per-channel` two (x, y), `sobel-level` three (x, y, level), each
followed by one column per raw channel; `sobel` averages the filtered channels into one grey
image (two columns), which matches only when both networks average the same channel set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from domainclust.data.channels import ChannelMap, map_channels
from domainclust.errors import DomainclustError
from domainclust.networks.export import CARD_NAME, load_backbone, read_checkpoint
from domainclust.networks.model import DeepClusterNet, ModelSpec

MUST_MATCH = ("arch", "width", "stem", "frontend", "tile_size")
GREY = "(grey)"  # the `sobel` front-end's one averaged image
COLUMNS = {"none": 1, "sobel-per-channel": 2, "sobel-level": 3}


@dataclass(frozen=True)
class InitSource:
    """A network to start from: its spec, its trunk weights and the file they came from."""

    path: Path  # as recorded in the config (absolute)
    file: Path  # the checkpoint or safetensors file read
    spec: ModelSpec
    trunk: dict[str, torch.Tensor]  # `backbone.*` weights, as in a DeepClusterNet state dict


def read_init(path: Path | str) -> InitSource:
    """The trunk of a run dir, a checkpoint file or an exported backbone dir."""
    path = Path(path).absolute()
    if not path.exists():
        raise DomainclustError(f"model.init {path} does not exist; pass a run dir, a checkpoint "
                               "file or an exported backbone")
    if path.is_dir() and (path / CARD_NAME).exists():
        model = load_backbone(path)
        trunk = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
        return InitSource(path=path, file=path / CARD_NAME, spec=model.spec, trunk=trunk)
    state, spec, file, _ = read_checkpoint(path)
    trunk = {k: v for k, v in state["model"].items() if k.startswith("backbone.")}
    if not trunk:
        raise DomainclustError(f"{file} holds no backbone weights")
    return InitSource(path=path, file=file, spec=spec, trunk=trunk)


def check_architecture(spec: ModelSpec, init: InitSource) -> None:
    """Refuse an init built differently, naming the first differing field and both values."""
    for name in MUST_MATCH:
        mine, theirs = getattr(spec, name), getattr(init.spec, name)
        if mine != theirs:
            raise DomainclustError(
                f"model.init {init.path} has {name}={theirs!r} but this run builds "
                f"{name}={mine!r}; start from a network of the same {name} (or set "
                f"model.{'tile_size' if name == 'tile_size' else name} to match)"
            )


def conv1_units(spec: ModelSpec) -> list[tuple[str, str, int]]:
    """(store channel, kind, columns) of conv1's input, in order; kind is `filtered` or `raw`."""
    if spec.frontend == "none":  # the identity: one column per channel, raw or not
        return [(c, "filtered", 1) for c in spec.channels]
    raw = set(spec.raw_channels)
    filtered = [c for c in spec.channels if c not in raw]
    units = ([(GREY, "filtered", 2)] if spec.frontend == "sobel"
             else [(c, "filtered", COLUMNS[spec.frontend]) for c in filtered])
    return units + [(c, "raw", 1) for c in spec.raw_channels]


def _check_mappable(spec: ModelSpec, init: InitSource) -> None:
    if spec.frontend == "sobel":
        mine = set(spec.channels) - set(spec.raw_channels)
        theirs = set(init.spec.channels) - set(init.spec.raw_channels)
        if mine != theirs:
            raise DomainclustError(
                f"front-end 'sobel' averages channels {sorted(mine)} into one grey image, and "
                f"model.init {init.path} averaged {sorted(theirs)}: no channel mapping is "
                "meaningful; use the same channels, or a per-channel front-end"
            )
    if spec.frontend != "none":
        kinds = {c: k for c, k, _ in conv1_units(init.spec)}
        for c, k, _ in conv1_units(spec):
            if c in kinds and kinds[c] != k:
                raise DomainclustError(
                    f"channel '{c}' is {k} here but {kinds[c]} in model.init {init.path}; use "
                    "the same model.raw_channels for the channels both have"
                )


def map_conv1(weight: torch.Tensor, *, spec: ModelSpec, init: InitSource) -> torch.Tensor:
    """conv1's kernels for `spec`'s input columns out of the init's `weight` (out, in, k, k)."""
    _check_mappable(spec, init)
    offsets, start = {}, 0
    for c, k, n in conv1_units(init.spec):
        offsets[c] = (start, n, k)
        start += n
    if start != weight.shape[1]:
        raise DomainclustError(f"model.init {init.path}: conv1 has {weight.shape[1]} input "
                               f"columns, its front-end makes {start}")

    def mean_of(kind: str, n: int) -> torch.Tensor:
        blocks = [weight[:, o:o + n] for o, m, k in offsets.values() if k == kind and m == n]
        if not blocks:  # e.g. a new raw channel, the init has none: the mean over every column
            return weight.mean(dim=1, keepdim=True).expand(-1, n, -1, -1)
        return torch.stack(blocks).mean(dim=0)

    columns = []
    for c, k, n in conv1_units(spec):
        if c in offsets:
            o, _, _ = offsets[c]
            columns.append(weight[:, o:o + n])
        else:
            columns.append(mean_of(k, n))
    return torch.cat(columns, dim=1).clone()


def conv1_key(model: DeepClusterNet) -> str:
    """The state-dict key of the conv that reads the front-end's output."""
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == model.frontend.out_channels:
            return f"backbone.{name}.weight"
    raise DomainclustError(f"no first conv found in the {model.spec.arch} backbone")


def apply_init(model: DeepClusterNet, init: InitSource) -> ChannelMap:
    """Load the init's trunk into `model` (conv1 mapped by channel name); the head is kept."""
    spec = model.spec
    check_architecture(spec, init)
    mapping = map_channels(wanted=spec.channels, available=init.spec.channels)
    weights = dict(init.trunk)
    if not mapping.identity or spec.raw_channels != init.spec.raw_channels:
        key = conv1_key(model)
        if key not in weights:
            raise DomainclustError(f"model.init {init.path} holds no {key}")
        weights[key] = map_conv1(weights[key], spec=spec, init=init)
    mine = model.state_dict()
    for key, value in weights.items():
        if key in mine and tuple(mine[key].shape) != tuple(value.shape):
            raise DomainclustError(f"model.init {init.path}: {key} has shape "
                                   f"{tuple(value.shape)}, this network {tuple(mine[key].shape)}")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("top.")]
    if missing or unexpected:
        raise DomainclustError(f"model.init {init.path} does not fit a {spec.arch} trunk: "
                               f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return mapping


def init_record(init: InitSource, mapping: ChannelMap) -> dict[str, Any]:
    """What a run records of its init (checkpoint, export card)."""
    return {"path": str(init.path), "file": str(init.file), "arch": init.spec.arch,
            "frontend": init.spec.frontend, "init_channels": list(init.spec.channels),
            **mapping.as_record()}
