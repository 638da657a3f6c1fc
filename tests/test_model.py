import pytest
import torch

from domainclust.backbones import SafeMaxPool
from domainclust.errors import DomainclustError
from domainclust.frontends import GradientFrontEnd
from domainclust.model import DeepClusterNet, ModelSpec


def spec(arch: str, channels: int, size: int, frontend: str = "sobel", raw=()) -> ModelSpec:
    names = tuple(f"b{i}" for i in range(channels))
    return ModelSpec(arch=arch, frontend=frontend, channels=names, raw_channels=raw, tile_size=size)


@pytest.mark.parametrize("frontend", ["none", "sobel", "sobel-per-channel"])
@pytest.mark.parametrize("channels", [1, 2, 4, 13])
def test_frontend_shapes_and_no_trainable_parameters(frontend: str, channels: int) -> None:
    f = GradientFrontEnd(kind=frontend, in_channels=channels)
    out = f(torch.randn(2, channels, 64, 64))
    expected = {"none": channels, "sobel": 2, "sobel-per-channel": 2 * channels}[frontend]
    assert out.shape == (2, expected, 64, 64) == (2, f.out_channels, 64, 64)
    assert not list(f.parameters())


def test_sobel_responds_to_gradients_not_to_colour() -> None:
    f = GradientFrontEnd(kind="sobel", in_channels=3)
    flat = torch.full((1, 3, 16, 16), 7.0)
    flat[:, 1] = -3.0  # a strong colour, no edges
    assert f(flat)[..., 1:-1, 1:-1].abs().max() < 1e-5
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 3, 16, 16)  # +1 per column
    out = f(ramp)[..., 1:-1, 1:-1]
    assert torch.allclose(out[:, 0], torch.tensor(-8.0))  # x-gradient: (1 + 2 + 1) * -2
    assert torch.allclose(out[:, 1], torch.tensor(0.0))


def test_raw_channels_bypass_the_gradient_filter() -> None:
    f = GradientFrontEnd(kind="sobel", in_channels=4, raw=(3,))
    x = torch.randn(2, 4, 32, 32)
    out = f(x)
    assert out.shape[1] == 3 and torch.equal(out[:, 2], x[:, 3])
    only_rgb = GradientFrontEnd(kind="sobel", in_channels=3)(x[:, :3])
    assert torch.allclose(out[:, :2], only_rgb, atol=1e-5)


def test_frontend_rejects_bad_arguments() -> None:
    with pytest.raises(DomainclustError, match="unknown front-end"):
        GradientFrontEnd(kind="canny", in_channels=1)
    with pytest.raises(DomainclustError, match="expects 3 channels"):
        GradientFrontEnd(kind="sobel", in_channels=3)(torch.zeros(1, 2, 8, 8))


@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "resnet18"])
@pytest.mark.parametrize("channels", [1, 2, 4, 13])
@pytest.mark.parametrize("size", [64, 224])
def test_backbones_any_channels_and_tile_size(arch: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    net = DeepClusterNet(spec(arch, channels, size, frontend="sobel-per-channel"), n_clusters=7)
    net.eval()
    with torch.no_grad():
        feats = net.features(torch.randn(2, channels, size, size))
        logits = net(torch.randn(2, channels, size, size))
    assert feats.shape == (2, net.feature_dim) and logits.shape == (2, 7)
    if arch != "resnet18":
        assert (feats < 0).any()  # fc7 before its ReLU


def test_alexnet_follows_the_design_card() -> None:
    net = DeepClusterNet(spec("alexnet", 3, 224), n_clusters=10)
    convs = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (96, 11, 4), (256, 5, 1), (384, 3, 1), (384, 3, 1), (256, 3, 1)]
    assert all(c.groups == 1 for c in convs)
    assert convs[0].in_channels == 2  # Sobel output
    stages = net.backbone.forward_stages(net.frontend(torch.randn(1, 3, 224, 224)))
    assert [tuple(v.shape[-2:]) for v in stages.values()] == [
        (55, 55), (27, 27), (13, 13), (13, 13), (13, 13)]


def test_small_maps_do_not_vanish_in_pooling() -> None:
    assert SafeMaxPool()(torch.randn(1, 4, 1, 1)).shape == (1, 4, 1, 1)
    assert SafeMaxPool()(torch.randn(1, 4, 55, 55)).shape == (1, 4, 27, 27)


def test_head_reset_changes_only_the_top_layer() -> None:
    net = DeepClusterNet(spec("alexnet", 1, 32), n_clusters=5)
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("top.")}
    net.reset_head(12)
    assert net.top.out_features == 12
    assert net.top.weight.std().item() == pytest.approx(0.01, rel=0.2)
    after = {k: v for k, v in net.state_dict().items() if not k.startswith("top.")}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tiles_below_32_px_are_refused() -> None:
    with pytest.raises(DomainclustError, match="below the 32 px"):
        DeepClusterNet(spec("alexnet", 1, 28), n_clusters=2)


def test_unknown_raw_channel_is_refused() -> None:
    with pytest.raises(DomainclustError, match="depth"):
        DeepClusterNet(spec("alexnet", 3, 32, raw=("depth",)), n_clusters=2)
