"""The low-shot experiment: shots × repeats × protocols × {pretrained, random init}, mean ± std."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domainclust.errors import DomainclustError
from domainclust.evaluation.data import check_shots, make_split, sample_shots
from domainclust.evaluation.features import read_float_tiles
from domainclust.evaluation.finetune import (
    PROTOCOLS,
    FinetuneSettings,
    derive_seed,
    finetune_all,
    head_accuracy,
    head_features,
    predict,
)
from domainclust.evaluation.inputs import open_inputs
from domainclust.evaluation.models import (
    as_classifier,
    fresh_network,
)
from domainclust.extract import tile_batches

INITS = ("pretrained", "random")


@dataclass
class ShotRow:
    protocol: str
    init: str
    shots: int
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


@dataclass
class FinetuneResult:
    rows: list[ShotRow]
    settings: dict[str, Any]
    n_classes: int
    n_test: int
    split: str
    checkpoint: str
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, protocol: str, init: str, shots: int) -> ShotRow:
        return next(r for r in self.rows if (r.protocol, r.init, r.shots) == (protocol, init, shots))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for r, d in zip(self.rows, out["rows"]):
            d.update(mean=r.mean, std=r.std)
        return out

    def table(self) -> str:
        title = (f"low-shot top-1 on {self.n_test} test tiles, {self.n_classes} classes "
                 f"({len(self.rows[0].accuracies)} repeats, mean ± std)")
        lines = [title, "| protocol | shots/class | pretrained | random init |", "|---|---:|---:|---:|"]
        for r in self.rows:
            if r.init != "pretrained":
                continue
            rnd = self.row(r.protocol, "random", r.shots)
            lines.append(f"| {r.protocol} | {r.shots} | {100 * r.mean:.2f} ± {100 * r.std:.2f}% "
                         f"| {100 * rnd.mean:.2f} ± {100 * rnd.std:.2f}% |")
        return "\n".join(lines)


def parse_protocols(protocol: str) -> tuple[str, ...]:
    if protocol == "both":
        return PROTOCOLS
    if protocol not in PROTOCOLS:
        raise DomainclustError(f"unknown protocol '{protocol}'; choose all, head or both")
    return (protocol,)


def low_shot(
    checkpoint: Path | str,
    store_path: Path | str,
    *,
    shots: list[int],
    repeats: int = 10,
    protocol: str = "all",
    settings: FinetuneSettings | None = None,
    test_fraction: float = 0.2,
    max_test: int | None = None,
    seed: int = 0,
    split_path: Path | str | None = None,
    labels_path: Path | str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = lambda _: None,
) -> FinetuneResult:
    """Low-shot accuracy of the pretrained network vs random init, per protocol and shot count."""
    settings = settings or FinetuneSettings()
    protocols = parse_protocols(protocol)
    if not shots or min(shots) < 1 or repeats < 1:
        raise DomainclustError("shots must be positive integers and repeats at least 1")
    inputs = open_inputs(checkpoint, store_path, labels_path=labels_path, device=device, load_on="cpu")
    dev, store, labels, trained = inputs.device, inputs.store, inputs.labels, inputs.trained
    split = make_split(labels, split_path=split_path, test_fraction=test_fraction, seed=seed)
    check_shots(labels, split.train, shots=shots)
    classes = np.unique(labels[labels >= 0])
    test = split.test
    if max_test is not None and len(test) > max_test:
        test = np.sort(np.random.default_rng(seed).choice(test, size=max_test, replace=False))
    size = trained.spec.tile_size
    test_tiles = store.read(test)  # storage dtype; made float batch by batch

    def test_batches() -> Iterator[torch.Tensor]:
        return tile_batches(test_tiles, store=store, batch_size=256, device=dev, tile_size=size)

    y_test = np.searchsorted(classes, labels[test])
    draws = {(r, s): sample_shots(labels, split.train, shots=s,
                                  rng=np.random.default_rng(derive_seed(seed, r, s)))
             for r in range(repeats) for s in shots}
    acc: dict[tuple[str, str, int], list[float]] = {}
    pretrained_test_f = None
    for r in range(repeats):
        random_seed = derive_seed(seed, r, 10**6)
        for init in INITS:
            base = (trained.model if init == "pretrained"
                    else fresh_network(trained.spec, n_outputs=len(classes), seed=random_seed))
            if "head" in protocols and init == "random":
                test_f = head_features(base.to(dev), test_batches())
            elif "head" in protocols:  # frozen pretrained features: the same in every repeat
                if pretrained_test_f is None:
                    pretrained_test_f = head_features(base.to(dev), test_batches())
                test_f = pretrained_test_f
            work = None  # one working copy per (repeat, init), overwritten for every shot count
            for s in shots:
                idx = draws[(r, s)]
                x = read_float_tiles(store, idx, tile_size=size)
                y = np.searchsorted(classes, labels[idx])
                run_seed = derive_seed(seed, r, s)
                if "all" in protocols:
                    work = as_classifier(base, trained.spec, n_classes=len(classes),
                                         seed=run_seed, device=dev, into=work)
                    finetune_all(work, x, torch.as_tensor(y), settings=settings, seed=run_seed)
                    a = float((predict(work, test_batches()) == y_test).mean())
                    acc.setdefault(("all", init, s), []).append(a)
                if "head" in protocols:
                    a = head_accuracy(head_features(base.to(dev), x.split(256)), y, test_f, y_test,
                                      settings=settings, seed=run_seed)
                    acc.setdefault(("head", init, s), []).append(a)
            log(f"repeat {r + 1}/{repeats}, {init}: " + ", ".join(
                f"{p} {s}-shot {100 * acc[(p, init, s)][-1]:.1f}%" for p in protocols for s in shots))
    rows = [ShotRow(protocol=p, init=i, shots=s, accuracies=acc[(p, i, s)])
            for p in protocols for s in shots for i in INITS]
    return FinetuneResult(rows=rows, settings=asdict(settings), n_classes=len(classes),
                          n_test=len(test), split=split.source, checkpoint=str(trained.source),
                          seed=seed)
