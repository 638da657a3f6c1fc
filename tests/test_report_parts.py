"""The report's pure parts: modality rendering, effective filters, cluster choice, neighbours."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domainclust.errors import DomainclustError
from domainclust.networks.model import ModelSpec, Trunk
from domainclust.report.filters import effective_filters, first_conv
from domainclust.report.montage import choose_clusters, mean_purity
from domainclust.report.neighbours import nearest
from domainclust.report.rendering import build_renderer


def attrs(modality, channels, **provenance):
    return {"modality": modality, "channels": list(channels), "provenance": provenance}


def test_ct_shows_the_centre_slice_of_the_first_window_as_stored():
    channels = [f"{w}_z{o:+d}" for w in ("soft_tissue", "bone") for o in (-1, 0, 1)]
    sample = np.random.default_rng(0).uniform(0.2, 0.4, (4, 6, 8, 8)).astype(np.float32)
    windows = [{"name": "soft_tissue", "width": 400.0, "level": 40.0},
               {"name": "bone", "width": 1800.0, "level": 400.0}]  # as the ct adapter records
    r = build_renderer(attrs("ct", channels, options={"windows": windows}), sample)
    assert r.colour == (1,)
    assert "W 400 / L 40 HU" in r.caption
    tile = np.zeros((1, 6, 2, 2), np.float32)
    tile[0, 1] = [[0.0, 0.5], [1.0, 2.0]]
    img = r.render(tile)
    assert img.shape == (1, 2, 2, 3)
    assert img[0, :, :, 0].tolist() == [[0, 128], [255, 255]]  # the window's 0..1, clipped


def test_mr_is_scaled_between_robust_percentiles():
    rng = np.random.default_rng(1)
    sample = rng.normal(100.0, 10.0, (16, 1, 16, 16)).astype(np.float32)
    sample[0, 0, 0, 0] = 1e6  # one outlier must not squash the range
    r = build_renderer(attrs("mri", ["mr"]), sample)
    assert r.low[0] == pytest.approx(np.percentile(sample, 1))
    assert r.high[0] == pytest.approx(np.percentile(sample, 99))
    img = r.render(sample)[..., 0]
    assert 100 < img.mean() < 155 and img.std() > 30


def test_multispectral_true_colour_when_named_false_colour_on_request():
    names = ["coastal", "blue", "green", "red", "nir"]
    sample = np.random.default_rng(2).uniform(0, 1, (8, 5, 8, 8)).astype(np.float32)
    sample[:, 4] *= 10
    r = build_renderer(attrs("geotiff", names), sample)
    assert r.colour == (3, 2, 1) and r.caption.startswith("true colour")
    f = build_renderer(attrs("geotiff", names), sample, composite=("nir", "red", "green"))
    assert f.colour == (4, 3, 2) and f.caption.startswith("false colour")
    assert f.high[0] > 5  # per-band stretch
    unnamed = build_renderer(attrs("geotiff", ["band1", "band2", "band3", "band4"]), sample[:, :4])
    assert unnamed.colour == (0, 1, 2)
    with pytest.raises(DomainclustError, match="not in the store"):
        build_renderer(attrs("geotiff", names), sample, composite=("nir", "swir", "red"))
    with pytest.raises(DomainclustError, match="1 \\(gray\\) or 3"):
        build_renderer(attrs("geotiff", names), sample, composite=("nir", "red"))


def test_depth_gets_a_colour_map_and_invalid_pixels_black():
    names = ["red", "green", "blue", "depth", "depth_valid"]
    tiles = np.zeros((1, 5, 4, 4), np.float32)
    tiles[0, :3] = 0.5
    tiles[0, 3] = np.linspace(0.5, 4.0, 16).reshape(4, 4)
    tiles[0, 4] = 1.0
    tiles[0, 3, 0, 0] = 0.0
    tiles[0, 4, 0, 0] = 0.0  # invalid pixel
    r = build_renderer(attrs("rgbd", names), tiles)
    img = r.render(tiles)
    assert img.shape == (1, 4, 8, 3)  # colour | depth
    assert (img[0, :, :4] == 128).all()
    depth = img[0, :, 4:]
    assert depth[0, 0].tolist() == [0, 0, 0]
    assert len({tuple(p) for p in depth.reshape(-1, 3)[1:]}) > 8  # a colour ramp
    assert "black where it is invalid" in r.caption


@pytest.mark.parametrize("frontend,channels,raw", [
    ("sobel", ("gray",), ()),
    ("sobel-per-channel", ("a", "b", "c"), ()),
    ("sobel", ("red", "green", "blue", "depth"), ("depth",)),
    ("none", ("a", "b"), ()),
])
def test_effective_filter_equals_conv1_after_the_front_end(frontend, channels, raw):
    torch.manual_seed(0)
    trunk = Trunk(ModelSpec(arch="alexnet", stem="stride1", frontend=frontend, channels=channels,
                            raw_channels=raw, tile_size=32))
    eff = torch.from_numpy(effective_filters(trunk)).float()
    weight = first_conv(trunk).weight
    assert eff.shape == (weight.shape[0], len(channels), weight.shape[-1] + 2, weight.shape[-1] + 2)
    x = torch.randn(2, len(channels), 40, 40)
    with torch.no_grad():
        # The front-end's inner pixels (no zero padding involved) are a valid correlation.
        direct = F.conv2d(trunk.frontend(x)[..., 1:-1, 1:-1], weight)
        composed = F.conv2d(x, eff)
    torch.testing.assert_close(composed, direct, rtol=1e-4, atol=1e-4)


def test_cluster_choice_takes_the_largest_then_a_seeded_random_set_with_purity():
    labels = np.repeat(np.arange(6), [50, 5, 30, 2, 20, 1])
    truth = labels % 2
    truth[:10] = 1  # cluster 0: 40 of 50 carry label 0
    truth[10] = -1
    a = choose_clusters(labels, truth=truth, n_largest=2, n_random=2, per_cluster=4, seed=3)
    assert [s.cluster for s in a[:2]] == [0, 2] and [s.group for s in a] == ["largest"] * 2 + [
        "random"] * 2
    assert {s.cluster for s in a[2:]} <= {1, 3, 4, 5} and len({s.cluster for s in a}) == 4
    assert a[0].purity == pytest.approx(39 / 49) and a[0].majority == 0
    assert all((labels[s.members] == s.cluster).all() and len(s.members) == min(4, s.size)
               for s in a)
    b = choose_clusters(labels, truth=None, n_largest=2, n_random=2, per_cluster=4, seed=3)
    assert [s.cluster for s in b] == [s.cluster for s in a] and b[0].purity is None
    assert mean_purity(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == 0.75


def test_nearest_excludes_the_query_itself():
    f = np.eye(4)[[0, 0, 1, 1, 2]].astype(np.float32)
    f[1] *= 0.9
    assert nearest(f, np.array([0, 2]), k=1).tolist() == [[1], [3]]
