"""The `rgbd` adapter on a real stereo pair: scikit-image's Middlebury 2014 motorcycle, bundled
in the wheel with its ground-truth disparity (inf where unknown) and calibration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from domainclust.modalities.images.rgbd import MODALITY
from PIL import Image
from skimage import data as skimage_data
from typer.testing import CliRunner

from domainclust import cli
from domainclust.config import resolve
from domainclust.data.ingest import default_report_path
from domainclust.data.store import TileStore
from domainclust.engine.deepcluster import model_spec
from domainclust.errors import DomainclustError
from domainclust.networks.model import DeepClusterNet


def relative(path: str, root: Path) -> str:
    """A reported path under `root` as a relative name (items named by their key are already)."""
    return str(Path(path).relative_to(root)) if Path(path).is_absolute() else path


# Calibration of the down-sampled pair, from `skimage.data.stereo_motorcycle`'s docstring.
FOCAL_PX, BASELINE_M, DOFFS_PX = 994.978, 0.193001, 31.086
CALIBRATION = {"depth_kind": "disparity", "stereo_focal_px": FOCAL_PX,
               "stereo_baseline_m": BASELINE_M, "stereo_doffs_px": DOFFS_PX}
SIZE = 64


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left image (500, 741, 3) uint8, disparity (px, inf = unknown), depth (m, 0 = unknown)."""
    left, _, disparity = skimage_data.stereo_motorcycle()
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = np.where(valid, FOCAL_PX * BASELINE_M / np.where(valid, disparity + DOFFS_PX, 1), 0)
    return left, disparity, depth


def run(sources: list[Path], out: Path, **options: object) -> dict:
    opts = {**MODALITY.defaults, "tile_size": SIZE, **options}
    return MODALITY.ingest(sources, out, options=opts, workers=1, progress=False)


def floats(path: Path) -> torch.Tensor:
    store = TileStore(path)
    return store.to_float(torch.from_numpy(store.read(np.arange(store.n))))


def pil_resize(plane: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    image = Image.fromarray(plane.astype(np.float32))
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=box))


def save_mm(path: Path, depth_m: np.ndarray, *, per_metre: float = 1000.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(depth_m * per_metre).astype(np.uint16)).save(path, compress_level=1)


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **({"compress_level": 1} if path.suffix == ".png" else {}))


def test_disparity_becomes_metres_and_invalid_depth_is_masked(scene, tmp_path) -> None:
    left, disparity, _ = scene
    disparity = disparity.copy()
    disparity[50:150, 100:250] = 0  # no data
    disparity[300:420, 450:600] = np.nan
    save_rgb(tmp_path / "scene/rgb/moto.png", left)
    (tmp_path / "scene/disparity").mkdir()
    np.savez(tmp_path / "scene/disparity/moto.npz", disparity=disparity)
    report = run([tmp_path / "scene"], tmp_path / "s.zarr", **CALIBRATION)
    store = TileStore(tmp_path / "s.zarr")
    assert report["skipped"] == [] and store.tiles.dtype == np.float16
    assert store.channels == ("red", "green", "blue", "depth", "depth_valid")
    tile = floats(tmp_path / "s.zarr")[0].numpy()
    assert np.isfinite(tile).all()

    box = (120.5, 0.0, 620.5, 500.0)  # centre square of 741 x 500
    rgb = np.stack([pil_resize(left[..., c], box) for c in range(3)])
    assert np.abs(tile[:3] * 255 - rgb).max() <= 1.0  # PIL resamples 8-bit in fixed point
    valid = np.isfinite(disparity) & (disparity > 0)
    expected_valid = pil_resize(valid.astype(np.float32), box)
    np.testing.assert_allclose(tile[4], expected_valid, atol=2e-3)
    assert (tile[4] == 0).sum() > 100  # both patches are fully invalid at 64 px
    assert (tile[3][tile[4] == 0] == 0).all() and (tile[3][tile[4] > 0] > 0).all()
    full = tile[4] > 0.999  # all source pixels valid: plain bilinear resize of the metric depth
    expected_depth = pil_resize(np.where(valid, FOCAL_PX * BASELINE_M / (
        np.where(valid, disparity, 1) + DOFFS_PX), 0), box)
    np.testing.assert_allclose(tile[3][full], expected_depth[full], rtol=2e-3)
    near, far = FOCAL_PX * BASELINE_M / (np.nanmax(disparity[valid]) + DOFFS_PX), \
        FOCAL_PX * BASELINE_M / (np.nanmin(disparity[valid]) + DOFFS_PX)
    assert near * 0.99 <= tile[3][tile[4] > 0].min() and tile[3].max() <= far * 1.01
    assert store.attrs["provenance"]["stereo_focal_px"] == FOCAL_PX

    run([tmp_path / "scene"], tmp_path / "near.zarr", **CALIBRATION, max_depth_m=3.0)
    near_only = floats(tmp_path / "near.zarr")[0].numpy()
    assert near_only[3].max() <= 3.0 and near_only[4].mean() < tile[4].mean() - 0.05


