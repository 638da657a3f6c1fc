"""The low-shot segmentation experiment: does the pretrained trunk segment better from a few
masked tiles than what a practitioner tries first?

Methods: `majority` and `pixel_logistic` (baselines), `random_init` (the same trunk freshly
initialised, a new seed every repeat) and `pretrained`, each network with the same decoder under
the protocols `frozen` (decoder only; the trunk's BatchNorm statistics recomputed on unlabelled
training tiles) and `finetune` (all layers). Shots are labelled tiles, drawn per repeat so that
every class appears, the same for every method (paired); every choice is made on the shots
alone. The test tiles come from the split classification uses (`data.store_split`: by source,
or spatial blocks), a tile's majority class standing in for its label. Per shot count the
verdict compares the pretrained network (first protocol asked for) with the strongest baseline
on mIoU (Dice for binary masks). Written as `segment.json`, the layout of `finetune.json`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domainclust.data.store import TileStore
from domainclust.device import limit_cpu_threads, resolve_device
from domainclust.errors import DomainclustError
from domainclust.evaluation.data import store_split
from domainclust.evaluation.features import read_float_tiles
from domainclust.evaluation.lowshot.fewshot import judge, summarise
from domainclust.evaluation.lowshot.result import LowShotResult, Row, interval
from domainclust.evaluation.models import align_store, fresh_network, load_trained
from domainclust.evaluation.training import recompute_batchnorm
from domainclust.seeds import derive_seed
from domainclust.segmentation.baselines import BASELINES, fit_pixel_logistic, majority_class
from domainclust.segmentation.decoder import decoder_factory
from domainclust.segmentation.examples import (
    EXAMPLE_TILES,
    EXAMPLES_FILE,
    SegmentExamples,
    choose_example_tiles,
)
from domainclust.segmentation.metrics import confusion, scores
from domainclust.segmentation.training import (
    PROTOCOLS,
    SegmentSettings,
    predict_masks,
    select_and_train,
    tile_folds,
)

NETWORKS = ("random_init", "pretrained")
METHODS = (*BASELINES, *NETWORKS)
BASELINE_PROTOCOL = "none"  # the protocol column of the baselines: no network to train
POOL_TILES = 256  # unlabelled training tiles the frozen trunk's BatchNorm statistics come from
SHOT_TRIES = 200


def parse_segment_protocols(protocol: str) -> tuple[str, ...]:
    if protocol == "both":
        return PROTOCOLS
    if protocol not in PROTOCOLS:
        raise DomainclustError(f"unknown segmentation protocol '{protocol}'; choose frozen, "
                               "finetune or both")
    return (protocol,)


def class_masks(store: TileStore, *, min_pixels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(classes, (N, H, W) masks as indices into classes, -1 unlabelled) of every tile; a class
    with fewer than `min_pixels` labelled pixels in the store counts as unlabelled."""
    if not store.has_masks:
        raise DomainclustError(
            f"store {store.path} has no masks; `--task segment` needs a store ingested with "
            "masks (geotiff labels=..., ct/mri/rgb masks=...)")
    raw = store.read_masks(np.arange(store.n)).astype(np.int64)
    labelled = raw != store.mask_ignore
    classes, counts = np.unique(raw[labelled], return_counts=True)
    labelled &= np.isin(raw, classes[counts >= min_pixels])
    classes = classes[counts >= min_pixels]
    if len(classes) < 2:
        raise DomainclustError(f"store {store.path}: its masks hold {len(classes)} class(es); "
                               "segmentation needs at least two")
    return classes, np.where(labelled, np.searchsorted(classes, raw), -1)


def tile_majority(masks: np.ndarray, *, n_classes: int) -> np.ndarray:
    """(N,) the most frequent class of each mask, -1 for a mask with no labelled pixel."""
    out = np.full(len(masks), -1, dtype=np.int64)
    for i, m in enumerate(masks):
        v = m[m >= 0]
        if v.size:
            out[i] = int(np.bincount(v, minlength=n_classes).argmax())
    return out


def presence(masks: np.ndarray, *, n_classes: int) -> np.ndarray:
    """(N, n_classes) whether each class appears in each mask."""
    flat = masks.reshape(len(masks), -1)
    return np.stack([(flat == c).any(1) for c in range(n_classes)], axis=1)


def sample_shot_tiles(present: np.ndarray, pool: np.ndarray, *, shots: int,
                      rng: np.random.Generator) -> np.ndarray:
    """`shots` tiles of `pool` together showing every class: tiles holding the rarest classes
    not yet shown first, then tiles at random; refused when no draw can show every class."""
    missing = np.flatnonzero(~present[pool].any(0))
    if len(missing):
        raise DomainclustError(f"class(es) {missing.tolist()} appear in no training tile; "
                               "nothing can be learnt of them (a smaller --test-fraction?)")
    rarity = np.argsort(present[pool].sum(0), kind="stable")
    for _ in range(SHOT_TRIES):
        chosen: list[int] = []
        for c in rarity:
            if not chosen or not present[chosen, c].any():
                chosen.append(int(rng.choice(pool[present[pool, c]])))
        if len(chosen) > shots:
            continue
        rest = np.setdiff1d(pool, chosen)
        fill = rng.choice(rest, size=min(shots - len(chosen), len(rest)), replace=False)
        return np.sort(np.concatenate([np.asarray(chosen, np.int64), fill.astype(np.int64)]))
    raise DomainclustError(f"no draw of {shots} training tile(s) shows every class; raise "
                           "--shots to at least the number of classes")


