"""Which feature space suits low-shot cosine k-NN: every layer of a pretrained network and of a
random one, standardised as the `knn` protocol does, against the clustering space itself (the
clustering feature whitened by the engine's own descriptors, as DeepCluster clusters it), on a
validation split.

    python benchmarks/knn_spaces.py --run runs/fashion/pool-55000/select/recipe \
        --store runs/fashion/fashion.zarr --split runs/fashion/pool-55000/select-split.npz \
        --labels runs/fashion/labels.npy

Per repeat the shots are drawn afresh (the same for both networks, a new random network each
time); k is chosen by leave-one-out on the shots, as in `finetune --protocol knn`. The
whitening is fitted on `--pca-tiles` unlabelled training tiles, by each network on its own
features. Prints the mean top-1 per space and the paired difference with its 95 % CI.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from domainclust.data.store import TileStore
from domainclust.engine.descriptors import compute_descriptors
from domainclust.evaluation.data import load_split, sample_shots
from domainclust.evaluation.features import FEATURES, extract_layers, layer_label, layer_names
from domainclust.evaluation.inputs import open_inputs
from domainclust.evaluation.lowshot.fewshot import POOL_TILES
from domainclust.evaluation.lowshot.frozen import Standardiser
from domainclust.evaluation.models import fresh_network
from domainclust.evaluation.probes.knn import choose_neighbours, knn_predict
from domainclust.evaluation.stats import mean_ci
from domainclust.seeds import derive_seed

WHITE = "whitened"  # shown as "whitened fc7" (AlexNet/VGG) or "whitened pool" (ResNet)


def spaces(model: torch.nn.Module, store: TileStore, *, pool: np.ndarray, pca_dim: int
           ) -> tuple[dict[str, tuple[str, Callable]], list[str]]:
    """{space: fitted map from raw layer features}, and the layers they read."""
    layers = list(layer_names(model))
    raw = extract_layers(model, store, indices=pool, layers=layers)
    maps = {name: (name, Standardiser.fit(raw[name][:POOL_TILES])) for name in layers}
    _, whitening = compute_descriptors([torch.from_numpy(raw[FEATURES])], pca_dim=pca_dim)
    maps[WHITE] = (FEATURES, lambda x: whitening(torch.from_numpy(x)).numpy())
    return maps, layers


def score(model: torch.nn.Module, store: TileStore, maps: dict[str, tuple[str, Callable]],
          layers: list[str], *, shots: np.ndarray, y: np.ndarray,
          test_raw: dict[str, np.ndarray], y_test: np.ndarray) -> dict[str, float]:
    """Top-1 of every space on one draw of shots."""
    shot_raw = extract_layers(model, store, indices=shots, layers=layers)
    out = {}
    for space, (layer, fitted) in maps.items():
        x, xt = fitted(shot_raw[layer]), fitted(test_raw[layer])
        k = choose_neighbours({space: x}, y, default_layer=space).k
        out[space] = float((knn_predict(x, y, xt, k=k) == y_test).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="pretraining run (or checkpoint)")
    ap.add_argument("--store", type=Path, required=True, help="labelled store")
    ap.add_argument("--split", type=Path, required=True, help="train / validation split (.npz)")
    ap.add_argument("--labels", type=Path, default=None)
    ap.add_argument("--shots", default="5,10")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--max-test", type=int, default=2000, help="seeded sample of validation tiles")
    ap.add_argument("--pca-tiles", type=int, default=5000,
                    help="unlabelled training tiles the whitening is fitted on")
    ap.add_argument("--pca-dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    inputs = open_inputs(args.run, args.store, labels_path=args.labels, device="auto")
    store, labels, spec, dev = inputs.store, inputs.labels, inputs.trained.spec, inputs.device
    split = load_split(args.split, labels=labels)
    rng = np.random.default_rng(derive_seed(args.seed, 1))
    test = np.sort(rng.choice(split.test, min(args.max_test, len(split.test)), replace=False))
    pool = np.sort(rng.choice(split.train, min(args.pca_tiles, len(split.train)), replace=False))
    classes = np.unique(labels[labels >= 0])
    y_test = np.searchsorted(classes, labels[test])
    shot_counts = [int(s) for s in args.shots.split(",")]

    def fitted(model: torch.nn.Module) -> tuple:
        maps, layers = spaces(model, store, pool=pool, pca_dim=args.pca_dim)
        return maps, layers, extract_layers(model, store, indices=test, layers=layers)

    pretrained = fitted(inputs.trained.model)
    acc: dict[tuple[str, int, str], list[float]] = {}
    for r in range(args.repeats):
        net = fresh_network(spec, n_outputs=len(classes), seed=derive_seed(args.seed, r, 10**6),
                            device=dev)
        models = {"pretrained": (inputs.trained.model, *pretrained),
                  "random_init": (net, *fitted(net))}
        for s in shot_counts:
            idx = sample_shots(labels, split.train, shots=s,
                               rng=np.random.default_rng(derive_seed(args.seed, r, s)))
            y = np.searchsorted(classes, labels[idx])
            for method, (model, maps, layers, test_raw) in models.items():
                for space, v in score(model, store, maps, layers, shots=idx, y=y,
                                      test_raw=test_raw, y_test=y_test).items():
                    acc.setdefault((method, s, space), []).append(v)
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
    print(f"\ncosine k-NN top-1 (%) on {len(test)} validation tiles, {args.repeats} repeats\n")
    print("| shots | space | random init | pretrained | difference [95% CI] |")
    print("|---:|---|---:|---:|---|")
    for s in shot_counts:
        for space in pretrained[0]:
            p, q = (np.asarray(acc[(m, s, space)]) for m in ("pretrained", "random_init"))
            d = mean_ci(100 * (p - q))
            shown = (f"{WHITE} {layer_label(spec.arch, FEATURES)}" if space == WHITE
                     else layer_label(spec.arch, space))
            print(f"| {s} | {shown} | {100 * q.mean():.1f} | "
                  f"{100 * p.mean():.1f} | {d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}] |")


if __name__ == "__main__":
    main()
