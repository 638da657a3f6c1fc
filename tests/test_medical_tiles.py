"""The pure steps shared by the ct and mri adapters: spacing check, resampling, tiling, keys."""

from pathlib import Path

import numpy as np
import pytest
from domainclust.modalities.medical.tiles import (
    gather_tiles,
    pad_to_tile,
    resample_inplane,
    select_tiles,
    slab_indices,
    tile_starts,
)
from domainclust.modalities.medical.volume import (
    check_slice_spacing,
    contiguous_runs,
    hashed,
    scrub,
)


def test_regular_spacing_has_no_problem() -> None:
    check = check_slice_spacing(np.arange(10) * 2.5 - 7.0, tolerance=0.1, fallback_step=0.0)
    assert check.step == pytest.approx(2.5) and check.problem is None and not check.fatal


def test_a_missing_slice_is_found_and_counted() -> None:
    positions = np.delete(np.arange(10) * 2.5, 4)
    check = check_slice_spacing(positions, tolerance=0.1, fallback_step=0.0)
    assert check.step == pytest.approx(2.5) and not check.fatal
    assert "missing slices: 1 gap(s), about 1 slice(s)" in check.problem
    assert "7.50..12.50 mm" in check.problem


def test_irregular_spacing_is_reported_apart_from_gaps() -> None:
    positions = np.array([0.0, 1.0, 2.0, 3.3, 4.3])
    check = check_slice_spacing(positions, tolerance=0.1, fallback_step=0.0)
    assert check.problem.startswith("irregular spacing") and not check.fatal
    assert check_slice_spacing(positions, tolerance=0.5, fallback_step=0.0).problem is None


def test_slices_at_one_position_are_fatal() -> None:
    check = check_slice_spacing(np.array([0.0, 0.0, 5.0]), tolerance=0.1, fallback_step=0.0)
    assert check.fatal and "share a position" in check.problem


def test_a_single_slice_takes_the_header_step() -> None:
    assert check_slice_spacing(np.array([3.0]), tolerance=0.1, fallback_step=5.0).step == 5.0


def test_tile_grid_reaches_the_border() -> None:
    assert tile_starts(100, tile=32, stride=32).tolist() == [0, 32, 64, 68]
    assert tile_starts(64, tile=32, stride=16).tolist() == [0, 16, 32]
    assert tile_starts(32, tile=32, stride=32).tolist() == [0]


def test_background_tiles_are_dropped_and_counted() -> None:
    background = np.ones((3, 64, 64), dtype=bool)
    background[1, :32, :32] = False  # one foreground tile on the middle slice
    background[2, :32, :16] = False  # half of a tile: kept at max_background=0.5 only
    chosen = select_tiles(background, centres=np.arange(3), tile=32, stride=32,
                          max_background=0.5)
    assert list(zip(chosen.z, chosen.y, chosen.x)) == [(1, 0, 0), (2, 0, 0)]
    assert chosen.dropped == 12 - 2
    strict = select_tiles(background, centres=np.array([1, 2]), tile=32, stride=32,
                          max_background=0.0)
    assert list(zip(strict.z, strict.y, strict.x)) == [(1, 0, 0)] and strict.dropped == 7


def test_slabs_repeat_the_edge_slice() -> None:
    assert slab_indices(np.array([0, 2, 4]), slab=3, n_slices=5).tolist() == [
        [0, 0, 1], [1, 2, 3], [3, 4, 4]]
    assert slab_indices(np.array([1]), slab=1, n_slices=5).tolist() == [[1]]


def test_gathered_tiles_equal_direct_slicing() -> None:
    values = np.random.default_rng(0).normal(size=(4, 50, 60)).astype(np.float32)
    slabs = slab_indices(np.array([0, 3]), slab=3, n_slices=4)
    tiles = gather_tiles(values, slabs=slabs, y=np.array([5, 18]), x=np.array([0, 28]), tile=32)
    assert tiles.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(tiles[1, 0], values[2, 18:50, 28:60])
    np.testing.assert_array_equal(tiles[0, 0], values[0, 5:37, 0:32])


def test_resampling_reaches_the_target_spacing() -> None:
    values = np.full((2, 100, 50), 40.0, dtype=np.float32)
    out, spacing = resample_inplane(values, spacing_yx=(0.5, 2.0), target=1.0)
    assert out.shape == (2, 50, 100) and spacing == pytest.approx((1.0, 1.0))
    np.testing.assert_allclose(out, 40.0, rtol=1e-5)  # a constant stays constant (HU kept)
    same, kept = resample_inplane(values, spacing_yx=(0.5, 2.0), target=None)
    assert same is values and kept == (0.5, 2.0)


def test_padding_counts_as_background() -> None:
    values, background = pad_to_tile(np.zeros((1, 16, 40), np.float32),
                                     np.zeros((1, 16, 40), bool), tile=32, fill=-1024.0)
    assert values.shape == (1, 32, 40) and values[0, 20, 0] == -1024.0
    assert background[0, 16:].all() and not background[0, :16].any()


def test_runs_split_at_missing_slices_and_slabs_stay_inside_them() -> None:
    positions = np.array([0.0, 2.0, 4.0, 8.0, 10.0, 16.0])  # slices missing at 6, 12 and 14
    runs = contiguous_runs(positions, step=2.0)
    assert runs == [(0, 3), (3, 5), (5, 6)]
    assert contiguous_runs(positions[:3], step=2.0) == [(0, 3)]
    slabs = slab_indices(np.arange(6), slab=3, n_slices=6, runs=runs)
    assert slabs.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4], [5, 5, 5]]


def test_keys_and_messages_reveal_no_path(tmp_path: Path) -> None:
    path = tmp_path / "DOE^JOHN" / "IM0001"
    assert hashed("s", "1.2.3") != hashed("t", "1.2.3") and len(hashed("s", "x")) == 16
    assert "DOE" not in scrub(f"cannot open {path}: bad", [path])