def low_shot_segment(
    checkpoint: Path | str,
    store_path: Path | str,
    *,
    shots: list[int],
    repeats: int = 5,
    protocol: str = "frozen",
    settings: SegmentSettings | None = None,
    test_fraction: float = 0.2,
    max_test: int | None = None,
    split_by: str = "auto",
    seed: int = 0,
    split_path: Path | str | None = None,
    min_class_pixels: int = 0,
    examples: int = EXAMPLE_TILES,
    device: str = "auto",
    log: Callable[[str], None] = lambda _: None,
) -> SegmentResult:
    """Every method x protocol x shot count over `repeats` paired repeats, and the verdict.
    `min_class_pixels`: classes rarer than that in the store are scored as unlabelled;
    `examples`: seeded test tiles whose first-repeat predictions are kept (`result.examples`)."""
    settings = settings or SegmentSettings()
    protocols = parse_segment_protocols(protocol)
    if not shots or min(shots) < 1 or repeats < 1:
        raise DomainclustError("shots must be positive integers and repeats at least 1")
    limit_cpu_threads()
    dev = resolve_device(device)
    trained = load_trained(checkpoint, device=dev)
    store = align_store(trained.spec, TileStore(store_path), source=trained.source, log=log)
    classes, masks = class_masks(store, min_pixels=min_class_pixels)
    k = len(classes)
    names = [_class_name(store.mask_classes, int(c)) for c in classes]
    split = store_split(store, tile_majority(masks, n_classes=k), split_path=split_path,
                        test_fraction=test_fraction, seed=seed, split_by=split_by)
    rng = np.random.default_rng(derive_seed(seed, 1))
    test = split.test
    if max_test is not None and len(test) > max_test:
        test = np.sort(rng.choice(test, size=max_test, replace=False))
    pool = np.sort(rng.choice(split.train, size=min(POOL_TILES, len(split.train)), replace=False))
    present = presence(masks, n_classes=k)
    size, spec = trained.spec.tile_size, trained.spec
    x_test, y_test = read_float_tiles(store, test, tile_size=size), masks[test]
    x_pool = read_float_tiles(store, pool, tile_size=size)
    metric = "dice" if k == 2 else "miou"
    log(f"split: {split.describe()}; scoring {k} classes on {len(test)} test tiles ({metric})")
    shown = choose_example_tiles(y_test, n=examples,
                                 rng=np.random.default_rng(derive_seed(seed, 2)))
    kept = SegmentExamples(tiles=x_test[torch.as_tensor(shown)].numpy(), truth=y_test[shown],
                           indices=test[shown].tolist(), channels=list(spec.channels),
                           modality=store.modality, classes=names) if len(shown) else None

    values: dict[tuple[str, str, int, str], list[float]] = {}
    choices: dict[tuple[str, str, int], list[dict[str, Any]]] = {}

    def record(method: str, proto: str, s: int, pred: np.ndarray, choice: dict[str, Any], *,
               repeat: int) -> None:
        for name, value in scores(confusion(y_test, pred, n_classes=k), names=names).items():
            values.setdefault((method, proto, s, name), []).append(value)
        choices.setdefault((method, proto, s), []).append(choice)
        if kept is not None and repeat == kept.repeat:
            kept.add(method=method, protocol=proto, shots=s, masks=pred[shown])

    pretrained_frozen = frozen_trunk(trained.model, x_pool) if "frozen" in protocols else None
    for r in range(repeats):
        random_trunk = fresh_network(spec, n_outputs=1, seed=derive_seed(seed, r, 10**6),
                                     device=dev)
        random_frozen = frozen_trunk(random_trunk, x_pool) if "frozen" in protocols else None
        for s in shots:
            idx = sample_shot_tiles(present, split.train, shots=s,
                                    rng=np.random.default_rng(derive_seed(seed, r, s)))
            x, y = read_float_tiles(store, idx, tile_size=size), masks[idx]
            run_seed = derive_seed(seed, r, s, 1)
            if kept is not None and r == kept.repeat:
                kept.shot_tiles[s] = idx.tolist()
            record("majority", BASELINE_PROTOCOL, s, np.full_like(y_test, majority_class(y)), {},
                   repeat=r)
            folds = tile_folds(len(idx), folds=settings.folds, seed=run_seed)
            pixel, picked = fit_pixel_logistic(x, y, n_classes=k, folds=folds, seed=run_seed,
                                               balanced=settings.balance_classes)
            record("pixel_logistic", BASELINE_PROTOCOL, s, pixel.predict(x_test), picked,
                   repeat=r)
            for method in NETWORKS:
                for proto in protocols:
                    frozen = proto == "frozen"
                    if frozen:
                        base = pretrained_frozen if method == "pretrained" else random_frozen
                    else:
                        base = trained.model if method == "pretrained" else random_trunk

                    make_net = decoder_factory(base, frozen=frozen, n_classes=k,
                                               width=settings.decoder_width, device=dev,
                                               seed=run_seed)
                    net, picked = select_and_train(make_net, x, y, n_classes=k, frozen=frozen,
                                                   settings=settings, seed=run_seed)
                    record(method, proto, s, predict_masks(net, x_test), picked, repeat=r)
        log(f"repeat {r + 1}/{repeats}: " + ", ".join(
            f"{m}/{p} {s}-shot {100 * v[-1]:.1f}" for (m, p, s, name), v in values.items()
            if name == metric and len(v) == r + 1 and s == max(shots)))

    rows = [Row(method=m, protocol=p, shots=s, metric=name, **summarise(v), values=v,
                choices=choices[(m, p, s)])
            for (m, p, s, name), v in values.items()]
    rows.sort(key=lambda row: (row.shots, METHODS.index(row.method), row.protocol, row.metric))
    return SegmentResult(
        rows=rows,
        verdict=[judge(rows, shots=s, protocol=protocols[0], metric=metric) for s in shots],
        split=split.source, n_classes=k, n_test=len(test), checkpoint=str(trained.source),
        seed=seed,
        settings={"task": "segment", "metric": metric, "classes": names,
                  "class_values": [int(c) for c in classes], "protocols": list(protocols),
                  "segment": asdict(settings), "repeats": repeats, "shots": "tiles per repeat",
                  "min_class_pixels": min_class_pixels},
        examples=kept)