def test_png_millimetres_npy_metres_and_explicit_scale_agree(scene, tmp_path) -> None:
    left, _, depth = scene
    save_rgb(tmp_path / "a/rgb/moto.png", left)
    save_mm(tmp_path / "a/depth/moto.png", depth)  # 16-bit PNG, mm, 0 = unknown
    save_rgb(tmp_path / "b/moto.png", left)
    np.save(tmp_path / "b/moto_depth.npy", np.where(depth > 0, depth, np.nan).astype(np.float32))
    save_rgb(tmp_path / "c/color/moto.png", left)
    save_mm(tmp_path / "c/depth/moto.png", depth, per_metre=5000)  # TUM RGB-D convention
    run([tmp_path / "a", tmp_path / "b"], tmp_path / "ab.zarr")
    run([tmp_path / "c"], tmp_path / "c.zarr", depth_scale=1 / 5000)
    a, b = floats(tmp_path / "ab.zarr")
    c = floats(tmp_path / "c.zarr")[0]
    torch.testing.assert_close(a[:3], b[:3], atol=0, rtol=0)
    torch.testing.assert_close(a[4], b[4], atol=1e-3, rtol=0)
    torch.testing.assert_close(a[3], b[3], atol=1e-3, rtol=2e-3)  # mm rounding, float16
    torch.testing.assert_close(a[3], c[3], atol=1e-3, rtol=2e-3)
    assert a[3][a[4] > 0.999].min() > 0.5 and a[3].max() < 6  # metres, not millimetres


def test_pairing_mismatches_and_size_mismatches_are_reported(scene, tmp_path) -> None:
    left, _, depth = scene
    rgb, d = left[100:260, 200:440], depth[100:260, 200:440]
    for stem in ("a", "b", "c", "sub/e", "f"):
        save_rgb(tmp_path / f"scene/rgb/{stem}.png", rgb)
    for stem in ("a", "b", "d"):
        save_mm(tmp_path / f"scene/depth/{stem}.png", d)
    np.save(tmp_path / "scene/depth/b.npy", d)  # two depth maps for b
    (tmp_path / "scene/depth/sub").mkdir()
    np.save(tmp_path / "scene/depth/sub/e.npy", d)
    save_mm(tmp_path / "scene/depth/f.png", d[:, :200])  # different size
    save_rgb(tmp_path / "flat/x.png", rgb)
    save_mm(tmp_path / "flat/x_depth.png", d)
    save_rgb(tmp_path / "flat/y.png", rgb)
    np.save(tmp_path / "flat/z_depth.npy", d)
    np.save(tmp_path / "flat/w.npy", d)
    report = run([tmp_path / "scene", tmp_path / "flat"], tmp_path / "p.zarr", tile_size=32)
    assert report["tiles_written"] == 3  # a, sub/e, x
    reasons = {relative(s["path"], tmp_path): s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"scene/rgb/b.png", "scene/rgb/c.png", "scene/depth/d.png",
                            "scene/rgb/f.png", "flat/y.png", "flat/z_depth.npy", "flat/w.npy"}
    assert "ambiguous pair (b.png, b.npy" in reasons["scene/rgb/b.png"]
    assert reasons["scene/rgb/c.png"].startswith("no depth map depth/c.")
    assert reasons["scene/depth/d.png"].startswith("no RGB image rgb/d.")
    assert "RGB is 240x160 px but its depth map is 200x160 px" in reasons["scene/rgb/f.png"]
    assert "no depth map y_depth." in reasons["flat/y.png"]
    assert "no RGB image z." in reasons["flat/z_depth.npy"]
    assert "without the _depth suffix" in reasons["flat/w.npy"]
    saved = json.loads(default_report_path(tmp_path / "p.zarr").read_text())
    assert saved["skipped"] == report["skipped"]


