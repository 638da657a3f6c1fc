"""The run directory: everything a run produced, written so a crash never loses finished work.

Layout other commands rely on::

    R/config.yaml          resolved config
    R/metrics.jsonl        one JSON object per finished epoch
    R/assignments/epoch_0003.npz   tile indices and cluster ids of that epoch
    R/checkpoints/last.pt  the latest finished epoch (weights, optimizer, history)
    R/cache/               staging memmaps (safe to delete)

Every file is written to a temporary name and renamed into place (atomic on POSIX). The
config names a local store by its absolute path; a relative one (recorded by older versions, as
typed) is looked up from the working directory, then from the run dir and the folders above it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domainclust import config as cfg
from domainclust.atomic import atomic_write, atomic_write_text
from domainclust.data.store import is_url
from domainclust.errors import DomainclustError


class RunDir:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.assignments_dir = self.path / "assignments"
        self.checkpoint_path = self.path / "checkpoints" / "last.pt"
        self.cache_dir = self.path / "cache"

    def prepare(self, config: cfg.Config) -> None:
        """Record the config; a run dir that holds a different one is refused."""
        if self.path.exists() and not self.path.is_dir():
            raise DomainclustError(f"run dir {self.path} exists and is not a directory")
        if self.config_path.exists():
            stored = self.load_config()
            changed = [k for k in cfg.differences(stored, config) if k not in cfg.RESUMABLE_KEYS]
            if changed:
                raise DomainclustError(
                    f"run dir {self.path} holds a run with a different config "
                    f"(differs in: {', '.join(changed)}); use a new --run-dir, or the same "
                    "settings to resume it"
                )
        atomic_write_text(self.config_path, cfg.dump_yaml(config))

    def load_config(self) -> cfg.Config:
        """The recorded config, its store resolved (see `recorded_store`)."""
        if not self.config_path.exists():
            raise DomainclustError(f"{self.path} is not a run dir (no config.yaml)")
        config = cfg.from_dict(cfg.load_yaml(self.config_path))
        store = recorded_store(config.data.store, run_dir=self.path)
        return dataclasses.replace(config, data=dataclasses.replace(config.data, store=store))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in history))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def assignment_path(self, epoch: int) -> Path:
        return self.assignments_dir / f"epoch_{epoch:04d}.npz"

    def save_assignments(self, epoch: int, *, indices: np.ndarray, labels: np.ndarray) -> None:
        atomic_write(
            self.assignment_path(epoch), lambda f: np.savez(f, indices=indices, labels=labels)
        )

    def load_assignments(self, epoch: int) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.assignment_path(epoch)
        if not path.exists():
            return None
        with np.load(path) as data:
            return data["indices"], data["labels"]

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return load_checkpoint(self.checkpoint_path, map_location=map_location)


def absolute_store(store: str) -> str:
    """A local store path made absolute (so a run dir names it from any working directory);
    a URL as it is."""
    return store if is_url(store) else os.path.abspath(store)


def recorded_store(store: str | None, *, run_dir: Path) -> str | None:
    """A store path as a run dir recorded it, made absolute. A relative record (older versions
    kept the path as typed) is tried from the working directory, then from the run dir and each
    folder above it (one of them was most likely the working directory of `pretrain`); one found
    nowhere is returned as recorded, for the reader to report missing."""
    if not store or is_url(store) or Path(store).is_absolute():
        return store
    run = Path(run_dir).absolute()
    for base in (Path.cwd(), run, *run.parents):
        if (base / store).exists():
            return os.path.abspath(base / store)
    return store


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (`weights_only=True`)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DomainclustError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        raise DomainclustError(
            f"checkpoint {path} could not be loaded safely ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); it is corrupt or not a "
            "domainclust checkpoint"
        ) from None
