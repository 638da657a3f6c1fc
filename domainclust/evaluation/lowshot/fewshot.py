"""The low-shot experiment: does pretraining beat what a practitioner tries first?

Methods: `raw_pixels` and `channel_stats` (features of the tile itself), `random_init` (the same
network freshly initialised, a new seed every repeat) and `pretrained`. Protocols: `linear`
(frozen features + logistic regression, every method; conv stages pooled to ~10k values as the
paper's probes), `linear-gap` (the same, each conv stage averaged over the whole tile: one value
per channel, a feature a few dozen shots can fit), `knn` (the frozen features of `linear`, the
shots as a cosine k-NN bank, every method) and `finetune` (every layer trained; the two
networks only). Each repeat draws fresh shots, the same for every method (paired), and every
choice (layer, L2 penalty, k, learning rate, length) is made on those shots alone. The test
tiles come from a split that respects the data (`data.tile_groups`). Per shot count, the verdict
compares the pretrained network (first protocol asked for) with the strongest baseline.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError
from domainclust.evaluation.data import check_shots, sample_shots, store_split
from domainclust.evaluation.features import (
    GLOBAL_AVERAGE,
    TARGET_DIMS,
    extract_layers,
    layer_label,
    layer_names,
    read_float_tiles,
)
from domainclust.evaluation.inputs import open_inputs
from domainclust.evaluation.lowshot.baselines import BASELINES, baseline_features
from domainclust.evaluation.lowshot.finetune import FinetuneSettings, select_and_finetune
from domainclust.evaluation.lowshot.frozen import Standardiser, choose, fit_frozen
from domainclust.evaluation.lowshot.result import LowShotResult, Row, Verdict
from domainclust.evaluation.models import as_classifier, fresh_network
from domainclust.evaluation.probes.knn import choose_neighbours, knn_predict
from domainclust.evaluation.probes.linear import LinearClassifier
from domainclust.evaluation.stats import Interval, mean_ci, verdict
from domainclust.evaluation.training import predict
from domainclust.seeds import derive_seed

PROTOCOLS = ("linear", "linear-gap", "knn", "finetune")
FROZEN = ("linear", "linear-gap", "knn")  # on frozen features, which score the baselines too
NETWORKS = ("random_init", "pretrained")
METHODS = (*BASELINES, *NETWORKS)
METRICS = ("top1", "balanced_accuracy")
POOL_TILES = 512  # unlabelled training tiles whose statistics standardise every feature


def parse_protocols(protocol: str) -> tuple[str, ...]:
    """`both` is linear + finetune."""
    if protocol == "both":
        return ("linear", "finetune")
    if protocol not in PROTOCOLS:
        raise DomainclustError(f"unknown protocol '{protocol}'; choose linear, linear-gap, knn, "
                               "finetune or both (linear + finetune)")
    return (protocol,)


def default_layer(model: torch.nn.Module) -> str:
    """The layer used when the shots are too few to choose one: the middle conv stage, where
    the thesis finds DeepCluster's most transferable features (conv3 of AlexNet)."""
    stages = model.backbone.stages
    return stages[len(stages) // 2]


class FeatureSource:
    """Standardised features of one method (per layer for networks), for any tile indices."""

    def __init__(self, method: str, store: TileStore, *, tile_size: int, device: torch.device,
                 pool: np.ndarray, model: torch.nn.Module | None = None,
                 target: int = TARGET_DIMS) -> None:
        self.method, self.store, self.tile_size, self.device = method, store, tile_size, device
        self.model, self.target = model, target
        self.layers = list(layer_names(model)) if model is not None else [method]
        self.default_layer = default_layer(model) if model is not None else method
        self.standardise = {name: Standardiser.fit(f) for name, f in self.raw(pool).items()}

    def raw(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        if self.model is None:
            x = read_float_tiles(self.store, indices, tile_size=self.tile_size)
            return {self.method: baseline_features(self.method, x).numpy()}
        return extract_layers(self.model, self.store, indices=indices, layers=self.layers,
                              device=self.device, target=self.target)

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {name: self.standardise[name](f) for name, f in self.raw(indices).items()}


def low_shot(
    checkpoint: Path | str,
    store_path: Path | str,
    *,
    shots: list[int],
    repeats: int = 10,
    protocol: str = "linear",
    settings: FinetuneSettings | None = None,
    test_fraction: float = 0.2,
    max_test: int | None = None,
    split_by: str = "auto",
    seed: int = 0,
    split_path: Path | str | None = None,
    labels_path: Path | str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = lambda _: None,
) -> LowShotResult:
    """Every method × protocol × shot count over `repeats` paired repeats, and the verdict."""
    settings = settings or FinetuneSettings()
    protocols = parse_protocols(protocol)
    if not shots or min(shots) < 1 or repeats < 1:
        raise DomainclustError("shots must be positive integers and repeats at least 1")
    inputs = open_inputs(checkpoint, store_path, labels_path=labels_path, device=device,
                         log=log)
    dev, store, labels, trained = inputs.device, inputs.store, inputs.labels, inputs.trained
    split = store_split(store, labels, split_path=split_path, test_fraction=test_fraction,
                        seed=seed, split_by=split_by)
    check_shots(labels, split.train, shots=shots)
    classes = np.unique(labels[labels >= 0])
    rng = np.random.default_rng(derive_seed(seed, 1))
    test = split.test
    if max_test is not None and len(test) > max_test:
        test = np.sort(rng.choice(test, size=max_test, replace=False))
    pool = np.sort(rng.choice(split.train, size=min(POOL_TILES, len(split.train)), replace=False))
    y_test = np.searchsorted(classes, labels[test])
    spec, size = trained.spec, trained.spec.tile_size
    log(f"split: {split.describe()}; scoring on {len(test)} test tiles")
    absent = np.setdiff1d(classes, labels[test])
    if len(absent):
        log(f"no test tile of class {', '.join(map(str, absent))}: balanced accuracy averages "
            f"the {len(classes) - len(absent)} classes the test tiles hold")

    values: dict[tuple[str, str, int, str], list[float]] = {}
    choices: dict[tuple[str, str, int], list[dict[str, Any]]] = {}

    def record(method: str, proto: str, s: int, pred: np.ndarray, choice: dict[str, Any]) -> None:
        values.setdefault((method, proto, s, "top1"), []).append(float((pred == y_test).mean()))
        with warnings.catch_warnings():  # a class absent from the test tiles, said once above
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            balanced = float(balanced_accuracy_score(y_test, pred))
        values.setdefault((method, proto, s, "balanced_accuracy"), []).append(balanced)
        choices.setdefault((method, proto, s), []).append(choice)

    # Baselines have no network to fine-tune: they are in every table, on frozen features.
    frozen = [p for p in protocols if p in FROZEN]
    target = GLOBAL_AVERAGE if "linear-gap" in frozen else TARGET_DIMS
    sources = {m: FeatureSource(m, store, tile_size=size, device=dev, pool=pool)
               for m in BASELINES}
    sources["pretrained"] = FeatureSource("pretrained", store, tile_size=size, device=dev,
                                          pool=pool, model=trained.model, target=target)
    test_features = {m: src(test) for m, src in sources.items()}
    test_x = read_float_tiles(store, test, tile_size=size) if "finetune" in protocols else None
    for r in range(repeats):
        random_seed = derive_seed(seed, r, 10**6)
        random_net = fresh_network(spec, n_outputs=len(classes), seed=random_seed, device=dev)
        if frozen:
            sources["random_init"] = FeatureSource("random_init", store, tile_size=size,
                                                   device=dev, pool=pool, model=random_net,
                                                   target=target)
            test_features["random_init"] = sources["random_init"](test)
        for s in shots:
            idx = sample_shots(labels, split.train, shots=s,
                               rng=np.random.default_rng(derive_seed(seed, r, s)))
            y = np.searchsorted(classes, labels[idx])
            run_seed = derive_seed(seed, r, s, 1)
            for method in METHODS if frozen else BASELINES:
                src = sources[method]
                feats = src(idx)
                for proto in frozen or ["linear"]:
                    pred, choice = score_frozen(proto, feats, y, test_features[method],
                                                default_layer=src.default_layer, seed=run_seed)
                    choice["layer"] = (layer_label(spec.arch, choice["layer"])
                                       if src.model is not None else None)
                    record(method, proto, s, pred, choice)
            if "finetune" in protocols:
                x = read_float_tiles(store, idx, tile_size=size)
                for method in NETWORKS:
                    base = trained.model if method == "pretrained" else random_net

                    def make_net(base: torch.nn.Module = base, seed: int = run_seed
                                 ) -> torch.nn.Module:
                        return as_classifier(base, spec, n_classes=len(classes), seed=seed,
                                             device=dev)

                    net, picked = select_and_finetune(make_net, x, y, settings=settings,
                                                      seed=run_seed)
                    record(method, "finetune", s, predict(net, test_x.split(256)), picked)
        log(f"repeat {r + 1}/{repeats}: " + ", ".join(
            f"{m}/{p} {s}-shot {100 * v[-1]:.1f}%" for (m, p, s, metric), v in values.items()
            if metric == "top1" and len(v) == r + 1 and s == max(shots)))

    rows = [Row(method=m, protocol=p, shots=s, metric=metric, **summarise(v),
                values=v, choices=choices[(m, p, s)])
            for (m, p, s, metric), v in values.items()]
    rows.sort(key=lambda row: (row.shots, METHODS.index(row.method), row.protocol, row.metric))
    return LowShotResult(
        rows=rows, verdict=[judge(rows, shots=s, protocol=protocols[0]) for s in shots],
        split=split.source, n_classes=len(classes), n_test=len(test),
        checkpoint=str(trained.source), seed=seed,
        settings={"protocols": list(protocols), "finetune": asdict(settings), "repeats": repeats})


def score_frozen(protocol: str, feats: dict[str, np.ndarray], y: np.ndarray,
                 test_feats: dict[str, np.ndarray], *, default_layer: str, seed: int
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """Test predictions of one frozen protocol fit on the shots' features, and what it chose."""
    if protocol == "knn":
        near = choose_neighbours(feats, y, default_layer=default_layer)
        pred = knn_predict(feats[near.layer], y, test_feats[near.layer], k=near.k)
        return pred, {"layer": near.layer, "k": near.k, "validated": near.validated}
    pick = choose(feats, y, default_layer=default_layer, seed=seed)
    probe = fit_frozen(feats[pick.layer], y, choice=pick, seed=seed)
    return (probe_predict(probe, test_feats[pick.layer]),
            {"layer": pick.layer, "weight_decay": pick.weight_decay, "validated": pick.validated})


def probe_predict(probe: LinearClassifier, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return probe.classes[probe.scores(torch.as_tensor(x)).argmax(1).numpy()]


def summarise(v: list[float]) -> dict[str, Any]:
    """A row's mean, 95 % interval (None for a single repeat) and repeats."""
    ci = mean_ci(v)
    bounded = bool(np.isfinite(ci.low))
    return {"mean": ci.mean, "ci_low": ci.low if bounded else None,
            "ci_high": ci.high if bounded else None, "repeats": ci.n}


def judge(rows: list[Row], *, shots: int, protocol: str, metric: str = "top1") -> Verdict:
    """Pretrained (`protocol`) against the baseline row with the highest mean at `shots`."""
    at = [r for r in rows if r.shots == shots and r.metric == metric]
    ours = next(r for r in at if (r.method, r.protocol) == ("pretrained", protocol))
    best = max((r for r in at if r.method != "pretrained"), key=lambda r: r.mean)
    return verdict_of(mean_ci(np.asarray(ours.values) - np.asarray(best.values)), shots=shots,
                      method=f"pretrained/{protocol}",
                      best_baseline=f"{best.method}/{best.protocol}")


def verdict_of(diff: Interval, *, shots: int, method: str, best_baseline: str) -> Verdict:
    """The verdict at `shots` from the interval of `method`'s paired difference against
    `best_baseline` (no bounds when it has none)."""
    bounded = bool(np.isfinite(diff.low))
    return Verdict(shots=shots, result=verdict(diff), method=method, best_baseline=best_baseline,
                   difference=diff.mean, ci_low=diff.low if bounded else None,
                   ci_high=diff.high if bounded else None)