@pytest.mark.parametrize("group_size", [1, 32])
def test_a_bad_depth_map_is_named_not_its_rgb_image(scene, tmp_path, group_size) -> None:
    """A truncated or 8-bit depth map names the depth file; a bad RGB image names itself."""
    left, _, depth = scene
    rgb, d = left[100:260, 200:440], depth[100:260, 200:440]
    for stem in ("good", "cut", "byte", "badrgb"):
        save_rgb(tmp_path / f"s/rgb/{stem}.png", rgb)
        save_mm(tmp_path / f"s/depth/{stem}.png", d)
    cut = tmp_path / "s/depth/cut.png"
    cut.write_bytes(cut.read_bytes()[:200])
    Image.fromarray((d * 10).astype(np.uint8)).save(tmp_path / "s/depth/byte.png")
    bad_rgb = tmp_path / "s/rgb/badrgb.png"
    bad_rgb.write_bytes(bad_rgb.read_bytes()[:100])
    report = run([tmp_path / "s"], tmp_path / "p.zarr", tile_size=32, group_size=group_size)
    assert report["tiles_written"] == 1
    reasons = {relative(s["path"], tmp_path): s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"s/depth/cut.png", "s/depth/byte.png", "s/rgb/badrgb.png"}
    assert "cannot read depth map" in reasons["s/depth/cut.png"]
    assert "8-bit depth map" in reasons["s/depth/byte.png"]


def test_pairs_csv_with_labels(scene, tmp_path) -> None:
    left, _, depth = scene
    rows = [("rgb", "depth", "label")]
    for i, (label, top) in enumerate([("bike", 0), ("wall", 150), ("bike", 300)]):
        save_rgb(tmp_path / f"data/im{i}.png", left[top:top + 200, :300])
        save_mm(tmp_path / f"data/dm{i}.png", depth[top:top + 200, :300])
        rows.append((f"data/im{i}.png", f"data/dm{i}.png", label))
    rows.append(("data/gone.png", "data/dm0.png", "wall"))
    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    report = run([tmp_path / "pairs.csv"], tmp_path / "csv.zarr", tile_size=32)
    store = TileStore(tmp_path / "csv.zarr")
    assert store.labels.tolist() == [0, 1, 0]
    assert store.attrs["provenance"]["classes"] == ["bike", "wall"]
    assert [s["path"] for s in report["skipped"]] == ["pairs.csv/data/gone.png"]
    assert "not found (pairs.csv line 5)" in report["skipped"][0]["reason"]


