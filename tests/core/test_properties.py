"""Property-based tests (hypothesis) of the geometry the explainers rest on: RoIs, block grids, pools, Dice."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.metrics import dice, dice_np
from napari_seg_explain.core.perturb.grid import BlockGrid, block_index, blocks_touching
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.rois import roi_from_bounds, roi_from_box, roi_from_mask

FAST = settings(max_examples=40, deadline=None)


@st.composite
def shape_and_block(draw, dims=(2, 3)):
    nd = draw(st.sampled_from(dims))
    shape = tuple(draw(st.integers(1, 24 if nd == 2 else 12)) for _ in range(nd))
    block = tuple(draw(st.integers(1, 9)) for _ in range(nd))
    return shape, block


@st.composite
def shape_and_bounds(draw):
    """A shape and a box (starts, stops) that may stick out of it or be empty."""
    nd = draw(st.sampled_from((2, 3)))
    shape = tuple(draw(st.integers(1, 20)) for _ in range(nd))
    starts = tuple(draw(st.integers(-3, s + 2)) for s in shape)
    stops = tuple(draw(st.integers(-3, s + 3)) for s in shape)
    return shape, starts, stops


def _inside(shape, starts, stops):
    return all(0 <= a < b <= s for a, b, s in zip(starts, stops, shape))


# --- core/rois.py: a box is accepted only inside the image (documented: "Must lie inside the image") ---------

@FAST
@given(shape_and_bounds())
def test_box_inside_gives_exactly_its_pixels_else_refused(case):
    shape, starts, stops = case
    if not _inside(shape, starts, stops):
        with pytest.raises(UserError):
            roi_from_bounds(shape, starts, stops)
        if len(shape) == 2:
            with pytest.raises(UserError):
                roi_from_box(shape, starts[0], starts[1], stops[0], stops[1])
        return
    m = roi_from_bounds(shape, starts, stops)
    assert m.shape == shape and m.dtype == bool
    assert m.sum() == np.prod([b - a for a, b in zip(starts, stops)]) > 0
    idx = np.argwhere(m)
    assert (idx.min(0) == starts).all() and (idx.max(0) + 1 == stops).all()
    if len(shape) == 2:
        np.testing.assert_array_equal(m, roi_from_box(shape, starts[0], starts[1], stops[0], stops[1]))


@FAST
@given(shape_and_bounds())
def test_mask_of_a_clipped_box_is_non_empty_iff_the_box_overlaps(case):
    shape, starts, stops = case
    arr = np.zeros(shape, np.uint8)
    arr[tuple(slice(max(a, 0), max(b, 0)) for a, b in zip(starts, stops))] = 7  # the box clipped to the image
    overlaps = all(max(a, 0) < min(b, s) for a, b, s in zip(starts, stops, shape))
    if overlaps:
        m = roi_from_mask(arr, shape)
        assert m.any() and m.dtype == bool and (m == (arr != 0)).all()
    else:
        with pytest.raises(UserError):
            roi_from_mask(arr, shape)


# --- core/perturb/grid.py ---------------------------------------------------------------------------------

@FAST
@given(shape_and_block())
def test_blocks_tile_the_image_exactly_once(case):
    shape, block = case
    grid = BlockGrid(shape, block)
    count = np.zeros(shape, int)
    for c in grid.corners:
        count[tuple(slice(int(a), int(a) + b) for a, b in zip(c, grid.sizes))] += 1
    assert (count == 1).all()
    assert grid.n_blocks == np.prod(grid.grid_shape)
    assert grid.partial_edges == any(s % b for s, b in zip(shape, block))


@st.composite
def grid_with_mask(draw):
    shape, block = draw(shape_and_block())
    flat = draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return shape, block, np.array(flat, bool).reshape(shape)


@FAST
@given(grid_with_mask())
def test_blocks_touching_are_exactly_those_whose_footprint_overlaps(case):
    shape, block, mask = case
    touching = blocks_touching(mask, block)
    grid = BlockGrid(shape, block, exclude=mask)
    for g in np.ndindex(*grid.grid_shape):
        foot = tuple(slice(i * b, (i + 1) * b) for i, b in zip(g, grid.sizes))
        assert touching[g] == mask[foot].any()
    assert {tuple(c) for c in grid.coords} == {g for g in np.ndindex(*grid.grid_shape) if not touching[g]}


@FAST
@given(grid_with_mask(), st.integers(0, 2**31 - 1))
def test_paint_gives_each_pixel_its_blocks_value(case, seed):
    shape, block, mask = case
    grid = BlockGrid(shape, block, exclude=mask)
    values = np.random.default_rng(seed).normal(size=grid.n_blocks).astype(np.float32)
    painted = grid.paint(values)
    assert painted.shape == shape and painted.dtype == np.float32
    expected = np.full(shape, np.nan, np.float32)
    for c, v in zip(grid.corners, values):
        expected[tuple(slice(int(a), int(a) + b) for a, b in zip(c, grid.sizes))] = v
    np.testing.assert_array_equal(painted, expected)
    assert np.isnan(painted[mask]).all(), "every RoI pixel lies in an excluded block"


@FAST
@given(shape_and_block())
def test_block_index_round_trips(case):
    shape, block = case
    grid = BlockGrid(shape, block)
    padded = torch.arange(int(np.prod(grid.padded_shape))).reshape(1, 1, *grid.padded_shape)
    corners = torch.as_tensor(grid.corners, dtype=torch.long)
    rows = torch.zeros(len(corners), dtype=torch.long).reshape([-1] + [1] * len(shape))
    got = padded[(rows, slice(None)) + block_index(corners, block)][..., 0]  # (nb, *block)
    assert got.shape == (grid.n_blocks, *grid.sizes)
    seen = torch.zeros(padded.numel(), dtype=torch.long)
    for c, crop in zip(grid.corners, got):
        ref = padded[(0, 0) + tuple(slice(int(a), int(a) + b) for a, b in zip(c, grid.sizes))]
        assert torch.equal(crop, ref)
        seen[crop.flatten()] += 1
    assert (seen == 1).all(), "the blocks' indices cover the padded image exactly once"


# --- core/perturb/pools.py --------------------------------------------------------------------------------

@st.composite
def pool_case(draw):
    nd = draw(st.sampled_from((2, 3)))
    block = tuple(draw(st.integers(1, 5)) for _ in range(nd))
    shapes = draw(st.lists(st.tuples(*[st.integers(b, b + 8) for b in block]), min_size=1, max_size=4))
    return nd, block, shapes, draw(st.integers(0, 2**31 - 1))


@FAST
@given(pool_case())
def test_pool_crops_have_the_block_shape_and_come_from_a_pool_image(case):
    nd, block, shapes, seed = case
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(2, *s)).astype(np.float32) for s in shapes]
    model = SimpleNamespace(card=SimpleNamespace(spatial_dims=nd), device=torch.device("cpu"))
    pool = pool_from_arrays(model, arrays, block)
    draws = pool.draw(20, block, torch.Generator().manual_seed(seed))
    crops = pool.crops(draws, block)
    assert crops.shape == (20, *block, 2)
    for d, crop in zip(draws.tolist(), crops):
        img, start = arrays[d[0]], d[1:]
        assert all(0 <= a and a + b <= s for a, b, s in zip(start, block, img.shape[1:])), "inside the image"
        ref = img[(slice(None),) + tuple(slice(a, a + b) for a, b in zip(start, block))]
        np.testing.assert_array_equal(crop.numpy(), np.moveaxis(ref, 0, -1))


# --- core/metrics.py ----------------------------------------------------------------------------------------

@st.composite
def two_masks(draw):
    n = draw(st.integers(1, 60))
    a = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    b = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return np.array(a), np.array(b)


@FAST
@given(two_masks())
def test_dice_properties(masks):
    a, b = masks
    d_ab, d_ba = dice_np(a, b), dice_np(b, a)
    assert d_ab == d_ba and 0.0 <= d_ab <= 1.0
    t = dice(torch.tensor(a, dtype=torch.float32)[None], torch.tensor(b))
    assert abs(float(t[0]) - d_ab) < 1e-5 and 0.0 <= float(t[0]) <= 1.0 + 1e-6
    if a.any():
        assert dice_np(a, a) == pytest.approx(1.0, abs=1e-6)
    if not (a & b).any():
        assert d_ab == 0.0