@dataclass
class SegmentResult(LowShotResult):
    """The low-shot result, plus the predictions kept on a few test tiles (not in the JSON)."""

    examples: SegmentExamples | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `segment.json` form: that of `LowShotResult` (the examples have their own file)."""
        return LowShotResult(**{f.name: getattr(self, f.name)
                                for f in fields(LowShotResult)}).to_dict()


def frozen_trunk(model: torch.nn.Module, x_pool: torch.Tensor) -> torch.nn.Module:
    """A copy of `model` with its BatchNorm statistics recomputed on unlabelled training tiles
    and no trainable weight: the frozen protocol's trunk (random init and pretrained alike)."""
    trunk = copy.deepcopy(model)
    features = _Features(trunk)
    recompute_batchnorm(features, x_pool)
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk.eval()


class _Features(torch.nn.Module):
    """The conv stages of a trunk as one forward (to recompute their BatchNorm statistics)."""

    def __init__(self, trunk: torch.nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.trunk.backbone.forward_stages(self.trunk.frontend(x))


def _class_name(names: list[str] | None, value: int) -> str:
    return names[value] if names and 0 <= value < len(names) and names[value] else str(value)


def segment_table(result: LowShotResult) -> str:
    """The result as a Markdown table (mIoU, Dice when binary, pixel accuracy) and verdicts."""
    metric = result.settings.get("metric", "miou")
    binary = metric == "dice"
    head = "| method | protocol | shots | mIoU |" + (" Dice |" if binary else "") + " pixel acc |"
    title = (f"low-shot segmentation on {result.n_test} test tiles, {result.n_classes} classes, "
             f"{result.rows[0].repeats} repeats, mean [95% CI]; split: {result.split}")
    lines = [title, head, "|---|---|---:|---:|" + ("---:|" if binary else "") + "---:|"]
    for r in result.rows:
        if r.metric != "miou":
            continue
        cells = [r] + ([result.row(r.method, r.protocol, r.shots, "dice")] if binary else [])
        cells.append(result.row(r.method, r.protocol, r.shots, "pixel_accuracy"))
        lines.append(f"| {r.method} | {r.protocol} | {r.shots} | " + " | ".join(
            f"{100 * c.mean:.1f} {interval(c.ci_low, c.ci_high, scale=100, fmt='.1f')}"
            for c in cells) + " |")
    for v in result.verdict:
        ci = interval(v.ci_low, v.ci_high, scale=100, fmt="+.1f")
        lines.append(f"verdict at {v.shots} shot tiles ({metric}): {v.result} ({v.method} vs "
                     f"{v.best_baseline}: {100 * v.difference:+.1f} points, 95% CI {ci})")
    return "\n".join(lines)


def write_segment(result: LowShotResult, out_dir: Path | str) -> dict[str, Path]:
    """segment.json and segment.csv in `out_dir`; with the result's examples also
    segment_examples.npz and segment_examples.html (the overlays and the table, one page)."""
    from domainclust.atomic import atomic_write_text
    from domainclust.evaluation.results import finetune_csv, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "segment.csv"
    atomic_write_text(csv_path, finetune_csv(result))
    paths = {"json": write_json(out / "segment.json", result.to_dict()), "csv": csv_path}
    examples = getattr(result, "examples", None)
    if examples is not None:
        from domainclust.report.segment import segment_page

        paths["examples"] = examples.save(out / EXAMPLES_FILE)
        paths["page"] = out / "segment_examples.html"
        atomic_write_text(paths["page"], segment_page(result, examples,
                                                      source=paths["json"]))
    return paths
