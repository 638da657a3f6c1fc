"""Fashion-MNIST: how low-shot accuracy of DeepCluster features grows with the unlabelled pool.

The 60 000 train and 10 000 t10k photos of Debian's `dataset-fashion-mnist` (28 px grey
photos of clothing, 10 balanced classes) are ingested once by the mnist adapter, which records
each photo's set. For every `--pool` size P the first P train photos, without their labels,
are the pretraining pool; a pool larger than `--subset` is pretrained on `subset_size` of them
per epoch. The last `--val` train photos are validation and in no pool; the t10k photos (a
seeded sample of `--max-test`) are the test photos. Every variant (the mnist recipe plus its
overrides) is pretrained on the pool and scored on validation at `--select-shots`; the one with
the best mean pretrained top-1 there is scored once on test (`lowshot.select_then_test`), with
shots drawn from the pool. Both stages share the pool, so the test stage resumes the selection
run's finished checkpoint instead of pretraining again. Variants are ranked by the first of
`--protocols`; the chosen one is then scored by each other protocol (e.g. `knn`: the shots as
a cosine k-NN bank) on validation first, then once on test. With `--knn-bank N` the chosen
network is also scored by the demo's 20-NN rows against random init and raw pixels: the
labelled bank is the first N train photos (in every pool), the layer chosen on a validation
part of the bank.

    python benchmarks/lowshot_fashion.py --out runs/fashion --pool 5000,20000,55000 \
        --common 'epochs=10' --variant 'recipe:' --variant 'k50:k=50'

Finished runs are kept and not run again; the tables also go to OUT/summary.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from lowshot import (
    add_driver_arguments,
    parse_variants,
    read_result,
    run_variant,
    select_then_test,
    summary,
)

from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore, write_subset
from domainclust.demo import evaluate_rows
from domainclust.errors import DomainclustError
from domainclust.evaluation.data import Split, save_split
from domainclust.evaluation.inputs import open_inputs
from domainclust.evaluation.models import fresh_network
from domainclust.rundir import RunDir

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mnist.yaml"
DATA = Path("/usr/share/datasets/fashion-mnist")


def prepare(out: Path, *, data: Path, val: int, max_test: int | None, seed: int
            ) -> tuple[TileStore, Path, np.ndarray, np.ndarray, np.ndarray]:
    """The store, its labels file, and the train, validation and test photo indices."""
    if not (data / "train-images-idx3-ubyte.gz").is_file():
        raise DomainclustError(f"no Fashion-MNIST in {data}: apt-get install "
                               "dataset-fashion-mnist, or give its folder with --data")
    out.mkdir(parents=True, exist_ok=True)
    get_modality("mnist").ingest([data], out / "fashion.zarr", options={}, workers=1,
                                 progress=False)
    store = TileStore(out / "fashion.zarr")
    sets = np.asarray(store.meta("set"))
    names = store.attrs["provenance"]["sets"]
    train, test = (np.flatnonzero(sets == names.index(n)) for n in ("train", "t10k"))
    if max_test is not None and len(test) > max_test:
        test = np.sort(np.random.default_rng(seed).choice(test, size=max_test, replace=False))
    labels = out / "labels.npy"
    np.save(labels, np.asarray(store.labels))
    return store, labels, train[:-val], train[-val:], test


def pool_stages(store: TileStore, photos: np.ndarray, *, val: np.ndarray, test: np.ndarray,
                out: Path) -> dict[str, tuple[Path, Path]]:
    """One pool of `photos` for both stages: scored on validation (`select`) and on test."""
    pool = write_subset(store, photos, out / "pool.zarr")
    stages = {}
    for stage, held in (("select", val), ("test", test)):
        split = Split(train=photos, test=held, source=f"first {len(photos)} train photos / "
                      f"{len(held)} {'validation' if stage == 'select' else 't10k'} photos")
        save_split(out / f"{stage}-split.npz", split)
        stages[stage] = (out / f"{stage}-split.npz", Path(pool.path))
        print(f"{stage}: {split.describe()}", flush=True)
    return stages


def share_checkpoints(out: Path, names: list[str]) -> None:
    """Point each variant's test-stage checkpoints at its selection run (same pool, same
    config), so the chosen variant is scored on test without being pretrained twice."""
    for name in names:
        link = out / "test" / name / "checkpoints"
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("..") / ".." / "select" / name / "checkpoints")


def knn_rows(run: Path, store: TileStore, *, bank: np.ndarray, test: np.ndarray, seed: int
             ) -> dict[str, dict]:
    """The demo's 20-NN rows (raw pixels, random init, pretrained) on the test photos."""
    inputs = open_inputs(run, store.path, labels_path=None, device="auto")
    random_init = fresh_network(inputs.trained.spec, n_outputs=10, seed=seed,
                                device=inputs.device)
    return evaluate_rows({"random_init": random_init, "pretrained": inputs.trained.model},
                         inputs.store, split=Split(train=bank, test=test, source="fixed"),
                         seed=seed, device=inputs.device, progress=False)


