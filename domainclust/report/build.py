"""`domainclust report RUN_DIR`: read a run (finished or in progress), draw it, write the page.

A consistent snapshot comes from the checkpoint: its history, its weights and the assignment
file of its epoch. Parts that need something missing (the store, labels, an evaluation) are
left out with a note on the page, so a report is always written for any run with one epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domainclust.atomic import atomic_write, atomic_write_text
from domainclust.data.store import TileStore
from domainclust.device import resolve_device
from domainclust.errors import DomainclustError
from domainclust.evaluation.lowshot.result import load_lowshot
from domainclust.networks.export import spec_from_dict
from domainclust.networks.model import ModelSpec, Trunk
from domainclust.report.curves import cluster_size_figure, metrics_figure
from domainclust.report.figures import Figure
from domainclust.report.filters import filters_figure
from domainclust.report.lowshot import lowshot_figure
from domainclust.report.montage import choose_clusters, mean_purity, montage_figure
from domainclust.report.neighbours import embed, label_agreement, nearest, neighbours_figure
from domainclust.report.page import (
    Section,
    figure_section,
    lowshot_tables,
    note_section,
    render_page,
)
from domainclust.report.rendering import Renderer, build_renderer
from domainclust.report.segment import SEGMENT_FILE, load_segment, segment_section
from domainclust.rundir import RunDir

RENDER_SAMPLE = 256  # tiles that set the display ranges (percentiles)


@dataclass(frozen=True)
class ReportSettings:
    """What the report draws; everything random is drawn from `seed`."""

    composite: tuple[str, ...] | None = None  # 1 or 3 channel names; None: modality default
    pool: int = 500  # tiles embedded for the neighbour queries
    queries: int = 6
    neighbours: int = 6
    largest: int = 8  # clusters shown by size
    random: int = 8  # clusters shown at random
    per_cluster: int = 12
    batch_size: int = 256
    seed: int = 0


@dataclass
class ReportResult:
    page: Path
    figures: dict[str, Path]
    seconds: float
    epoch_seconds: float | None
    notes: list[str] = field(default_factory=list)


def write_report(
    run_dir: Path | str,
    *,
    store: Path | str | None = None,
    out: Path | str | None = None,
    settings: ReportSettings = ReportSettings(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ReportResult:
    """Write `out/index.html` (self-contained) and one PNG per figure; default out: RUN/report."""
    start = clock = time.perf_counter()
    laps: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        laps[name] = round(now - clock, 3)
        clock = now

    run = RunDir(run_dir)
    config = run.load_config()
    state = run.load_checkpoint(map_location="cpu")
    if state is None:
        raise DomainclustError(
            f"{run.path} has no finished epoch yet ({run.checkpoint_path} is missing); "
            "make the report once the first epoch is done"
        )
    epoch, history = int(state["epoch"]), list(state["history"])
    spec = spec_from_dict(state["spec"], source=run.checkpoint_path)
    device = resolve_device("auto")
    trained = _trunk(spec, state["model"]).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the run's own starting point (same seed, same spec)
        initial = Trunk(spec).to(device)
    lap("load")

    figures: list[Figure] = [metrics_figure(history)]
    notes: list[str] = []
    assignment = run.load_assignments(epoch)
    if assignment is None:
        notes.append(f"{run.assignment_path(epoch)} is missing: no cluster figures")
    else:
        figures.append(cluster_size_figure(assignment[1], n_clusters=int(state["n_clusters"]),
                                           epoch=epoch))
    lap("curves")

    tile_store, problem = _open_store(store or config.data.store, spec)
    if problem:
        notes.append(problem + ": no tiles, montage or neighbours")
    if tile_store is None:
        attrs = {"modality": state.get("store", {}).get("modality", ""), "channels": spec.channels}
        renderer = build_renderer(attrs, np.zeros((1, len(spec.channels), 1, 1), np.float32),
                                  composite=settings.composite)
    else:
        rng = np.random.default_rng(settings.seed)
        pool = np.sort(rng.choice(tile_store.n, size=min(settings.pool, tile_store.n),
                                  replace=False))
        renderer = build_renderer(tile_store.attrs, _floats(tile_store, pool[:RENDER_SAMPLE]),
                                  composite=settings.composite)
        if assignment is not None:
            figures.append(_montage(tile_store, assignment, renderer, settings))
            lap("montage")
    figures.append(filters_figure(trained, colour=renderer.colour, channel_names=spec.channels,
                                  epoch=epoch))
    lap("filters")
    if tile_store is not None:
        figures.append(_neighbours(tile_store, pool, initial, trained, renderer, settings,
                                   device=device, progress=progress))
        lap("neighbours")

    lowshot_path = run.path / "eval" / "finetune.json"
    try:
        lowshot = load_lowshot(lowshot_path)
    except DomainclustError as exc:
        lowshot = None
        notes.append(f"low-shot results not shown: {exc}")
    segment_path = run.path / "eval" / SEGMENT_FILE
    segment, examples, missing = load_segment(segment_path)
    notes += missing
    sections = [note_section("Left out", n) for n in notes] + [figure_section(f) for f in figures]
    if lowshot is not None:
        figure = lowshot_figure(lowshot)
        figures.append(figure)
        sections.append(Section("Low-shot evaluation",
                                figure_section(figure).body + "\n"
                                + lowshot_tables(lowshot, source=lowshot_path)))
        lap("lowshot")
    if segment is not None:
        sections.append(segment_section(segment, examples, source=segment_path))
        lap("segment")

    out_dir = Path(out) if out else run.path / "report"
    paths = {}
    for f in figures:
        paths[f.name] = out_dir / f"{f.name}.png"
        atomic_write(paths[f.name], lambda fh, png=f.png: fh.write(png))
    seconds = time.perf_counter() - start
    epoch_seconds = _epoch_seconds(history)
    facts = _facts(config, spec, state, history, renderer, tile_store, seconds, epoch_seconds)
    page = out_dir / "index.html"
    atomic_write_text(page, render_page(title=f"DeepCluster run {run.path.resolve().name}",
                                        facts=facts, sections=sections))
    atomic_write_text(out_dir / "report.json", json.dumps({
        "epoch": epoch, "seconds": round(seconds, 3), "stages": laps,
        "epoch_seconds": epoch_seconds,
        "figures": sorted(paths), "notes": notes}, indent=2) + "\n")
    log(f"report: {page} ({seconds:.1f} s" + (f"; an epoch took {epoch_seconds:.1f} s)"
                                              if epoch_seconds else ")"))
    return ReportResult(page=page, figures=paths, seconds=seconds, epoch_seconds=epoch_seconds,
                        notes=notes)


def report_after_pretrain(
    run_dir: Path | str, *, progress: bool, log: Callable[[str], None]
) -> ReportResult | None:
    """The report at the end of `pretrain`: its failure is told, never fails the finished run."""
    try:
        return write_report(run_dir, progress=progress, log=log)
    except DomainclustError as exc:
        log(f"report not written: {exc}; run `domainclust report {run_dir}` once fixed")
        return None


def _trunk(spec: ModelSpec, weights: dict[str, torch.Tensor]) -> Trunk:
    trunk = Trunk(spec)
    trunk.load_state_dict({k: v for k, v in weights.items() if not k.startswith("top.")})
    return trunk


def _open_store(path: Path | str | None, spec: ModelSpec) -> tuple[TileStore | None, str]:
    if not path:
        return None, "the run's config names no store (pass --store)"
    try:
        store = TileStore(path)
    except DomainclustError as exc:
        return None, f"{exc} (pass --store)"
    if store.channels != spec.channels:
        return None, (f"store {path} has channels {list(store.channels)}, the checkpoint "
                      f"{list(spec.channels)}")
    return store, ""


def _floats(store: TileStore, indices: np.ndarray) -> np.ndarray:
    return store.to_float(torch.from_numpy(store.read(indices))).numpy()


def _montage(
    store: TileStore, assignment: tuple[np.ndarray, np.ndarray], renderer: Renderer,
    settings: ReportSettings,
) -> Figure:
    indices, labels = assignment
    truth = store.labels[indices] if store.has_labels else None
    samples = choose_clusters(labels, truth=truth, n_largest=settings.largest,
                              n_random=settings.random, per_cluster=settings.per_cluster,
                              seed=settings.seed)
    shown = np.unique(indices[np.concatenate([s.members for s in samples])])
    images = dict(zip(shown.tolist(), renderer.render(_floats(store, shown))))
    caption = renderer.caption + "."
    if truth is not None:
        caption += (f" Purity: share of a cluster's labelled tiles that carry its majority "
                    f"label; over all clusters {mean_purity(labels, truth):.2f}.")
    classes = (store.attrs.get("provenance") or {}).get("classes")
    return montage_figure(samples, images, positions=indices, class_names=classes,
                          caption=caption)


def _neighbours(
    store: TileStore, pool: np.ndarray, initial: Trunk, trained: Trunk, renderer: Renderer,
    settings: ReportSettings, *, device: torch.device, progress: bool,
) -> Figure:
    tiles = store.read(pool)
    before = embed(initial, tiles, store=store, batch_size=settings.batch_size, device=device,
                   progress=progress, desc="report: random init")
    after = embed(trained, tiles, store=store, batch_size=settings.batch_size, device=device,
                  progress=progress, desc="report: checkpoint")
    rng = np.random.default_rng([settings.seed, 1])
    queries = np.sort(rng.choice(len(pool), size=min(settings.queries, len(pool)), replace=False))
    k = min(settings.neighbours, len(pool) - 1)
    nn_before, nn_after = nearest(before, queries, k=k), nearest(after, queries, k=k)
    picture = renderer.render(store.to_float(torch.from_numpy(
        tiles[np.concatenate([queries, nn_before.ravel(), nn_after.ravel()])])).numpy())
    q = len(queries)
    caption = (f"{q} seeded queries among {len(pool)} tiles; cosine similarity of the clustering "
               "feature. Before: the network the run started from (its seed, its spec).")
    if store.has_labels:
        truth = store.labels[pool]
        caption += (f" Share of {k} neighbours with the query's label, over all {len(pool)} tiles: "
                    f"{label_agreement(before, truth, k=k):.2f} before, "
                    f"{label_agreement(after, truth, k=k):.2f} after.")
    return neighbours_figure(picture[:q], picture[q:q + q * k].reshape(q, k, *picture.shape[1:]),
                             picture[q + q * k:].reshape(q, k, *picture.shape[1:]),
                             caption=caption)


def _epoch_seconds(history: list[dict[str, Any]]) -> float | None:
    times = [sum(r["seconds"].values()) for r in history if r.get("seconds")]
    return round(float(np.mean(times)), 3) if times else None


def _facts(
    config: Any, spec: ModelSpec, state: dict[str, Any], history: list[dict[str, Any]],
    renderer: Renderer, store: TileStore | None, seconds: float, epoch_seconds: float | None,
) -> list[str]:
    last = history[-1] if history else {}
    done = int(state["epoch"]) + 1
    facts = [
        f"epoch {done} of {config.train.epochs}"
        + (" (in progress)" if done < config.train.epochs else " (finished)"),
        (f"{spec.arch}, front-end {spec.frontend}, {spec.tile_size} px, "
         f"channels {', '.join(spec.channels)}"),
        (f"{config.cluster.method}, {state['n_clusters']} clusters, "
         f"{last.get('n_tiles', '?')} tiles per epoch"),
    ]
    if store is not None:
        facts.append(f"store {Path(store.path).name}: {store.modality}, {store.n} tiles"
                     + (", labelled" if store.has_labels else ""))
    if renderer.caption:
        facts.append(f"tiles shown: {renderer.caption}")
    cost = f"this report took {seconds:.1f} s"
    if epoch_seconds:
        cost += f", an epoch of this run {epoch_seconds:.1f} s ({seconds / epoch_seconds:.2f}×)"
    facts.append(cost)
    return facts
