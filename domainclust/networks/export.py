"""Reading checkpoints safely, and exporting a pretrained backbone (front-end + backbone, no
DeepCluster top layer) for reuse.

Checkpoints are read with `weights_only=True` (`rundir.load_checkpoint`), never unpickled freely.

An export directory holds `backbone.safetensors` (weights only: loading it runs no code) and
`card.json`, which says what the network expects: its architecture, input channels by name, tile
size, front-end, raw channels and the normalisation that turns stored tiles into its input
(`x = tile * scale[c] + offset[c]`), plus the store and recipe it was trained from.
`load_backbone(DIR)` returns a ready `torch.nn.Module` whose forward gives the features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from domainclust.data.normalise import to_input
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.networks.model import ModelSpec, Trunk
from domainclust.rundir import (
    RunDir,
    atomic_write,
    atomic_write_text,
    load_checkpoint,
    recorded_store,
)

CARD_NAME = "card.json"
WEIGHTS_NAME = "backbone.safetensors"
CARD_FORMAT = "domainclust-backbone"
CARD_VERSION = 1
CHECKPOINT_KEYS = ("format", "epoch", "spec", "n_clusters", "model")


def spec_from_dict(values: dict[str, Any], *, source: Path) -> ModelSpec:
    try:
        return ModelSpec(**{**values, "channels": tuple(values["channels"]),
                            "raw_channels": tuple(values["raw_channels"])})
    except (TypeError, KeyError) as exc:
        raise DomainclustError(f"{source} holds an unreadable model spec ({exc})") from None


def checkpoint_path(path: Path | str) -> tuple[Path, Path | None]:
    """(checkpoint file, its run dir or None) for a checkpoint file or a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if not candidate.exists():
            raise DomainclustError(
                f"{path} is a directory without checkpoints/last.pt or card.json; pass a "
                "checkpoint file, a run dir or an exported backbone"
            )
        return candidate, path
    run = path.parent.parent if path.parent.name == "checkpoints" else None
    return path, run if run is not None and (run / "config.yaml").exists() else None


def read_checkpoint(path: Path | str) -> tuple[dict[str, Any], ModelSpec, Path, Path | None]:
    """The validated checkpoint dict, its ModelSpec, the file and its run dir (if any)."""
    file, run = checkpoint_path(path)
    state = load_checkpoint(file)
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise DomainclustError(
            f"{file} is not a domainclust checkpoint (it needs the keys {', '.join(CHECKPOINT_KEYS)})"
        )
    if state["format"] != 1:
        raise DomainclustError(f"{file} has checkpoint format {state['format']!r}; this reads 1")
    return state, spec_from_dict(state["spec"], source=file), file, run


class PretrainedBackbone(Trunk):
    """Front-end → backbone of a DeepCluster network; `forward` gives the clustering feature
    (fc7 before ReLU for AlexNet/VGG, the pooled trunk for ResNet), `forward_stages` the conv maps.
    """

    def __init__(self, spec: ModelSpec, *, card: dict[str, Any] | None = None) -> None:
        super().__init__(spec)
        self.card = card or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone.forward_stages(self.frontend(x))

    def normalise(self, tiles: torch.Tensor) -> torch.Tensor:
        """Stored tiles (N, C, H, W) → float input, with the card's scale/offset."""
        norm = self.card.get("input", {}).get("normalisation", {})
        if norm.get("scale") is None:
            raise DomainclustError("this backbone's card records no normalisation (its store was "
                                   "gone at export); scale the input as its store did")
        return to_input(tiles, scale=norm["scale"], offset=norm["offset"])


def _store_record(store_info: dict[str, Any], store_path: Path | str | None, *,
                  run_dir: Path) -> dict[str, Any]:
    """What is known of the training store: its attrs when it is still there, else the record."""
    path = store_path or recorded_store(store_info.get("path"), run_dir=run_dir)
    record: dict[str, Any] = {**store_info, "available": False}
    if path is None:
        return record
    try:
        store = TileStore(path)
    except DomainclustError as exc:
        record["unavailable_because"] = str(exc)
        return record
    a = store.attrs
    record.update(path=str(store.path), available=True, modality=store.modality,
                  channels=list(store.channels), tile_size=store.tile_size, count=store.n,
                  dtype=a.get("dtype"), scale=a.get("scale"), offset=a.get("offset"),
                  provenance=a.get("provenance", {}))
    return record


