"""Pure pieces of the evaluation package: pooling grids, k-NN, edge ratio, splits, shots, probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domainclust.errors import DomainclustError
from domainclust.evaluation.data import (
    check_shots,
    load_split,
    read_labels_file,
    sample_shots,
    save_split,
    stratified_split,
)
from domainclust.evaluation.features import layer_features, pool_grid, resolve_layers
from domainclust.evaluation.probes.clusters import intra_class_edge_ratio
from domainclust.evaluation.probes.knn import knn_accuracy
from domainclust.evaluation.probes.linear import fit_linear, fit_probe
from domainclust.networks.model import DeepClusterNet, ModelSpec


@pytest.mark.parametrize(("channels", "side", "grid"), [
    (96, 55, (10, 10)),  # paper conv1 at 224 px: 6x6 pool, pad 3 → 96·10·10 = 9600
    (256, 27, (6, 6)),  # conv2: 4x4 pool → 256·6·6 = 9216
    (384, 13, (5, 5)),  # conv3/4: 3x3 pool, pad 1 → 384·5·5 = 9600
    (256, 13, (6, 6)),  # conv5: 2x2 pool → 256·6·6 = 9216
    (96, 7, (7, 7)),  # 32 px tiles: never finer than the map itself
    (384, 1, (1, 1)),
])
def test_pool_grid_reproduces_the_paper_and_clips_small_maps(channels, side, grid) -> None:
    assert pool_grid(channels, side, side) == grid


def test_alexnet_stage_features_at_32px() -> None:
    spec = ModelSpec(arch="alexnet", frontend="sobel", channels=("gray",), raw_channels=(),
                     tile_size=32, stem="stride1")
    net = DeepClusterNet(spec, n_clusters=3).eval()
    layers = resolve_layers(net, ["conv1", "conv2", "conv5", "fc7"])
    out = layer_features(net, torch.randn(2, 1, 32, 32), layers=layers)
    dims = {k: v.shape[1] for k, v in out.items()}
    # Maps of 32, 15 and 7 px: pooled to ~9.6k values, never finer than the map itself.
    assert dims == {"conv1": 96 * 10 * 10, "conv2": 256 * 6 * 6, "conv5": 256 * 6 * 6,
                    "features": 4096}
    assert resolve_layers(net, None) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    with pytest.raises(DomainclustError, match="unknown layer 'conv9' for alexnet"):
        resolve_layers(net, ["conv9"])


def test_knn_accuracy_weighted_cosine_votes() -> None:
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    labels = np.array([3, 3, 7, 7])
    test = np.array([[5, 0.2], [0.2, 4], [1, 1.2]], np.float32)  # scale must not matter
    assert knn_accuracy(train, labels, test, np.array([3, 7, 7]), k=2) == 1.0
    assert knn_accuracy(train, labels, test, np.array([3, 3, 3]), k=2) == pytest.approx(1 / 3)


def test_intra_class_edge_ratio_of_separated_mixed_and_duplicated_points() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4, dtype=np.float32) * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (20, 4)) for c in centres]).astype(np.float32)
    labels = np.repeat(np.arange(4), 20)
    assert intra_class_edge_ratio(x, labels, k=10) == 1.0
    # Each tight cluster holds two classes, alternating: 5 of a point's 10 neighbours share it.
    mixed = np.repeat(np.arange(4) // 2, 20) * 2 + np.tile([0, 1], 40)
    x2 = np.concatenate([c + rng.normal(0, 0.1, (40, 4)) for c in centres[:2]]).astype(np.float32)
    assert intra_class_edge_ratio(x2, mixed, k=39) == pytest.approx(19 / 39)
    dup = np.repeat(np.eye(2, dtype=np.float32), 3, axis=0)  # duplicates: self may come later
    assert intra_class_edge_ratio(dup, np.array([0, 0, 0, 1, 1, 1]), k=2) == 1.0


def test_stratified_split_is_seeded_disjoint_and_per_class(tmp_path: Path) -> None:
    labels = np.r_[np.zeros(50, int), np.ones(30, int), np.full(20, -1)]  # -1: unlabelled
    a = stratified_split(labels, test_fraction=0.2, seed=1)
    b = stratified_split(labels, test_fraction=0.2, seed=1)
    c = stratified_split(labels, test_fraction=0.2, seed=2)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.test, c.test)
    assert not np.intersect1d(a.train, a.test).size and len(a.train) + len(a.test) == 80
    assert np.bincount(labels[a.test]).tolist() == [10, 6]
    save_split(tmp_path / "split.npz", a)
    loaded = load_split(tmp_path / "split.npz", labels=labels)
    assert np.array_equal(loaded.test, a.test) and loaded.source.endswith("split.npz")
    np.savez(tmp_path / "bad.npz", train=np.array([0, 1]), test=np.array([1, 2]))
    with pytest.raises(DomainclustError, match="train and test share tiles"):
        load_split(tmp_path / "bad.npz", labels=labels)
    np.savez(tmp_path / "oob.npz", train=np.array([0]), test=np.array([500]))
    with pytest.raises(DomainclustError, match="indices outside 0..99"):
        load_split(tmp_path / "oob.npz", labels=labels)
    np.savez(tmp_path / "unlabelled.npz", train=np.array([0]), test=np.array([95]))
    with pytest.raises(DomainclustError, match="includes unlabelled tiles"):
        load_split(tmp_path / "unlabelled.npz", labels=labels)


def test_shots_are_per_class_and_too_few_is_one_clear_error() -> None:
    labels = np.r_[np.zeros(10, int), np.ones(4, int)]
    pool = np.arange(14)
    picked = sample_shots(labels, pool, shots=3, rng=np.random.default_rng(0))
    assert np.bincount(labels[picked]).tolist() == [3, 3]
    with pytest.raises(DomainclustError, match="class 1 has only 4 training example"):
        sample_shots(labels, pool, shots=5, rng=np.random.default_rng(0))
    with pytest.raises(DomainclustError, match="class 1 has only 4 .* fewer than the 5 shots"):
        check_shots(labels, pool, shots=[1, 5])


def test_labels_file_must_match_the_tiles(tmp_path: Path) -> None:
    np.save(tmp_path / "l.npy", np.arange(5))
    assert read_labels_file(tmp_path / "l.npy", n_tiles=5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DomainclustError, match="holds 5 labels but the store has 6 tiles"):
        read_labels_file(tmp_path / "l.npy", n_tiles=6)
    (tmp_path / "l.txt").write_text("1\n2\nx\n")
    with pytest.raises(DomainclustError, match="cannot read labels"):
        read_labels_file(tmp_path / "l.txt", n_tiles=3)
    np.save(tmp_path / "f.npy", np.ones(3) / 2)
    with pytest.raises(DomainclustError, match="one integer label per tile"):
        read_labels_file(tmp_path / "f.npy", n_tiles=3)


@pytest.mark.parametrize("standardise", [False, True])
def test_fewer_samples_than_dimensions_reach_the_optimum_of_the_full_problem(standardise) -> None:
    """Solved in the span of the samples, the probe is still the optimum over all d dims: the
    gradient of the full objective vanishes at it."""
    rng = np.random.default_rng(1)
    y = np.arange(30) % 3
    x = (rng.normal(0, 1, (30, 2000)) + y[:, None] * 0.05 + 2.0).astype(np.float32)
    wd = 1e-2
    probe = fit_linear(x, y, weight_decay=wd, max_iter=500, standardise=standardise)
    assert probe.weight.shape == (3, 2000)
    w = probe.weight.clone().requires_grad_(True)
    b = probe.bias.clone().requires_grad_(True)
    z = (torch.as_tensor(x) - probe.mean) / probe.std
    loss = F.cross_entropy(z @ w.T + b, torch.as_tensor(y)) + 0.5 * wd * (w * w).sum()
    loss.backward()
    assert float(w.grad.abs().max()) < 1e-4 and float(b.grad.abs().max()) < 1e-4
    assert float(w.abs().max()) > 1e-3  # not the trivial zero solution


def test_linear_probe_fits_separable_classes_with_any_label_values() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7, 11], 40)
    x = rng.normal(0, 1, (120, 50)).astype(np.float32)
    x[:, 0] += (y == 7) * 6
    x[:, 1] += (y == 11) * 6
    probe = fit_linear(x, y, weight_decay=1e-3)
    assert probe.accuracy(x, y) == 1.0 and probe.classes.tolist() == [3, 7, 11]
    probe, wd = fit_probe(x, y, weight_decays=(1e-3, 1.0), seed=0)
    assert wd in (1e-3, 1.0) and probe.accuracy(x, y) > 0.95
