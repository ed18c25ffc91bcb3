"""Where replacement blocks come from: volume neighbours left out, self-pool avoids the block, folders."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import known_models as km
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.images import Image
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.pools import (pool_from_arrays, pool_from_image_itself, pool_from_paths,
                                                  pool_from_volume)


@pytest.fixture
def model():
    return SegmentationModel(km.CueModel(), device="cpu")


def test_volume_pool_leaves_out_the_slice_and_its_neighbours_but_keeps_empty_slices(model):
    """The pool is the data's distribution: an empty (constant) slice is part of it."""
    rng = np.random.default_rng(0)
    vol = rng.uniform(size=(1, 16, 16, 12)).astype(np.float32)
    for z in range(11):
        vol[0, 0, 0, z] = 100 + z  # tag each slice (no normalisation without a card)
    vol[..., 11] = 0.0  # an empty slice (air above the head)
    img = Image(vol, (1.0, 1.0, 1.0), np.eye(4))
    pool = pool_from_volume(model, img, slice_index=5, exclude=2)
    tags = sorted(int(t) - 100 for t in pool.images[:, 0, 0, 0].tolist())
    assert tags == [-100, 0, 1, 2, 8, 9, 10]  # -100: the empty slice
    assert pool.n_constant == 1
    with pytest.raises(UserError, match=">= 0"):
        pool_from_volume(model, img, 5, exclude=-1)


def test_self_pool_never_crops_the_block_being_replaced(model):
    img = np.random.default_rng(1).uniform(size=(1, 24, 24)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = pool_from_image_itself(model, img, 8)
    assert any("itself" in str(c.message) for c in caught)
    avoid = torch.tensor([[8, 8]]).repeat(500, 1)
    draws = pool.draw(500, 8, torch.Generator().manual_seed(0), avoid=avoid)
    overlap = ((draws[:, 1:] - avoid).abs() < 8).all(dim=1)
    assert not overlap.any()


def test_keyed_draws_depend_on_the_block_and_index_alone_and_cover_the_pool(model):
    from napari_seg_explain.core.perturb.keyed_draws import ESTIMATION, SCREENING

    arrays = [np.random.default_rng(i).uniform(size=(1, 20 + 4 * i, 30)).astype(np.float32) for i in range(4)]
    pool = pool_from_arrays(model, arrays)
    keys, index = torch.arange(50).repeat_interleave(40), torch.arange(40).repeat(50)
    all_blocks = pool.draw_keyed(7, ESTIMATION, keys, index, 8)
    some = torch.tensor([3, 17, 41])  # the same blocks drawn alone, in another order: the same draws
    pick = torch.cat([torch.nonzero(keys == k).flatten() for k in some.flip(0)])
    np.testing.assert_array_equal(pool.draw_keyed(7, ESTIMATION, keys[pick], index[pick], 8), all_blocks[pick])
    assert not torch.equal(pool.draw_keyed(8, ESTIMATION, keys, index, 8), all_blocks), "the seed matters"
    assert not torch.equal(pool.draw_keyed(7, SCREENING, keys, index, 8), all_blocks), "so does the stream"
    counts = torch.bincount(all_blocks[:, 0], minlength=4)
    assert counts.min() > 2000 * 0.2, counts  # 2,000 draws over 4 images: each about 500
    for k in range(4):  # every crop inside its image, positions spread over the whole range
        rows = all_blocks[all_blocks[:, 0] == k, 1:]
        h, w = arrays[k].shape[1:]
        assert rows.min() == 0 and rows[:, 0].max() == h - 8 and rows[:, 1].max() == w - 8


def test_keyed_self_pool_draws_never_crop_the_block_being_replaced(model):
    img = np.random.default_rng(1).uniform(size=(1, 24, 24)).astype(np.float32)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pool = pool_from_image_itself(model, img, 8)
    avoid = torch.tensor([[8, 8]]).repeat(500, 1)
    draws = pool.draw_keyed(0, 0, torch.zeros(500, dtype=torch.long), torch.arange(500), 8, avoid=avoid)
    assert not ((draws[:, 1:] - avoid).abs() < 8).all(dim=1).any()


def test_folder_pool_reads_images_and_skips_the_explained_one(tmp_path, model):
    import SimpleITK as sitk

    for i in range(3):
        arr = (np.random.default_rng(i).uniform(size=(20, 20)) * 255).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"s{i}.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    pool = pool_from_paths(model, [tmp_path], exclude_source=str(tmp_path / "s0.png"))
    assert pool.n_images == 2
    with pytest.raises(UserError, match="does not exist"):
        pool_from_paths(model, [tmp_path / "missing"])
