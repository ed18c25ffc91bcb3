"""PdCR's opt-in speed modes on the planted-cue model (tests/known_models.py): adaptive N, several RoIs per run,
hierarchical screening in 2-D, the early coarse map. No timed assertions: forward passes are counted."""

from __future__ import annotations

import numpy as np
import pytest

import known_models as km
from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr, explain_pdcr_multi
from napari_seg_explain.core.explainers.pdcr_agreement import agreement
from napari_seg_explain.core.explainers.pdcr_run import settled
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.rois import roi_from_box


def _setup(label=True):
    sc = km.cue_scene(object_value=None if label else 0.7)
    model = SegmentationModel(km.CueModel(), device="cpu")
    pool = pool_from_arrays(model, km.dark_pool_images())
    roi = roi_from_box((km.H, km.W), *sc["box"])
    return model, sc, pool, roi, (sc["label"] if label else None)


def _rest(amap):
    rest = amap.copy()
    rest[km.CUE] = rest[km.SUPPRESSOR] = 0
    return rest[np.isfinite(rest)]


@pytest.mark.parametrize("label", [True, False], ids=["hard-dice-vs-label", "soft-dice-vs-own"])
def test_adaptive_n_keeps_cue_and_suppressor_and_zeros_with_fewer_passes(label):
    model, sc, pool, roi, lab = _setup(label)
    run = {a: explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=lab, config=PdCRConfig(n=40, adaptive=a))
           for a in (False, True)}
    fast, exact = run[True], run[False]
    assert (fast.map[km.CUE] < 0).all() and (fast.map[km.SUPPRESSOR] > 0).all()
    assert np.all(_rest(fast.map) == 0.0), "blocks the model ignores stay exactly 0"
    assert fast.stats["forward_passes"] < exact.stats["forward_passes"]
    s = fast.stats
    assert s["adaptive_passes_exact"] == 2 * 40 and s["adaptive_passes_saved"] > 0
    assert s["passes_estimation"] + s["adaptive_passes_saved"] == exact.stats["passes_estimation"]
    assert s["forward_passes"] == 1 + s["passes_screening"] + s["passes_estimation"]
    assert any("Adaptive N" in d for d in fast.deviations) and not any("Adaptive" in d for d in exact.deviations)
    ag = agreement(exact, fast)
    assert ag["sign_agreement"] == 1.0 and ag["top_k_overlap"] == 1.0 and ag["pearson"] > 0.99


def test_sequential_test_settles_irrelevant_relevant_and_waits_otherwise():
    import torch

    mean = torch.tensor([0.001, 5.0, 0.05, 5.0])
    se = torch.tensor([0.001, 0.1, 0.05, 2.0])
    # irrelevant (|m| + z se < tau), relevant and precise, undecided, relevant but imprecise
    assert settled(mean, se, tau=0.02, z=2.58, rel_se=0.1, tol=0.01).tolist() == [True, True, False, False]
    assert settled(mean, se, tau=0.02, z=2.58, rel_se=0.1, tol=0.2).tolist() == [True, True, True, False]


def test_adaptive_draws_are_a_prefix_of_the_exact_runs_draws():
    """A sequential test that never settles draws N for every block: the same map and passes as exact mode."""
    model, sc, pool, roi, lab = _setup(label=False)
    cfg = dict(n=25, seed=4, batch_size=6)
    exact = explain_pdcr(model, sc["image"], roi, 1, pool=pool, config=PdCRConfig(**cfg))
    never = explain_pdcr(model, sc["image"], roi, 1, pool=pool,
                         config=PdCRConfig(**cfg, adaptive=True, adaptive_z=10, adaptive_se=0, adaptive_tol=0))
    np.testing.assert_allclose(np.nan_to_num(never.map, nan=9), np.nan_to_num(exact.map, nan=9), atol=1e-4)
    assert never.stats["forward_passes"] == exact.stats["forward_passes"]
    assert never.stats["adaptive_passes_saved"] == 0 and never.stats["adaptive_blocks_at_n"] == 2


def _two_rois():
    model, sc, pool, roi, lab = _setup()
    roi2 = roi_from_box((km.H, km.W), 32, 8, 40, 24)  # a second RoI (the object's class, its own label)
    lab2 = np.zeros_like(lab)
    lab2[32:40, 8:24] = 1
    img = sc["image"].copy()
    img[0, 32:40, 8:24] = img[0, 8, 8:24]  # the same ramp: the cue and suppressor shift it too
    return model, img, pool, (roi, roi2), (lab, lab2)


