"""The MLP retrained on frozen conv layers: what it trains, what it keeps, and that it learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_evaluation_fixtures import write_store
from test_voc import synthetic_checkpoint

from domainclust.errors import DomainclustError
from domainclust.evaluation.probes.mlp import (
    MlpSettings,
    evaluate_mlp,
    reset_mlp,
    tensor_draw,
    train_mlp,
)
from domainclust.networks.model import DeepClusterNet, ModelSpec

SPEC = ModelSpec(arch="alexnet", stem="stride1", frontend="sobel", channels=("red", "green", "blue"),
                 raw_channels=(), tile_size=32)


def two_classes(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: horizontal stripes, class 1: vertical stripes, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    stripes = (torch.arange(32) // 4 % 2).float()
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.3
    x[y == 0] += stripes.view(1, 1, 32, 1)
    x[y == 1] += stripes.view(1, 1, 1, 32)
    return x, y


@pytest.mark.slow
def test_convs_and_batchnorm_stay_frozen_while_the_mlp_learns() -> None:
    torch.manual_seed(0)
    net = DeepClusterNet(SPEC, n_clusters=5)
    reset_mlp(net, n_classes=2, seed=0)
    convs = {k: v.clone() for k, v in net.backbone.convs.state_dict().items()}
    fc6 = net.backbone.classifier[1].weight.clone()
    x, y = two_classes(32, seed=0)
    settings = MlpSettings(steps=40, batch_size=16, lr=0.01, shift=0.0, flip=False)
    train_mlp(net, draw=tensor_draw(x, y, batch_size=16), settings=settings, seed=0)
    after = net.backbone.convs.state_dict()
    # Weights and BatchNorm running statistics of every conv layer are untouched.
    assert all(torch.equal(convs[k], after[k]) for k in convs)
    assert not torch.equal(fc6, net.backbone.classifier[1].weight)
    assert net.top.out_features == 2
    assert all(p.requires_grad for p in net.parameters())  # handed back trainable
    test_x, test_y = two_classes(32, seed=1)
    net.eval()
    with torch.no_grad():
        accuracy = (net(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.9


def test_reset_reinitialises_fc6_fc7_and_the_head() -> None:
    net = DeepClusterNet(SPEC, n_clusters=5)
    with torch.no_grad():
        for p in net.backbone.classifier.parameters():
            p.fill_(1.0)
    reset_mlp(net, n_classes=3, seed=0)
    fc7 = net.backbone.classifier[4]
    with torch.no_grad():
        assert abs(float(fc7.weight.std()) - 0.01) < 1e-3 and float(fc7.bias.abs().max()) == 0.0
    assert net.top.out_features == 3


def test_networks_without_fc_layers_are_refused() -> None:
    spec = ModelSpec(arch="resnet18", stem="stride1", frontend="sobel", channels=("gray",),
                     raw_channels=(), tile_size=32)
    with pytest.raises(DomainclustError, match="resnet18 does not have"):
        reset_mlp(DeepClusterNet(spec, n_clusters=2), n_classes=2, seed=0)


def test_evaluate_mlp_on_a_train_and_a_test_store(tmp_path: Path) -> None:
    x, y = two_classes(24, seed=2)
    tiles = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    train = write_store(tmp_path / "train.zarr", tiles[:16], labels=y[:16].numpy(),
                        channels=("red", "green", "blue"))
    test = write_store(tmp_path / "test.zarr", tiles[16:], labels=y[16:].numpy(),
                       channels=("red", "green", "blue"))
    checkpoint = synthetic_checkpoint(tmp_path / "run")
    result = evaluate_mlp(checkpoint, train, test, device="cpu", seed=0,
                          settings=MlpSettings(steps=2, batch_size=8))
    assert (result.n_train, result.n_test, result.n_classes) == (16, 8, 2)
    # Scored on the 8 tiles of the test store: a whole number of them right.
    assert result.top1 * 8 == pytest.approx(round(result.top1 * 8))
    assert "MLP on frozen conv layers" in result.table()
