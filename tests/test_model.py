import pytest
import torch

from domainclust.errors import DomainclustError
from domainclust.networks.backbones import auto_stem, geometry
from domainclust.networks.frontends import GradientFrontEnd
from domainclust.networks.model import DeepClusterNet, ModelSpec


def spec(arch: str, channels: int, size: int, frontend: str = "sobel", raw=(),
         stem: str | None = None, width: float = 1.0) -> ModelSpec:
    names = tuple(f"b{i}" for i in range(channels))
    return ModelSpec(arch=arch, frontend=frontend, channels=names, raw_channels=raw, tile_size=size,
                     stem=stem or auto_stem(size), width=width)


@pytest.mark.parametrize("frontend", ["none", "sobel", "sobel-per-channel", "sobel-level"])
@pytest.mark.parametrize("channels", [1, 2, 4, 13])
def test_frontend_shapes_and_no_trainable_parameters(frontend: str, channels: int) -> None:
    f = GradientFrontEnd(kind=frontend, in_channels=channels)
    out = f(torch.randn(2, channels, 64, 64))
    expected = {"none": channels, "sobel": 2, "sobel-per-channel": 2 * channels,
                "sobel-level": 3 * channels}[frontend]
    assert out.shape == (2, expected, 64, 64) == (2, f.out_channels, 64, 64)
    assert not list(f.parameters())


@pytest.mark.parametrize("kind", ["sobel", "sobel-per-channel", "sobel-level"])
def test_a_constant_tile_has_no_gradient_anywhere_not_even_at_the_border(kind: str) -> None:
    f = GradientFrontEnd(kind=kind, in_channels=3)
    flat = torch.full((1, 3, 16, 16), 7.0)
    flat[:, 1] = -3.0  # a strong colour, no edges
    out = f(flat)
    step = 3 if kind == "sobel-level" else 2
    gradients = torch.cat([out[:, i : i + 2] for i in range(0, out.shape[1], step)], dim=1)
    assert gradients.abs().max() < 1e-5  # zero padding would answer 4 x 7 along the border
    if kind == "sobel-level":  # the level channels keep each channel's value, border included
        assert torch.allclose(out[:, 2::3], flat)


def test_sobel_responds_to_gradients_not_to_colour() -> None:
    f = GradientFrontEnd(kind="sobel", in_channels=3)
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
@pytest.mark.parametrize("size", [32, 64, 224])
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
    assert net.spec.stem == "imagenet" and net.backbone.classifier[1].in_features == 256 * 6 * 6


@pytest.mark.parametrize("size,stem", [(28, "stride1"), (32, "stride1"), (64, "stride2"),
                                       (96, "stride2"), (128, "stride2"), (224, "imagenet")])
def test_the_stem_is_chosen_from_the_tile_size(size: int, stem: str) -> None:
    assert auto_stem(size) == stem


@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "resnet18"])
@pytest.mark.parametrize("size", [28, 32, 64, 96, 224])
def test_every_chosen_network_keeps_a_real_map_at_every_stage(arch: str, size: int) -> None:
    net = DeepClusterNet(spec(arch, 1, size, width=0.25), n_clusters=3)
    sides = geometry(net.backbone, in_channels=net.frontend.out_channels, tile_size=size)
    real = net.backbone.forward_stages(net.frontend(torch.randn(2, 1, size, size)))
    assert sides == {k: v.shape[-1] for k, v in real.items()}  # the meta pass is exact
    assert min(sides.values()) >= 2 and net.backbone.final_side >= 2


@pytest.mark.parametrize("arch,size", [("alexnet", 32), ("alexnet", 64), ("resnet18", 32),
                                       ("vgg16", 28)])
def test_a_paper_stem_that_would_collapse_is_refused_with_the_fix(arch: str, size: int) -> None:
    with pytest.raises(DomainclustError, match=f"less than 2x2 .* at {size} px.*'{auto_stem(size)}' stem"):
        DeepClusterNet(spec(arch, 1, size, stem="imagenet"), n_clusters=2)


def test_alexnet_at_96px_with_the_paper_stem_is_the_smallest_that_fits() -> None:
    net = DeepClusterNet(spec("alexnet", 1, 96, stem="imagenet"), n_clusters=2)
    assert net.backbone.final_side == 2


def test_head_reset_changes_only_the_top_layer() -> None:
    net = DeepClusterNet(spec("alexnet", 1, 32), n_clusters=5)
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("top.")}
    net.reset_head(12)
    assert net.top.out_features == 12
    assert net.top.weight.std().item() == pytest.approx(0.01, rel=0.2)
    after = {k: v for k, v in net.state_dict().items() if not k.startswith("top.")}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tiles_below_28_px_are_refused() -> None:
    with pytest.raises(DomainclustError, match="below the 28 px"):
        DeepClusterNet(spec("alexnet", 1, 24, stem="stride1"), n_clusters=2)


def test_unknown_raw_channel_is_refused() -> None:
    with pytest.raises(DomainclustError, match="depth"):
        DeepClusterNet(spec("alexnet", 3, 32, raw=("depth",)), n_clusters=2)
