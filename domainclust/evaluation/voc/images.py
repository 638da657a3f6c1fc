"""`domainclust eval voc`: VOC 2007 images read from a VOC-layout folder, then a protocol run.

Images are decoded with Pillow and resized to the network's tile size; they become the network's
input with the normalisation of the store it was trained on (uint8 RGB, like a store's tiles).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from domainclust.data.normalise import to_input
from domainclust.device import limit_cpu_threads, resolve_device
from domainclust.errors import DomainclustError
from domainclust.evaluation.models import as_classifier, input_normalisation, load_trained
from domainclust.evaluation.voc.layout import VocSet, read_voc
from domainclust.evaluation.voc.protocols import VocResult, VocSettings, voc_classification


def load_images(voc: VocSet, *, size: int, limit: int | None = None) -> np.ndarray:
    """(N, 3, size, size) uint8 RGB images of a VOC set (the first `limit` when given)."""
    from PIL import Image, UnidentifiedImageError

    n = len(voc.ids) if limit is None else min(limit, len(voc.ids))
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        path = voc.image_path(i)
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DomainclustError(f"cannot read VOC image {path}: {exc}") from None
        out[i] = np.asarray(rgb).transpose(2, 0, 1)
    return out


def normaliser(*, scale: list[float], offset: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 image batch → float input, as a store maps its tiles."""
    return lambda batch: to_input(batch, scale=scale, offset=offset)


def evaluate_voc(
    checkpoint: Path | str,
    voc_root: Path | str,
    *,
    protocol: str = "fc6-8",
    train_set: str = "trainval",
    test_set: str = "test",
    settings: VocSettings | None = None,
    max_images: int | None = None,
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = lambda _: None,
) -> VocResult:
    """Multi-label VOC07 classification (mAP, difficult ignored) of a pretrained network."""
    limit_cpu_threads()
    dev = resolve_device(device)
    trained = load_trained(checkpoint, device="cpu")
    spec = trained.spec
    if len(spec.channels) != 3:
        raise DomainclustError(
            f"{trained.source} takes {len(spec.channels)} channel(s) {list(spec.channels)}; VOC "
            "images are RGB, so only a 3-channel (RGB) network can be evaluated on them")
    norm = input_normalisation(trained)
    if norm is None:
        norm = ([1 / 255] * 3, [0.0] * 3)
        log("the training store's normalisation is unknown; scaling VOC pixels to 0..1")
    train, test = read_voc(voc_root, train_set), read_voc(voc_root, test_set)
    x_train = torch.from_numpy(load_images(train, size=spec.tile_size, limit=max_images))
    x_test = torch.from_numpy(load_images(test, size=spec.tile_size, limit=max_images))
    log(f"VOC: {len(x_train)} {train_set} / {len(x_test)} {test_set} images at {spec.tile_size} px")
    net = as_classifier(trained.model, spec, n_classes=len(train.classes), seed=seed, device=dev)
    return voc_classification(
        net, x_train, train.targets[: len(x_train)], x_test, test.targets[: len(x_test)],
        protocol=protocol, settings=settings or VocSettings(), seed=seed, classes=train.classes,
        source=str(trained.source), prepare=normaliser(scale=norm[0], offset=norm[1]))
