"""One evaluation recipe run on one network: the protocol's function, its figures as rows.

A row is `{"model", "row", "value"}` with the value in percent, named as the paper's tables
name it (`conv1`..`conv5`, `top-1`, `mAP`, `pretrained all 10-shot`), so `compare` can put the
paper's number beside it. The random-init baseline is a checkpoint of the same architecture
freshly initialised from the run's seed, evaluated by the very same code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domainclust.atomic import atomic_write
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation.models import fresh_network, load_trained
from domainclust.replication.recipes import EvaluationRecipe

Row = dict[str, Any]
CHECKPOINT_FORMAT = 1


def write_random_init(checkpoint: Path, out: Path, *, seed: int) -> Path:
    """A checkpoint of `checkpoint`'s architecture at random init (seeded), for the baselines."""
    if out.is_file():
        return out
    trained = load_trained(checkpoint, device="cpu")
    net = fresh_network(trained.spec, n_outputs=1, seed=seed)
    state = {"format": CHECKPOINT_FORMAT, "epoch": -1, "spec": dataclasses.asdict(trained.spec),
             "n_clusters": 1, "model": net.state_dict(), "history": [],
             "store": trained.info.get("store") or {}}
    atomic_write(out, lambda f: torch.save(state, f))
    return out


def linear_rows(ev: EvaluationRecipe, *, checkpoint: Path, model: str, stores: dict[str, Path],
                seed: int, device: str, progress: bool) -> tuple[list[Row], dict[str, Any]]:
    from domainclust.evaluation.probes.heldout import evaluate_linear_heldout

    s = ev.settings
    result = evaluate_linear_heldout(
        checkpoint, stores[ev.train_split], stores[ev.test_split], layers=s.layers or None,
        weight_decays=tuple(s.weight_decays), batch_size=s.batch_size, seed=seed, device=device,
        progress=progress)
    rows = [{"model": model, "row": r.layer, "value": 100 * r.top1} for r in result.rows]
    return rows, result.to_dict()


def mlp_rows(ev: EvaluationRecipe, *, checkpoint: Path, model: str, stores: dict[str, Path],
             seed: int, device: str, progress: bool) -> tuple[list[Row], dict[str, Any]]:
    from domainclust.evaluation.probes.mlp import evaluate_mlp

    result = evaluate_mlp(checkpoint, stores[ev.train_split], stores[ev.test_split],
                          settings=ev.settings, seed=seed, device=device, progress=progress)
    return [{"model": model, "row": "top-1", "value": 100 * result.top1}], result.to_dict()


def voc_rows(ev: EvaluationRecipe, *, checkpoint: Path, model: str, voc_root: Path, seed: int,
             device: str, log: Callable[[str], None]) -> tuple[list[Row], dict[str, Any]]:
    from domainclust.evaluation.voc.images import evaluate_voc
    from domainclust.evaluation.voc.protocols import VocSettings

    s = ev.settings
    fields = {f.name for f in dataclasses.fields(VocSettings)}
    settings = VocSettings(**{k: v for k, v in dataclasses.asdict(s).items() if k in fields})
    result = evaluate_voc(checkpoint, voc_root, protocol=s.layers, train_set=ev.train_split,
                          test_set=ev.test_split, settings=settings, seed=seed, device=device,
                          log=log)
    return [{"model": model, "row": "mAP", "value": 100 * result.mean_ap}], result.to_dict()


def low_shot_rows(ev: EvaluationRecipe, *, checkpoint: Path, model: str, store: Path,
                  out: Path, seed: int, device: str,
                  log: Callable[[str], None]) -> tuple[list[Row], dict[str, Any]]:
    """The low-shot command's experiment; rows read back from the `finetune.json` it writes."""
    from domainclust.evaluation.lowshot.fewshot import low_shot
    from domainclust.evaluation.lowshot.finetune import FinetuneSettings
    from domainclust.evaluation.results import write_finetune

    s = ev.settings
    result = low_shot(checkpoint, store, shots=sorted(set(s.shots)), repeats=s.repeats,
                      protocol=s.protocol, test_fraction=s.test_fraction, max_test=s.max_test,
                      seed=seed, device=device, log=log,
                      settings=FinetuneSettings(batch_size=s.batch_size))
    paths = write_finetune(result, out)
    values = _read_json(paths["json"])
    return finetune_rows(values, model=model), values