def other_protocol(protocol: str, name: str, overrides: list[str], *, args: argparse.Namespace,
                   stages: dict[str, tuple[Path, Path]], out: Path, store: Path, labels: Path
                   ) -> dict[str, dict]:
    """The chosen variant scored by `protocol`: on validation first, then once on test (its
    pretraining is resumed from the selection run, not repeated)."""
    return {stage: run_variant(name, overrides, recipe=args.recipe, run=out / stage / name,
                               pool=pool, store=store, labels=labels, split=split,
                               repeats=args.repeats, protocol=protocol,
                               shots=args.select_shots if stage == "select" else args.shots)
            for stage, (split, pool) in stages.items()}


def report(pool: int, *, subset: int | None, chosen: str, history: list[dict],
           results: dict[str, dict[str, dict]], knn: dict[str, dict], n_bank: int) -> str:
    """One pool size in markdown: the chosen variant's low-shot rows per protocol (validation,
    then test) and the 20-NN rows on test."""
    regime = f", {subset} per epoch" if subset else ""
    seconds = np.mean([sum(r["seconds"].values()) for r in history])
    lines = [f"### pool of {pool} train photos{regime}: {chosen}, {len(history)} epochs, "
             f"{seconds:.1f} s/epoch"]
    for protocol, stages in results.items():
        for stage, result in stages.items():
            where = "validation" if stage == "select" else "test"
            lines += ["", f"{protocol} low-shot top-1 (%) on {result['n_test']} {where} photos, "
                      f"{result['settings']['repeats']} repeats; verdict: difference [95% CI]",
                      "", summary({chosen: result})]
    if knn:
        lines += ["", f"20-NN on the same test photos, bank of {n_bank} labelled train photos, "
                  "layer chosen on a validation part of the bank", "",
                  "| features | layer | 20-NN top-1 |", "|---|---|---:|",
                  *(f"| {n} | {r['layer']} | {100 * r['knn_accuracy']:.1f}% |"
                    for n, r in knn.items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_driver_arguments(ap, recipe="mnist", out="runs/fashion", protocol=False)
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the IDX files")
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--pool", default="5000,20000,55000", help="pretraining pool sizes")
    ap.add_argument("--subset", type=int, default=20000,
                    help="larger pools are pretrained on this many photos per epoch")
    ap.add_argument("--val", type=int, default=5000, help="last train photos, in no pool")
    ap.add_argument("--max-test", type=int, default=None, help="sample of the t10k photos")
    ap.add_argument("--protocols", default="linear,knn",
                    help="low-shot protocols; the first ranks the variants")
    ap.add_argument("--knn-bank", type=int, default=5000,
                    help="labelled photos of the 20-NN rows (0: no 20-NN rows)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    first, *others = args.protocols.split(",")
    store, labels, train, val, test = prepare(args.out, data=args.data, val=args.val,
                                              max_test=args.max_test, seed=args.seed)
    sections = []
    for asked in sorted({int(p) for p in args.pool.split(",")}):
        pool = min(asked, len(train))
        if pool < asked:
            print(f"pool {asked} capped at {pool}: the last {args.val} train photos validate")
        subset = args.subset if pool > args.subset else None
        common = f"{args.common};subset_size={subset}" if subset else args.common
        variants = parse_variants(args.variant, common=common)
        out = args.out / f"pool-{pool}"
        print(f"## pool {pool}: {list(variants)}", flush=True)
        stages = pool_stages(store, train[:pool], val=val, test=test, out=out)
        share_checkpoints(out, list(variants))
        chosen, result = select_then_test(
            variants, stages=stages, recipe=args.recipe, out=out, store=Path(store.path),
            labels=labels, repeats=args.repeats, shots=args.shots, rank_shots=args.select_shots,
            protocol=first)
        results = {first: {"select": read_result(out / "select" / chosen, first),
                           "test": result}}
        for protocol in others:
            results[protocol] = other_protocol(protocol, chosen, variants[chosen], args=args,
                                               stages=stages, out=out, store=Path(store.path),
                                               labels=labels)
            print(summary({f"{chosen}/{protocol}": results[protocol]["test"]}), flush=True)
        run = out / "select" / chosen
        n_bank = min(args.knn_bank, pool)
        knn = knn_rows(run, store, bank=train[:n_bank], test=test, seed=args.seed) if n_bank else {}
        sections.append(report(pool, subset=subset, chosen=chosen,
                               history=RunDir(run).read_metrics(), results=results, knn=knn,
                               n_bank=n_bank))
        print(sections[-1], flush=True)
    (args.out / "summary.md").write_text("\n\n".join(sections) + "\n")
    print(f"\n{' '.join(sys.argv)}\n\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
