"""Evaluation, fine-tuning and export commands, registered on the main app.

Each command parses its options and calls one function of `domainclust.evaluation` or
`domainclust.networks.export`; tables go to stdout, results to `--out` as JSON.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from domainclust.errors import DomainclustError

CHECKPOINT = typer.Option(..., "--checkpoint", help="checkpoint file, run dir or exported backbone")
STORE = typer.Option(..., "--store", help="labelled TileStore")
SPLIT = typer.Option(None, "--split", help=".npz with 'train' and 'test' tile indices")
SPLIT_BY = typer.Option("auto", "--split-by", help="auto | source | blocks | random: how train "
                        "and test are kept apart")
LABELS = typer.Option(None, "--labels", help="labels file (.npy or one per line) instead of the "
                      "store's labels")
TEST_FRACTION = typer.Option(0.2, "--test-fraction", help="held-out share per class (seeded)")
SEED = typer.Option(0, "--seed")
DEVICE = typer.Option("auto", "--device")
OUT = typer.Option(None, "--out", help="folder for the JSON result")
QUIET = typer.Option(False, "--quiet", help="no progress bars")


def parse_ints(text: str, *, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DomainclustError(f"{what} must be comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise DomainclustError(f"{what} must be positive integers, got '{text}'")
    return sorted(set(values))


def split_names(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def save_json(out: Path | None, name: str, values: Any) -> None:
    if out is None:
        return
    from domainclust.evaluation.results import write_json

    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"wrote {write_json(out / name, values)}")


def default_out(checkpoint: Path) -> Path:
    """RUN/eval for a checkpoint of a run dir, else ./domainclust-eval."""
    from domainclust.networks.export import checkpoint_path

    if checkpoint.is_dir() and (checkpoint / "card.json").exists():
        return Path("domainclust-eval")
    _, run = checkpoint_path(checkpoint)
    return run / "eval" if run is not None else Path("domainclust-eval")


eval_app = typer.Typer(no_args_is_help=True, help="Evaluate pretrained features on labelled data.")


@eval_app.command("knn")
def knn(checkpoint: Path = CHECKPOINT, store: Path = STORE,
        layer: list[str] = typer.Option([], "--layer", help="features (fc7, default) or a conv "
                                        "stage (conv1..conv5, layer1..); repeatable"),
        k: int = typer.Option(20, "--k"), temperature: float = typer.Option(0.07, "--temperature"),
        test_fraction: float = TEST_FRACTION, seed: int = SEED, split: Path | None = SPLIT,
        split_by: str = SPLIT_BY, labels: Path | None = LABELS, device: str = DEVICE,
        out: Path | None = OUT, quiet: bool = QUIET) -> None:
    """Weighted k-NN accuracy (cosine) of frozen features."""
    from domainclust.evaluation.probes.knn import evaluate_knn

    results = evaluate_knn(checkpoint, store, layers=split_names(layer), k=k,
                           temperature=temperature, test_fraction=test_fraction, seed=seed,
                           split_path=split, split_by=split_by, labels_path=labels,
                           device=device, progress=not quiet)
    for r in results:
        typer.echo(r.summary())
    save_json(out, "knn.json", [r.to_dict() for r in results])


@eval_app.command("linear")
def linear(checkpoint: Path = CHECKPOINT, store: Path = STORE,
           layer: list[str] = typer.Option([], "--layer", help="default: every conv stage"),
           random_init: bool = typer.Option(False, "--random-init",
                                            help="probe the same architecture at random init"),
           test_fraction: float = TEST_FRACTION, seed: int = SEED, split: Path | None = SPLIT,
           split_by: str = SPLIT_BY, labels: Path | None = LABELS, device: str = DEVICE,
           out: Path | None = OUT, quiet: bool = QUIET) -> None:
    """Linear probe top-1 on each frozen conv layer (pooled to ~9-10k dims)."""
    from domainclust.evaluation.probes.linear import evaluate_linear

    result = evaluate_linear(checkpoint, store, layers=split_names(layer),
                             test_fraction=test_fraction, seed=seed, split_path=split,
                             split_by=split_by, labels_path=labels, device=device,
                             random_init=random_init, progress=not quiet)
    typer.echo(result.table())
    save_json(out, "linear.json", result.to_dict())


@eval_app.command("clusters")
def clusters(checkpoint: Path = CHECKPOINT, store: Path = STORE,
             pca_dim: int | None = typer.Option(None, "--pca-dim",
                                                   help="default: the run's pca_dim, else 256"),
             neighbours: int = typer.Option(10, "--neighbours"),
             max_tiles: int | None = typer.Option(None, "--max-tiles",
                                                  help="use a seeded sample of labelled tiles"),
             seed: int = SEED, labels: Path | None = LABELS, device: str = DEVICE,
             out: Path | None = OUT, quiet: bool = QUIET) -> None:
    """NMI of clusters to labels and the ratio of intra-class edges in the 10-NN graph."""
    from domainclust.evaluation.probes.clusters import evaluate_clusters

    result = evaluate_clusters(checkpoint, store, pca_dim=pca_dim, neighbours=neighbours,
                               seed=seed, labels_path=labels, max_tiles=max_tiles, device=device,
                               progress=not quiet)
    typer.echo(result.table())
    save_json(out, "clusters.json", result.to_dict())


@eval_app.command("voc")
def voc(checkpoint: Path = CHECKPOINT,
        voc_root: Path = typer.Option(..., "--voc-root", help="VOC2007 folder (Annotations, ...)"),
        protocol: str = typer.Option("fc6-8", "--protocol", help="fc6-8 | all"),
        train_set: str = typer.Option("trainval", "--train-set"),
        test_set: str = typer.Option("test", "--test-set"),
        steps: int = typer.Option(2000, "--steps"), lr: float = typer.Option(0.01, "--lr"),
        batch_size: int = typer.Option(32, "--batch-size"),
        max_images: int | None = typer.Option(None, "--max-images",
                                              help="only the first N images of each set"),
        seed: int = SEED, device: str = DEVICE, out: Path | None = OUT) -> None:
    """PASCAL VOC 2007 multi-label classification (11-point mAP, difficult ignored)."""
    from domainclust.evaluation.voc.images import evaluate_voc
    from domainclust.evaluation.voc.protocols import VocSettings

    result = evaluate_voc(checkpoint, voc_root, protocol=protocol, train_set=train_set,
                          test_set=test_set, max_images=max_images, seed=seed, device=device,
                          settings=VocSettings(steps=steps, lr=lr, batch_size=batch_size),
                          log=typer.echo)
    typer.echo(result.table())
    save_json(out, "voc.json", result.to_dict())


def finetune(checkpoint: Path = CHECKPOINT, store: Path = STORE,
             shots: str = typer.Option("1,5,10", "--shots", help="labelled tiles per class"),
             repeats: int = typer.Option(10, "--repeats", help="fresh shots (and random init) "
                                         "per repeat; mean and 95% CI over repeats"),
             task: str = typer.Option("classify", "--task", help="classify (a label per tile) "
                                      "| segment (a class per pixel: a store with masks)"),
             protocol: str | None = typer.Option(None, "--protocol",
                                                 help="classify: linear (default; frozen "
                                                 "features + logistic regression) | "
                                                 "linear-gap (the same, each conv stage "
                                                 "averaged over the tile) | knn "
                                                 "(frozen features, the shots as a cosine "
                                                 "k-NN bank) | finetune (all layers) | both "
                                                 "(linear + finetune); segment: frozen "
                                                 "(default; decoder only) | finetune | both"),
             split_by: str = SPLIT_BY,
             max_test: int | None = typer.Option(None, "--max-test", help="score on at most "
                                                 "this many held-out tiles (seeded)"),
             steps: str | None = typer.Option(None, "--steps", help="segment: candidate "
                                              "training lengths (default 50,100,200)"),
             min_class_pixels: int = typer.Option(0, "--min-class-pixels", help="segment: "
                                                  "classes rarer than this count as unlabelled"),
             balance_classes: bool = typer.Option(False, "--balance-classes", help="segment: "
                                                  "weight each class by the inverse of its "
                                                  "share of the shots' labelled pixels (networks "
                                                  "and pixel baseline; for rare classes such as "
                                                  "small lesions)"),
             test_fraction: float = TEST_FRACTION, seed: int = SEED,
             split: Path | None = SPLIT, labels: Path | None = LABELS,
             device: str = DEVICE,
             out: Path | None = typer.Option(None, "--out", help="default: RUN/eval")) -> None:
    """Low-shot accuracy: pretrained vs raw pixels, channel statistics and random init, with
    the verdict (JSON, CSV and a PNG plot); with --task segment, mIoU/Dice of a decoder on the
    trunk vs majority, per-pixel logistic regression and random init (segment.json)."""
    from domainclust.evaluation.lowshot.fewshot import low_shot
    from domainclust.evaluation.results import write_finetune

    if task == "segment":
        from domainclust.segmentation.protocol import low_shot_segment, segment_table, write_segment

        if labels is not None:
            raise DomainclustError("--labels gives a label per tile; --task segment reads the "
                                   "store's masks")
        from domainclust.segmentation.training import SegmentSettings

        settings = SegmentSettings(balance_classes=balance_classes)
        if steps is not None:
            lengths = tuple(parse_ints(steps, what="--steps"))
            settings = replace(settings, steps=lengths,
                               default_steps=lengths[len(lengths) // 2])
        seg = low_shot_segment(checkpoint, store, shots=parse_ints(shots, what="--shots"),
                               repeats=repeats, protocol=protocol or "frozen", settings=settings,
                               min_class_pixels=min_class_pixels,
                               test_fraction=test_fraction, max_test=max_test, split_by=split_by,
                               seed=seed, split_path=split, device=device, log=typer.echo)
        for kind, path in write_segment(seg, out or default_out(checkpoint)).items():
            typer.echo(f"wrote {kind}: {path}")
        typer.echo(segment_table(seg))
        return
    if task != "classify":
        raise DomainclustError(f"unknown --task '{task}'; choose classify or segment")
    if balance_classes or min_class_pixels or steps is not None:
        raise DomainclustError("--balance-classes, --min-class-pixels and --steps are options "
                               "of --task segment")
    result = low_shot(checkpoint, store, shots=parse_ints(shots, what="--shots"), repeats=repeats,
                      protocol=protocol or "linear", test_fraction=test_fraction, max_test=max_test,
                      split_by=split_by, seed=seed, split_path=split, labels_path=labels,
                      device=device, log=typer.echo)
    for kind, path in write_finetune(result, out or default_out(checkpoint)).items():
        typer.echo(f"wrote {kind}: {path}")
    typer.echo(result.table())


def export(checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint file or run dir"),
           out: Path = typer.Option(..., "--out", help="folder for backbone + card"),
           store: Path | None = typer.Option(None, "--store", help="the training store, if it "
                                                "moved since training (for its normalisation)")) -> None:
    """Export the pretrained backbone (safetensors) with a JSON card."""
    from domainclust.networks.export import export_backbone

    card = export_backbone(checkpoint, out, store_path=store)
    norm = "known" if card["input"]["normalisation"]["known"] else "unknown (store gone)"
    typer.echo(f"exported {card['architecture']} ({card['input']['n_channels']} channel(s) "
               f"{card['input']['channels']}, {card['input']['tile_size']} px, front-end "
               f"{card['input']['frontend']}, normalisation {norm}) to {out}")
    typer.echo(f"load it with: domainclust.load_backbone({str(out)!r})")


def register(app: typer.Typer) -> None:
    """Add the `eval` sub-app and the `finetune` and `export` commands to `app`."""
    app.add_typer(eval_app, name="eval")
    app.command("finetune")(finetune)
    app.command("export")(export)