def build_card(state: dict[str, Any], model: PretrainedBackbone, *, checkpoint: Path,
               run_dir: Path | None, store_path: Path | str | None = None) -> dict[str, Any]:
    """The card of `model`, exported from the checkpoint dict `state`."""
    spec = model.spec
    store = _store_record(state.get("store") or {}, store_path,
                          run_dir=run_dir or checkpoint.parent)
    recipe = None
    if run_dir is not None:
        try:
            recipe = dataclasses.asdict(RunDir(run_dir).load_config())
        except DomainclustError:
            recipe = None
    history = state.get("history") or []
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "architecture": spec.arch,
        "feature": "fc7 before ReLU" if spec.arch in ("alexnet", "vgg16") else "pooled trunk",
        "feature_dim": model.feature_dim,
        "stages": list(model.backbone.stages),
        "input": {
            "channels": list(spec.channels),
            "n_channels": len(spec.channels),
            "tile_size": spec.tile_size,
            "frontend": spec.frontend,
            "raw_channels": list(spec.raw_channels),
            "normalisation": {
                "formula": "x[c] = tile[c] * scale[c] + offset[c]",
                "storage_dtype": store.get("dtype"),
                "scale": store.get("scale"),
                "offset": store.get("offset"),
                "known": store.get("scale") is not None,
            },
        },
        "spec": dataclasses.asdict(spec),
        "training": {"epochs_trained": int(state["epoch"]) + 1,
                     "n_clusters": int(state["n_clusters"]),
                     "last_epoch": history[-1] if history else None},
        "store": store,
        "recipe": recipe,
        "source": {"checkpoint": str(checkpoint), "run_dir": str(run_dir) if run_dir else None},
        "init": state.get("init"),  # the network pretraining started from (model.init), if any
        "weights": WEIGHTS_NAME,
    }


def export_backbone(checkpoint: Path | str, out_dir: Path | str, *,
                    store_path: Path | str | None = None) -> dict[str, Any]:
    """Write `backbone.safetensors` + `card.json` to `out_dir`; returns the card.

    `store_path` points at the training store when it moved since training (for its
    normalisation); by default the path recorded in the checkpoint is used.
    """
    state, spec, file, run = read_checkpoint(checkpoint)
    weights = {k[len("backbone."):]: v.contiguous() for k, v in state["model"].items()
               if k.startswith("backbone.")}
    if not weights:
        raise DomainclustError(f"{file} holds no backbone weights")
    model = PretrainedBackbone(spec)
    try:
        model.backbone.load_state_dict(weights)  # refuse inconsistent weights before writing
    except RuntimeError as exc:
        raise DomainclustError(f"{file}: its weights do not fit its own spec "
                               f"({str(exc).splitlines()[0]})") from None
    card = build_card(state, model, checkpoint=file, run_dir=run, store_path=store_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.cpu() for k, v in weights.items()},
                metadata={"format": CARD_FORMAT, "arch": spec.arch})
    card["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write(out / WEIGHTS_NAME, lambda f: f.write(blob))
    atomic_write_text(out / CARD_NAME, json.dumps(card, indent=2) + "\n")
    for name in (WEIGHTS_NAME, CARD_NAME):  # meant to be shared: readable, not 0600
        (out / name).chmod(0o644)
    return card


def read_card(path: Path | str) -> dict[str, Any]:
    card_path = Path(path) / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise DomainclustError(f"{path} is not an exported backbone (no {CARD_NAME}); create "
                               "one with `domainclust export`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DomainclustError(f"{card_path} is not readable JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DomainclustError(f"{card_path} is not a domainclust backbone card")
    if card.get("format_version") != CARD_VERSION:
        raise DomainclustError(f"{card_path} has card version {card.get('format_version')!r}; "
                               f"this domainclust reads {CARD_VERSION}")
    return card


def load_backbone(path: Path | str, *, device: torch.device | str = "cpu") -> PretrainedBackbone:
    """The exported backbone in `path`, in eval mode, ready for `forward(x)` → features."""
    path = Path(path)
    card = read_card(path)
    spec = spec_from_dict(card.get("spec") or {}, source=path / CARD_NAME)
    weights_path = path / WEIGHTS_NAME  # never a path taken from the card
    blob = _read_bytes(weights_path)
    expected = card.get("weights_sha256")
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise DomainclustError(f"{weights_path} does not match the checksum in its card; the "
                               "export is corrupt or its files were mixed, export again")
    try:
        weights = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise DomainclustError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    model = PretrainedBackbone(spec, card=card)
    try:
        model.backbone.load_state_dict(weights)
    except RuntimeError as exc:
        raise DomainclustError(f"{weights_path} does not fit a {spec.arch} backbone with "
                               f"{len(spec.channels)} channel(s): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DomainclustError(f"cannot read {path}: {exc.strerror}") from None

