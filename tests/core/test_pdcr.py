"""PdCR against models whose answer is known by construction (tests/known_models.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import known_models as km
from napari_seg_explain.core.errors import IncompatibleInputError, UserError
from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.keyed_draws import ESTIMATION, SCREENING
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.rois import roi_from_box

CFG = PdCRConfig(n=12)


def _run(two_class=False, label=True, object_value=None, **kw):
    sc = km.cue_scene(object_value=object_value)
    model = SegmentationModel(km.CueModel(two_class=two_class), device="cpu")
    pool = pool_from_arrays(model, km.dark_pool_images())
    roi = roi_from_box((km.H, km.W), *sc["box"])
    expl = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=sc["label"] if label else None,
                        config=kw.pop("config", CFG), **kw)
    return expl, sc


def _elsewhere(amap):
    rest = amap.copy()
    rest[km.CUE] = 0
    rest[km.SUPPRESSOR] = 0
    return rest


@pytest.mark.parametrize("two_class", [False, True], ids=["sigmoid-1-logit", "softmax-2-class"])
def test_cue_supports_suppressor_opposes_rest_exactly_zero(two_class):
    expl, _ = _run(two_class=two_class)
    amap = expl.map
    assert np.all(amap[km.CUE] < -1), "the planted cue far from the RoI must support it (negative ATE, red)"
    assert np.all(amap[km.SUPPRESSOR] > 1), "the planted suppressor must work against it (positive ATE, blue)"
    rest = _elsewhere(amap)
    assert np.all(rest[np.isfinite(rest)] == 0.0), "pixels the model ignores must be exactly 0"
    assert np.all(amap[km.DISTRACTOR] == 0.0)
    assert np.isnan(amap[km.OBJECT]).all(), "the RoI is NaN (not evaluated)"
    s = expl.stats
    assert s["metric"] == "dice_vs_label"
    assert s["n_blocks_screened_in"] == 2
    assert s["n_negative"] == 1 and s["n_positive"] == 1
    assert s["n_blocks"] == 64 - 4
    assert s["min_ate"] == pytest.approx(float(amap[km.CUE].min()))
    # screening S for every block + N for the two active blocks, plus the unperturbed pass
    assert s["forward_passes"] == 60 * CFG.screen + 2 * CFG.n + 1


def test_without_label_uses_soft_dice_vs_own_prediction():
    expl, _ = _run(label=False, object_value=0.7)
    assert expl.stats["metric"] == "soft_dice_vs_own_prediction"
    assert expl.stats["M0"] < 100
    assert np.all(expl.map[km.CUE] < 0) and np.all(expl.map[km.SUPPRESSOR] > 0)
    rest = _elsewhere(expl.map)
    assert np.all(rest[np.isfinite(rest)] == 0.0)
    assert any("soft Dice" in d for d in expl.deviations)


def test_whole_map_matches_the_authors_loop_one_image_at_a_time():
    """A plain re-implementation of the authors' loop (block by block, image by image, numpy Dice) with the
    same draws gives the same map everywhere: screened-out zeros, ATEs, thresholded zeros and NaN."""
    import torch

    from napari_seg_explain.core.perturb.grid import blocks_touching

    cfg = PdCRConfig(n=10, seed=3, batch_size=7, screen=3)
    expl, sc = _run(config=cfg)
    model = SegmentationModel(km.CueModel(), device="cpu")
    pool = pool_from_arrays(model, km.dark_pool_images())
    roi = roi_from_box((64, 64), *sc["box"])
    touching = blocks_touching(roi, 8)
    blocks = [(y * 8, x * 8) for y, x in zip(*np.nonzero(~touching))]

    def dice_points(img):
        prob = model.predict(img)[0]
        pred, ref = prob[roi] > 0.5, sc["label"][roi] > 0
        return 100 * 2 * (pred & ref).sum() / (pred.sum() + ref.sum() + 1e-10)

    def perturbed(y, x, draw):
        img = sc["image"].copy()
        k, ty, tx = (int(v) for v in draw)
        img[0, y:y + 8, x:x + 8] = pool.images[k, 0, ty:ty + 8, tx:tx + 8].numpy()
        return img

    m0 = dice_points(sc["image"])
    corners = torch.as_tensor(blocks)
    keys = corners[:, 0] // 8 * 8 + corners[:, 1] // 8  # each block's raster index in the 8 x 8 grid

    def draws(which, n, stream):  # draw j of block i: a function of (seed, stream, block, j) alone
        idx = torch.as_tensor(which).repeat_interleave(n)
        return pool.draw_keyed(cfg.seed, stream, keys[idx], torch.arange(n).repeat(len(which)), 8, corners[idx])

    screen = draws(range(len(blocks)), 3, SCREENING)
    active = [i for i, (y, x) in enumerate(blocks)
              if any(abs(dice_points(perturbed(y, x, screen[3 * i + s])) - m0) >= cfg.tau for s in range(3))]
    est = draws(active, 10, ESTIMATION)
    expected = np.full((64, 64), np.nan, np.float32)
    for y, x in blocks:
        expected[y:y + 8, x:x + 8] = 0.0
    for j, i in enumerate(active):
        y, x = blocks[i]
        ate = np.mean([dice_points(perturbed(y, x, est[10 * j + t])) - m0 for t in range(10)])
        expected[y:y + 8, x:x + 8] = ate if abs(ate) >= cfg.tau else 0.0
    np.testing.assert_allclose(expl.map, expected, atol=1e-4)
    assert np.isfinite(expected).sum() == 60 * 64


def test_crops_are_the_pool_pixels_at_the_drawn_positions():
    import torch

    model = SegmentationModel(km.CueModel(), device="cpu")
    arrays = [np.random.default_rng(i).uniform(size=(1, 20 + 5 * i, 30)).astype(np.float32) for i in range(3)]
    pool = pool_from_arrays(model, arrays)
    draws = pool.draw(200, 8, torch.Generator().manual_seed(0))
    crops = pool.crops(draws, 8).numpy()
    for (k, y, x), crop in zip(draws.tolist(), crops):
        np.testing.assert_array_equal(crop[:, :, 0], arrays[k][0, y:y + 8, x:x + 8])
    assert set(draws[:, 0].tolist()) == {0, 1, 2}


def test_lone_image_pool_is_the_image_itself_with_warning():
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    roi = roi_from_box((64, 64), *sc["box"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = explain_pdcr(model, sc["image"], roi, 1, label=sc["label"], config=PdCRConfig(n=5, screen=2))
    assert expl.params["pool"]["self_pool"] is True
    assert any("itself" in w for w in expl.warnings)
    rest = _elsewhere(expl.map)
    assert np.all(rest[np.isfinite(rest)] == 0.0)


def test_partial_edge_blocks_and_non_multiple_sizes():
    """A 60x60 image: the last row/column of blocks is 4 pixels wide and still evaluated."""
    sc = km.cue_scene()
    img = sc["image"][:, :60, :60]
    model = SegmentationModel(km.CueModel(), device="cpu")
    rng = np.random.default_rng(0)
    pool = pool_from_arrays(model, [rng.uniform(0, 0.2, (1, 30, 30)).astype(np.float32)])
    roi = roi_from_box((60, 60), 8, 8, 24, 24)
    expl = explain_pdcr(model, img, roi, 1, pool=pool, label=sc["label"][:60, :60], config=PdCRConfig(n=4))
    assert expl.map.shape == (60, 60)
    assert np.isfinite(expl.map[56:, 56:]).all()
    assert expl.stats["n_blocks"] == 64 - 4


@pytest.mark.parametrize("bad", [{"patch": 0}, {"n": 0}, {"screen": 0}, {"tau": -1}, {"tau": float("nan")},
                                 {"threshold": 1.0}, {"batch_size": -1}])
def test_bad_parameters_name_themselves(bad):
    with pytest.raises(UserError, match=next(iter(bad))):
        PdCRConfig(**bad)


def test_mismatched_inputs_are_clear_errors():
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    with pytest.raises(IncompatibleInputError, match="RoI shape"):
        explain_pdcr(model, sc["image"], np.ones((10, 10), bool), 1)
    with pytest.raises(UserError, match="class 3"):
        explain_pdcr(model, sc["image"], roi_from_box((64, 64), 8, 8, 24, 24), 3,
                     pool=pool_from_arrays(model, [sc["image"]]))


def test_far_field_statistics_know_where_the_effect_is():
    """The cue block is far from the RoI (about 40 px): all of the effect is far field with a small distance,
    none of it when the far-field distance is beyond the cue."""
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    pool = pool_from_arrays(model, [np.full((1, 32, 32), v, np.float32) for v in (0.0, 0.1, 0.2)])
    roi = roi_from_box((64, 64), 8, 8, 24, 24)
    near = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=sc["label"],
                        config=PdCRConfig(n=6, far_distance=16)).stats
    assert near["far_share"] == pytest.approx(100) and near["far_mean_abs_ate"] > 0
    assert near["far_distance"] == 16 and 0 < near["far_nonzero_share"] < 100
    far = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=sc["label"],
                       config=PdCRConfig(n=6, far_distance=60)).stats
    assert far["far_share"] == 0 and far["n_far_blocks"] < near["n_far_blocks"]
    default = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=sc["label"], config=PdCRConfig(n=6)).stats
    assert default["far_distance"] == 32


def test_per_contrast_pdcr_perturbs_one_channel_and_finds_only_the_channel_the_cue_is_read_from():
    """A two-channel image; the model reads the object from channel 0 and the cue from channel 1 only: perturbing
    channel 1 alone finds the cue, perturbing channel 0 alone finds nothing outside the RoI."""
    import torch

    class TwoChannelCue(torch.nn.Module):
        def forward(self, x):
            cue = x[:, 1:2, km.CUE[0], km.CUE[1]].mean(dim=(1, 2, 3))[:, None, None, None]
            logit = 10 * (x[:, :1] - 0.5) + 6 * cue
            return torch.cat([torch.zeros_like(logit), logit], dim=1)

    sc = km.cue_scene()
    img = np.concatenate([sc["image"], sc["image"]])
    model = SegmentationModel(TwoChannelCue(), device="cpu")
    pool = pool_from_arrays(model, [np.zeros((2, 32, 32), np.float32)])
    roi = roi_from_box((64, 64), 8, 8, 24, 24)
    maps = {c: explain_pdcr(model, img, roi, 1, pool=pool, label=sc["label"], config=PdCRConfig(n=4, contrast=c)).map
            for c in (0, 1)}
    assert (maps[1][km.CUE] < 0).all()
    assert np.nansum(np.abs(maps[0])) == 0, "the model reads nothing but the object from channel 0"
    with pytest.raises(UserError, match="contrast 2 does not exist"):
        explain_pdcr(model, img, roi, 1, pool=pool, label=sc["label"], config=PdCRConfig(n=4, contrast=2))
