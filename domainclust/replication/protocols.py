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

import torch

from domainclust.atomic import atomic_write
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
