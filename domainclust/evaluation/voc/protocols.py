"""VOC 2007 multi-label classification protocols: "fc6–8 retrained" and "all layers retrained".

`fc6-8` trains fc6, fc7 and a new fc8 (the top layer, one output per class) on frozen conv layers
whose BatchNorm keeps its running statistics; `all` trains every layer. Both use a binary
cross-entropy per class in which "difficult" targets (0) are masked out, random translations and
horizontal flips during training, and score a test image by averaging it with its mirror image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from domainclust.errors import DomainclustError
from domainclust.evaluation.training import augment, sgd
from domainclust.evaluation.voc.layout import mean_average_precision
from domainclust.networks.model import DeepClusterNet

VOC_PROTOCOLS = ("fc6-8", "all")
Prepare = Callable[[torch.Tensor], torch.Tensor] | None


@dataclass
class VocSettings:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-6
    shift: float = 0.1
    flip: bool = True


@dataclass
class VocResult:
    protocol: str
    mean_ap: float
    per_class_ap: dict[str, float]
    n_train: int
    n_test: int
    settings: dict[str, Any]
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        title = (f"VOC07 classification, protocol {self.protocol}: mAP {100 * self.mean_ap:.2f}% "
                 f"({self.n_train} train / {self.n_test} test images)")
        lines = [title, "| class | AP |", "|---|---:|"]
        lines += [f"| {c} | {'n/a' if np.isnan(ap) else f'{100 * ap:.2f}%'} |"
                  for c, ap in self.per_class_ap.items()]
        return "\n".join(lines)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the (image, class) pairs whose target is not 0."""
    mask = targets != 0
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], (targets[mask] > 0).float())


def trainable_parameters(net: DeepClusterNet, protocol: str) -> list[torch.nn.Parameter]:
    """Freeze what the protocol keeps fixed; return the parameters it trains."""
    if protocol not in VOC_PROTOCOLS:
        raise DomainclustError(f"unknown VOC protocol '{protocol}'; choose fc6-8 or all")
    if protocol == "all":
        return list(net.parameters())
    if not hasattr(net.backbone, "classifier"):
        raise DomainclustError(f"protocol fc6-8 needs fc6/fc7 (AlexNet or VGG); {net.spec.arch} "
                               "has none, use protocol all")
    for p in net.parameters():
        p.requires_grad_(False)
    params = [*net.backbone.classifier.parameters(), *net.top.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def set_mode(net: DeepClusterNet, protocol: str) -> None:
    """Training mode, except the frozen conv layers of fc6-8 (BatchNorm stays frozen)."""
    net.train()
    if protocol == "fc6-8":
        net.backbone.convs.eval()


def train_multilabel(
    net: DeepClusterNet, x: torch.Tensor, targets: torch.Tensor, *, protocol: str,
    settings: VocSettings, seed: int, prepare: Prepare = None,
) -> DeepClusterNet:
    """Fit `net` (its top layer sized to the classes) on images `x` and (N, C) targets.

    `prepare` turns a batch of `x` into float input (e.g. uint8 → normalised), so a large
    training set can stay in its compact dtype.
    """
    s = settings
    params = trainable_parameters(net, protocol)
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = sgd(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    batch = min(s.batch_size, len(x))
    set_mode(net, protocol)
    for _ in range(s.steps):
        idx = torch.randint(len(x), (batch,), generator=generator)
        xb = x[idx] if prepare is None else prepare(x[idx])
        xb = augment(xb, shift=s.shift, flip=s.flip, generator=generator).to(device)
        loss = multilabel_loss(net(xb), targets[idx].to(device))
        optimizer.zero_grad(set_to_none=False)  # reuse grad buffers: no page faults
        loss.backward()
        optimizer.step()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


@torch.no_grad()
def multilabel_scores(net: DeepClusterNet, x: torch.Tensor, *, batch_size: int = 128,
                      prepare: Prepare = None) -> np.ndarray:
    """(N, C) scores, each the mean over the image and its horizontal mirror."""
    net.eval()
    device = next(net.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        xb = (xb if prepare is None else prepare(xb)).to(device)
        out.append(((net(xb) + net(xb.flip(-1))) / 2).cpu())
    return torch.cat(out).numpy()


def voc_classification(
    net: DeepClusterNet, train_x: torch.Tensor, train_targets: np.ndarray,
    test_x: torch.Tensor, test_targets: np.ndarray, *, protocol: str, settings: VocSettings,
    seed: int = 0, classes: tuple[str, ...], source: str = "", prepare: Prepare = None,
) -> VocResult:
    """Train with `protocol` on the training images, then mAP on the test images."""
    train_multilabel(net, train_x, torch.as_tensor(train_targets, dtype=torch.int8),
                     protocol=protocol, settings=settings, seed=seed, prepare=prepare)
    scores = multilabel_scores(net, test_x, prepare=prepare)
    m, aps = mean_average_precision(scores, test_targets)
    return VocResult(protocol=protocol, mean_ap=m,
                     per_class_ap={c: float(a) for c, a in zip(classes, aps)},
                     n_train=len(train_x), n_test=len(test_x), settings=asdict(settings),
                     checkpoint=source)