def test_bad_options_and_inputs_give_clean_errors(scene, tmp_path) -> None:
    left, disparity, depth = scene
    rgb = left[:120, :160]
    save_rgb(tmp_path / "disp/rgb/a.png", rgb)
    (tmp_path / "disp/disparity").mkdir()
    np.save(tmp_path / "disp/disparity/a.npy", disparity[:120, :160])
    with pytest.raises(DomainclustError, match="needs the calibration"):
        run([tmp_path / "disp"], tmp_path / "x.zarr", depth_kind="disparity")
    with pytest.raises(DomainclustError, match="found disparity/ folders but depth_kind=depth"):
        run([tmp_path / "disp"], tmp_path / "x.zarr")
    run([tmp_path / "disp"], tmp_path / "norm.zarr", depth_kind="disparity-normalised")
    assert TileStore(tmp_path / "norm.zarr").channels[3] == "disparity"

    save_rgb(tmp_path / "odd/a.png", rgb)
    Image.fromarray((depth[:120, :160] * 40).astype(np.uint8)).save(tmp_path / "odd/a_depth.png")
    save_rgb(tmp_path / "odd/b.png", rgb)
    save_rgb(tmp_path / "odd/b_depth.png", rgb)  # a colour visualisation, not depth
    (tmp_path / "odd/c.png").write_bytes(b"not a png")
    save_mm(tmp_path / "odd/c_depth.png", depth[:120, :160])
    with pytest.raises(DomainclustError, match="ingest wrote no tiles"):
        run([tmp_path / "odd"], tmp_path / "odd.zarr")
    reasons = {relative(s["path"], tmp_path): s["reason"] for s in json.loads(
        default_report_path(tmp_path / "odd.zarr").read_text())["skipped"]}
    assert "8-bit depth map: its unit is unknown; set depth_scale" in reasons["odd/a_depth.png"]
    assert "is a RGB image; expected one channel" in reasons["odd/b_depth.png"]
    assert "cannot decode image" in reasons["odd/c.png"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(DomainclustError, match="no RGB/depth pairs in"):
        run([tmp_path / "empty"], tmp_path / "e.zarr")
    with pytest.raises(DomainclustError, match="neither a folder nor a pairs CSV"):
        run([tmp_path / "odd/a.png"], tmp_path / "e.zarr")
    with pytest.raises(DomainclustError, match="depth_scale: expected auto or a positive"):
        run([tmp_path / "odd"], tmp_path / "e.zarr", depth_scale="mm")


def test_recipe_network_takes_the_store(scene, tmp_path) -> None:
    left, _, depth = scene
    save_rgb(tmp_path / "one/rgb/a.png", left)
    save_mm(tmp_path / "one/depth/a.png", depth)
    run([tmp_path / "one"], tmp_path / "one.zarr", tile_size=32)
    store = TileStore(tmp_path / "one.zarr")
    config = resolve(recipe=MODALITY.load_recipe(), overrides=[f"store={tmp_path / 'one.zarr'}"])
    assert config.model.arch == "alexnet" and config.model.frontend == "sobel"
    assert tuple(config.model.raw_channels) == MODALITY.raw_channels == ("depth", "depth_valid")
    net = DeepClusterNet(model_spec(config, store), n_clusters=5).eval()
    assert net.frontend.out_channels == 4  # Sobel x/y of colour, depth, validity
    with torch.no_grad():
        out = net(store.to_float(torch.from_numpy(store.read(np.arange(1)))))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


@pytest.mark.slow
def test_cli_ingest_then_pretrain(scene, tmp_path) -> None:
    left, disparity, _ = scene
    root = tmp_path / "moto"
    for i, (top, x0) in enumerate([(0, 0), (0, 240), (0, 440), (200, 0), (200, 240),
                                   (200, 440), (100, 120), (100, 340)]):
        for flip in (False, True):  # real crops of the pair, mirrored: 16 RGB-D pairs
            rgb, disp = left[top:top + 300, x0:x0 + 300], disparity[top:top + 300, x0:x0 + 300]
            if flip:
                rgb, disp = rgb[:, ::-1], disp[:, ::-1]
            save_rgb(root / f"rgb/{i}_{int(flip)}.jpg", np.ascontiguousarray(rgb))
            (root / "disparity").mkdir(exist_ok=True)
            np.save(root / f"disparity/{i}_{int(flip)}.npy", np.ascontiguousarray(disp))
    store = tmp_path / "moto.zarr"
    runner = CliRunner()
    sets = [f"{k}={v}" for k, v in CALIBRATION.items()] + ["tile_size=32", "group_size=4"]
    result = runner.invoke(cli.app, ["ingest", "--modality", "rgbd", str(root), "--out", str(store),
                                     *[a for s in sets for a in ("--set", s)], "--quiet"])
    assert result.exit_code == 0, result.output
    assert "16 tiles written, 0 file(s) skipped" in result.output
    result = runner.invoke(cli.app, [
        "pretrain", "--modality", "rgbd", "--store", str(store), "--run-dir", str(tmp_path / "run"),
        "--set", "epochs=1", "--set", "k=3", "--set", "batch_size=8", "--set", "pca_dim=8",
        "--set", "arch=resnet18", "--set", "device=cpu", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["n_tiles"] == 16 and np.isfinite(metrics[0]["loss"])