def segment_rows(ev: EvaluationRecipe, *, checkpoint: Path, model: str, stores: dict[str, Path],
                 seed: int, device: str,
                 log: Callable[[str], None]) -> tuple[list[Row], dict[str, Any]]:
    """A decoder on the network's trunk trained on every masked tile of the train split (its
    learning rate and length chosen by inner cross-validation on them, as `finetune --task
    segment` does), scored by mIoU over the test split's labelled pixels; one row per entry of
    `layers` (`fc6-8`: the trunk frozen, `all`: every layer trained). Tiles are read at the
    store's size, so each keeps its mask pixel for pixel."""
    from domainclust.device import limit_cpu_threads, resolve_device
    from domainclust.evaluation.models import align_store
    from domainclust.replication.recipes import SEGMENT_LAYERS
    from domainclust.segmentation.decoder import decoder_factory
    from domainclust.segmentation.metrics import confusion, scores
    from domainclust.segmentation.protocol import POOL_TILES, frozen_trunk
    from domainclust.segmentation.training import SegmentSettings, predict_masks, select_and_train

    s = ev.settings
    limit_cpu_threads()
    dev = resolve_device(device)
    trained = load_trained(checkpoint, device=dev)
    train, test = (align_store(trained.spec, TileStore(stores[split]), source=trained.source,
                               log=log) for split in (ev.train_split, ev.test_split))
    x, y = _masked_tiles(train)
    x_test, y_test = _masked_tiles(test)
    names = _mask_classes(train, test, top=int(max(y.max(initial=0), y_test.max(initial=0))))
    k = len(names)
    settings = SegmentSettings(lrs=tuple(s.lrs), steps=tuple(s.steps), batch_size=s.batch_size,
                               flip=s.flip, default_lr=s.lrs[0], default_steps=s.steps[0])
    pool = x[np.random.default_rng(seed).permutation(len(x))[:POOL_TILES]]
    rows, values = [], {}
    for layer in s.layers:
        frozen = SEGMENT_LAYERS[layer] == "frozen"
        base = frozen_trunk(trained.model, pool) if frozen else trained.model
        make_net = decoder_factory(base, frozen=frozen, n_classes=k,
                                   width=settings.decoder_width, device=dev, seed=seed)
        net, picked = select_and_train(make_net, x, y, n_classes=k, frozen=frozen,
                                       settings=settings, seed=seed)
        scored = scores(confusion(y_test, predict_masks(net, x_test), n_classes=k), names=names)
        rows.append({"model": model, "row": layer, "value": 100 * scored["miou"]})
        values[layer] = {**scored, "choice": picked}
    return rows, {"classes": names, "train_tiles": len(x), "test_tiles": len(x_test),
                  "layers": values}


def _mask_classes(train: TileStore, test: TileStore, *, top: int) -> list[str]:
    """The class names of the train store's masks, which the test store must share (ids up
    to `top` when the stores name none)."""
    if train.mask_classes != test.mask_classes:
        raise DomainclustError(f"stores {train.path} and {test.path} name their mask classes "
                               "differently")
    return list(train.mask_classes or [str(c) for c in range(top + 1)])


def _masked_tiles(store: TileStore) -> tuple[torch.Tensor, np.ndarray]:
    """Every tile of `store` (float, at its own size) and its mask (class ids, -1 unlabelled)."""
    from domainclust.evaluation.features import read_float_tiles

    if not store.has_masks:
        raise DomainclustError(f"store {store.path} has no masks; a segmentation evaluation "
                               "needs stores ingested with their masks")
    every = np.arange(store.n)
    raw = store.read_masks(every).astype(np.int64)
    masks = np.where(raw == store.mask_ignore, -1, raw)
    return read_float_tiles(store, every, tile_size=store.tile_size), masks


def finetune_rows(values: dict[str, Any], *, model: str) -> list[Row]:
    """Rows of a `finetune.json`: one per method, protocol and shot count.

    Reads the low-shot schema (`rows` with `method` in raw_pixels / channel_stats / random_init
    / pretrained, `protocol`, `shots`, `mean`) and the earlier one (`init` pretrained / random).
    """
    rows = []
    for r in values.get("rows", []):
        method = r.get("method") or ("pretrained" if r.get("init") == "pretrained"
                                     else "random_init")
        mean = r.get("mean")
        if mean is None and r.get("accuracies"):
            mean = sum(r["accuracies"]) / len(r["accuracies"])
        if mean is None:
            raise DomainclustError(f"finetune.json row {r} has no mean")
        name = model if method == "pretrained" else method.replace("_init", "")
        rows.append({"model": name, "row": f"{r.get('protocol', 'all')} {r['shots']}-shot",
                     "value": 100 * float(mean)})
    return rows


def _read_json(path: Path) -> Any:
    import json

    return json.loads(Path(path).read_text())
