"""Networks to evaluate: a checkpoint, a run dir or an exported backbone, checked against a store.

Checkpoints are read with `weights_only=True` (never an arbitrary unpickle) and exported
backbones from safetensors, so evaluating a file someone sent cannot run their code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from domainclust.data.channels import map_channels
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.networks.export import load_backbone, read_checkpoint
from domainclust.networks.model import DeepClusterNet, ModelSpec


@dataclass
class Trained:
    """A pretrained network and where it came from."""

    model: nn.Module  # DeepClusterNet, or an exported backbone with the same feature interface
    spec: ModelSpec
    source: Path
    run_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # epoch, store record, history tail


def load_trained(path: Path | str, *, device: torch.device | str = "cpu") -> Trained:
    """The network of a checkpoint file, a run dir, or an exported backbone dir (card.json)."""
    path = Path(path)
    if not path.exists():
        raise DomainclustError(f"checkpoint {path} does not exist")
    if path.is_dir() and (path / "card.json").exists():
        backbone = load_backbone(path)
        return Trained(model=backbone.to(device), spec=backbone.spec, source=path,
                       info={"card": backbone.card})
    state, spec, file, run = read_checkpoint(path)
    model = DeepClusterNet(spec, n_clusters=int(state["n_clusters"]))
    try:
        model.load_weights(state["model"])
    except RuntimeError as exc:
        raise DomainclustError(
            f"{file}: weights do not fit its own spec {spec} ({str(exc).splitlines()[0]})"
        ) from None
    info = {"epoch": int(state["epoch"]), "store": state.get("store") or {},
            "last_epoch": (state.get("history") or [{}])[-1]}
    return Trained(model=model.to(device), spec=spec, source=file, run_dir=run, info=info)


def align_store(spec: ModelSpec, store: TileStore, *, source: Path,
                log: Callable[[str], None] = print) -> TileStore:
    """`store` seen with the network's channels, in its order (matched by name: a store of
    another sensor with those bands among others works); the mapping is logged once when it is
    not the identity. A channel the network needs that the store lacks is refused, naming it."""
    view = store.with_channels(tuple(spec.channels), needed_by=f"{source}")
    if view is not store:
        mapping = map_channels(wanted=spec.channels, available=store.channels)
        log(f"channels of store {store.path} matched by name to {source}: {mapping.describe()}")
    check_compatible(spec, view, source=source)
    return view


def check_compatible(spec: ModelSpec, store: TileStore, *, source: Path) -> None:
    """Refuse a store whose channels the network's front-end was not built for (see
    `align_store` for a store that holds them in another order or among others)."""
    if tuple(store.channels) != tuple(spec.channels):
        raise DomainclustError(
            f"{source} was trained on channels {list(spec.channels)} but store {store.path} has "
            f"{list(store.channels)}; evaluate on a store with the same channels, in that order"
        )
    missing = [c for c in spec.raw_channels if c not in store.channels]
    if missing:
        raise DomainclustError(
            f"{source} uses front-end '{spec.frontend}' with raw channel(s) {missing} that store "
            f"{store.path} does not have"
        )


def fresh_network(spec: ModelSpec, *, n_outputs: int, seed: int,
                device: torch.device | str = "cpu") -> DeepClusterNet:
    """The same architecture, freshly initialised from `seed` (the baseline of every protocol)."""
    torch.manual_seed(seed)
    return DeepClusterNet(spec, n_clusters=n_outputs).to(device)


def as_classifier(trained: nn.Module, spec: ModelSpec, *, n_classes: int, seed: int,
                  device: torch.device | str, into: DeepClusterNet | None = None
                  ) -> DeepClusterNet:
    """The pretrained trunk with a fresh `n_classes` top layer (seeded).

    `into`, a network of the same spec from an earlier run, is overwritten in place: repeated
    fine-tuning runs then reuse its memory instead of allocating a new copy of every weight.
    """
    if into is None and isinstance(trained, DeepClusterNet):
        net = copy.deepcopy(trained).cpu()
    else:
        net = into if into is not None else DeepClusterNet(spec, n_clusters=1)
        trunk = {k: v for k, v in trained.state_dict().items() if not k.startswith("top.")}
        missing, unexpected = net.load_state_dict(trunk, strict=False)
        if unexpected or any(not k.startswith("top.") for k in missing):
            raise DomainclustError(f"pretrained weights do not fit {spec.arch}: missing "
                                   f"{missing[:3]}, unexpected {unexpected[:3]}")
    torch.manual_seed(seed)
    net.reset_head(n_classes)
    return net.to(device)


def input_normalisation(trained: Trained) -> tuple[list[float], list[float]] | None:
    """(scale, offset) of the store the network was trained on, when still known."""
    card = trained.info.get("card")
    if card is not None:
        norm = card.get("input", {}).get("normalisation", {})
        return (norm["scale"], norm["offset"]) if norm.get("scale") is not None else None
    path = trained.info.get("store", {}).get("path")
    if not path:
        return None
    try:
        store = TileStore(path)
    except DomainclustError:
        return None
    return list(store.attrs["scale"]), list(store.attrs["offset"])
