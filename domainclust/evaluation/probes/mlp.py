"""The MLP retrained on frozen conv layers (thesis Table 5.2).

The conv layers of the pretrained network keep their weights and their BatchNorm statistics;
the classifier on top of them (fc6, fc7 and a new class layer, AlexNet/VGG) is initialised
afresh and trained with SGD on the labelled images, random shifts and flips. This measures what
the conv layers alone carry, with a classifier stronger than a linear probe. Batches are drawn
by a function, so the same loop trains from a tensor (tests) or a TileStore of any size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from domainclust.data.store import TileStore
from domainclust.engine.extract import tile_batches
from domainclust.errors import DomainclustError
from domainclust.evaluation.features import READ_BLOCK
from domainclust.evaluation.models import as_classifier
from domainclust.evaluation.probes.heldout import open_heldout
from domainclust.evaluation.training import augment, sgd
from domainclust.evaluation.voc.protocols import set_mode, trainable_parameters
from domainclust.networks.backbones import head_init_
from domainclust.networks.model import DeepClusterNet

TRAIN_SCORE_MAX = 10000
Draw = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]  # → (float x, class ids)


@dataclass
class MlpSettings:
    steps: int = 20000
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: float = 0.1  # random translation, fraction of the side
    flip: bool = True


@dataclass
class MlpResult:
    top1: float
    train_top1: float
    n_train: int
    n_test: int
    n_classes: int
    settings: dict[str, Any]
    checkpoint: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        return (f"MLP on frozen conv layers of {self.checkpoint}: test top-1 "
                f"{100 * self.top1:.2f}% (train {100 * self.train_top1:.2f}%; {self.n_train} "
                f"train / {self.n_test} test, {self.n_classes} classes)")


def reset_mlp(net: DeepClusterNet, *, n_classes: int, seed: int) -> DeepClusterNet:
    """Re-initialise fc6, fc7 (N(0, 0.01), bias 0) and a fresh `n_classes` top layer."""
    if not hasattr(net.backbone, "classifier"):
        raise DomainclustError(f"the MLP protocol retrains fc6-fc7, which {net.spec.arch} does not "
                               "have; use an AlexNet or VGG16 network")
    torch.manual_seed(seed)
    for m in net.backbone.classifier.modules():
        if isinstance(m, torch.nn.Linear):
            head_init_(m)
    net.reset_head(n_classes)
    return net


def train_mlp(net: DeepClusterNet, *, draw: Draw, settings: MlpSettings, seed: int,
              progress: bool = False) -> DeepClusterNet:
    """SGD on the classifier of `net` over `settings.steps` batches from `draw`; convs frozen."""
    s = settings
    params = trainable_parameters(net, "fc6-8")  # freezes the convs, returns fc6, fc7, top
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    optimizer = sgd(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    set_mode(net, "fc6-8")  # frozen BatchNorm keeps its running statistics
    for _ in tqdm(range(s.steps), desc="mlp", unit="step", disable=not progress, leave=False):
        x, y = draw(generator)
        x = augment(x, shift=s.shift, flip=s.flip, generator=generator).to(device)
        loss = F.cross_entropy(net(x), y.to(device))
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def tensor_draw(x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> Draw:
    """Batches drawn uniformly (with replacement) from float tiles `x` and class ids `y`."""
    batch = min(batch_size, len(x))

    def draw(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(x), (batch,), generator=generator)
        return x[idx], y[idx]

    return draw


def store_draw(store: TileStore, indices: np.ndarray, y: np.ndarray, *, batch_size: int,
               tile_size: int) -> Draw:
    """Batches read from `store` at random among `indices` (class ids `y`, same order)."""
    batch = min(batch_size, len(indices))
    cpu = torch.device("cpu")

    def draw(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(indices), (batch,), generator=generator).numpy()
        pick = np.sort(pick)  # sorted reads touch each chunk once
        tiles = store.read(indices[pick])
        x = next(tile_batches(tiles, store=store, batch_size=batch, device=cpu,
                              tile_size=tile_size))
        return x, torch.as_tensor(y[pick])

    return draw


@torch.no_grad()
def top1(net: DeepClusterNet, batches: Any, labels: np.ndarray) -> float:
    """Top-1 of `net` (eval mode) over float batches whose class ids are `labels`, in order."""
    net.eval()
    device = next(net.parameters()).device
    pred = torch.cat([net(x.to(device)).argmax(1).cpu() for x in batches]).numpy()
    return float((pred == labels).mean())


def store_batches(store: TileStore, indices: np.ndarray, *, batch_size: int,
                  tile_size: int) -> Any:
    for start in range(0, len(indices), READ_BLOCK):
        tiles = store.read(indices[start : start + READ_BLOCK])
        yield from tile_batches(tiles, store=store, batch_size=batch_size,
                                device=torch.device("cpu"), tile_size=tile_size)


def evaluate_mlp(
    checkpoint: Path | str,
    train_store: Path | str,
    test_store: Path | str,
    *,
    settings: MlpSettings | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> MlpResult:
    """Top-1 on `test_store` of an MLP trained on `train_store` over the frozen conv layers."""
    s = settings or MlpSettings()
    start = time.perf_counter()
    h = open_heldout(checkpoint, train_store, test_store, device=device, load_on="cpu")
    trained, dev = h.inputs.trained, h.inputs.device
    train, test = h.train_indices, h.test_indices
    classes, y_train = np.unique(h.inputs.labels[train], return_inverse=True)
    y_test = np.searchsorted(classes, h.test_labels[test])
    net = as_classifier(trained.model, trained.spec, n_classes=len(classes), seed=seed,
                        device=dev)
    reset_mlp(net, n_classes=len(classes), seed=seed)
    net.to(dev)
    size = trained.spec.tile_size
    train_mlp(net, draw=store_draw(h.inputs.store, train, y_train, batch_size=s.batch_size,
                                   tile_size=size), settings=s, seed=seed, progress=progress)
    batch = max(1, min(s.batch_size, 256))
    seen = train  # the training accuracy, on a seeded sample of a large training set
    if len(seen) > TRAIN_SCORE_MAX:
        seen = np.sort(np.random.default_rng(seed).choice(train, TRAIN_SCORE_MAX, replace=False))
    return MlpResult(
        top1=top1(net, store_batches(h.test_store, test, batch_size=batch, tile_size=size),
                  y_test),
        train_top1=top1(net, store_batches(h.inputs.store, seen, batch_size=batch,
                                           tile_size=size),
                        y_train[np.searchsorted(train, seen)]),
        n_train=len(train), n_test=len(test), n_classes=len(classes), settings=asdict(s),
        checkpoint=str(trained.source), seconds=round(time.perf_counter() - start, 2))