@pytest.mark.parametrize("adaptive", [False, True], ids=["exact", "adaptive"])
def test_several_rois_in_one_run_equal_one_roi_runs_bit_for_bit(adaptive):
    """Each RoI's map is its own one-RoI run's, the other RoIs' blocks included (perturbed for it), and the
    run costs the union of the blocks past screening, not the sum."""
    model, img, pool, rois, labs = _two_rois()
    cfg = PdCRConfig(n=8, seed=5, batch_size=7, adaptive=adaptive, min_draws=2)
    both = explain_pdcr_multi(model, img, list(rois), [1, 1], labels=list(labs), pool=pool, config=cfg)
    alone = [explain_pdcr(model, img, r, 1, label=lb, pool=pool, config=PdCRConfig(n=8, seed=5, batch_size=3,
                                                                                   adaptive=adaptive, min_draws=2))
             for r, lb in zip(rois, labs)]
    for k, (b, a) in enumerate(zip(both, alone)):
        np.testing.assert_array_equal(np.nan_to_num(b.map, nan=9), np.nan_to_num(a.map, nan=9))
        assert (b.map[km.CUE] < 0).all() and (b.map[km.SUPPRESSOR] > 0).all()
        assert np.isnan(b.map[rois[k]]).all() and np.isfinite(b.map[rois[1 - k]]).all(), "no hole at the other RoI"
        for key in ("n_blocks", "n_blocks_screened", "n_blocks_screened_in", "negative_share", "far_share"):
            assert b.stats[key] == a.stats[key], key
    cost = both[0].stats["forward_passes"]
    assert cost == both[1].stats["forward_passes"] < alone[0].stats["forward_passes"] + alone[1].stats["forward_passes"]
    assert any("2 RoIs" in d for d in both[0].deviations)


def test_an_excluded_region_is_not_perturbed_for_any_roi():
    model, img, pool, rois, labs = _two_rois()
    exclude = np.zeros_like(rois[0])
    exclude[0:8, 56:64] = True
    cfg = PdCRConfig(n=4, seed=1)
    both = explain_pdcr_multi(model, img, list(rois), [1, 1], labels=list(labs), pool=pool, config=cfg,
                              exclude=exclude)
    for b in both:
        assert np.isnan(b.map[exclude]).all()
    alone = explain_pdcr_multi(model, img, [rois[0]], 1, labels=[labs[0]], pool=pool, config=cfg, exclude=exclude)
    np.testing.assert_array_equal(np.nan_to_num(both[0].map, nan=9), np.nan_to_num(alone[0].map, nan=9))


@pytest.mark.parametrize("factor", [2, 4], ids=["16px", "32px"])
def test_hierarchical_screening_in_2d_finds_the_planted_cue(factor):
    model, sc, pool, roi, lab = _setup()
    exact = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=lab, config=PdCRConfig(n=6))
    hier = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=lab,
                        config=PdCRConfig(n=6, screening="hierarchical", coarse_factor=factor))
    assert hier.stats["screening"] == "hierarchical" and exact.stats["screening"] == "exact"
    assert (hier.map[km.CUE] < 0).all() and (hier.map[km.SUPPRESSOR] > 0).all()
    assert np.all(_rest(hier.map) == 0.0)
    assert hier.stats["forward_passes"] < exact.stats["forward_passes"]
    assert hier.stats["passes_coarse_screening"] > 0
    assert agreement(exact, hier)["sign_agreement"] == 1.0


def test_a_whole_coarse_map_streams_before_the_end():
    model, sc, pool, roi, lab = _setup()
    events = []
    expl = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=lab, progress=events.append,
                        config=PdCRConfig(n=20, batch_size=4, preview=True))
    whole = [i for i, e in enumerate(events) if e.partial is not None and np.isfinite(e.partial[~roi]).all()]
    first = whole[0]
    assert first < len(events) - 1 and events[first].stage == "screening"
    assert events[first].done < events[-1].done
    assert (events[first].partial[km.CUE] < 0).all(), "the screening mean already shows the cue"
    assert 0 < expl.stats["first_map_seconds"] <= expl.provenance["wall_time_s"]
    plain = explain_pdcr(model, sc["image"], roi, 1, pool=pool, label=lab, config=PdCRConfig(n=20, batch_size=4))
    np.testing.assert_array_equal(np.nan_to_num(plain.map, nan=9), np.nan_to_num(expl.map, nan=9))
