"""On the CPU a seed gives the same map bit for bit whatever the batch size and however many worker threads
run batches side by side (cpu_parallel.py, engine.MAX_WORKER_CALL), on the real sample model (instance norm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
from napari_seg_explain.core.images import read_image
from napari_seg_explain.core.models import load_model
from napari_seg_explain.core.perturb.pools import pool_from_volume
from napari_seg_explain.core.rois import roi_from_box
from napari_seg_explain.core.sample import SAMPLE_CARD, SAMPLE_VOLUME, sample_path


@pytest.fixture(scope="module")
def setup():
    image = read_image(sample_path(SAMPLE_VOLUME))
    model = load_model(sample_path(SAMPLE_CARD), device="cpu")
    plane = np.ascontiguousarray(image.slice2d(64)[:, 24:88, 16:80])  # 64 x 64 around white matter: 60 blocks
    pool = pool_from_volume(model, image, 64)
    return model, plane, pool, roi_from_box(plane.shape[1:], 24, 24, 40, 40)


def _map(setup, batch_size: int, workers: int) -> np.ndarray:
    model, plane, pool, roi = setup
    model.set_speed(cpu_workers=workers)
    model.batch_sizes.clear()
    cfg = PdCRConfig(n=5, screen=2, tau=0.0, seed=11, batch_size=batch_size)
    expl = explain_pdcr(model, plane, roi, 1, pool=pool, config=cfg)
    assert expl.provenance["cpu_workers"] == max(1, workers)
    return np.nan_to_num(expl.map, nan=9.0)


def test_same_seed_same_map_for_any_batch_size_and_worker_count(setup):
    ref = _map(setup, 8, 2)
    assert np.count_nonzero(ref[ref != 9.0]) > 50, "tau = 0: a real map with many non-zero blocks"
    for batch_size, workers in ((0, 2), (1, 2), (3, 3), (32, 2), (5, 4)):
        np.testing.assert_array_equal(_map(setup, batch_size, workers), ref,
                                      err_msg=f"batch {batch_size}, {workers} workers")
    # one worker on one thread: a one-core machine or a dataset run's worker
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        np.testing.assert_array_equal(_map(setup, 0, 0), ref)
        np.testing.assert_array_equal(_map(setup, 7, 0), ref)
        np.testing.assert_array_equal(_map(setup, 32, 0), ref)  # one thread too: calls of at most 8
    finally:
        torch.set_num_threads(before)
    setup[0].set_speed(cpu_workers=0)


@pytest.mark.parametrize("adaptive", [False, True], ids=["exact", "adaptive"])
def test_three_rois_in_one_run_give_each_roi_its_one_roi_runs_map_bit_for_bit(setup, adaptive):
    """On the sample model (instance norm couples every pixel, so draws vary the Dice of every RoI): a shared run
    of three RoIs, one of them overlapping another, equals three one-RoI runs bit for bit, and costs less."""
    from napari_seg_explain.core.explainers.pdcr import explain_pdcr_multi

    model, plane, pool, roi = setup
    model.set_speed(cpu_workers=0)
    # 256, 176 and 640 pixels (RoIs of different sizes: soft Dice sums over each RoI's own pixels alone)
    rois = [roi, roi_from_box(plane.shape[1:], 0, 0, 8, 22), roi_from_box(plane.shape[1:], 28, 30, 60, 50)]
    cfg = dict(n=12, screen=2, tau=0.0, seed=3, adaptive=adaptive, min_draws=3, adaptive_tol=0.05, preview=True)
    shared = explain_pdcr_multi(model, plane, rois, 1, pool=pool, config=PdCRConfig(**cfg, batch_size=16))
    for k, r in enumerate(rois):
        alone = explain_pdcr(model, plane, r, 1, pool=pool, config=PdCRConfig(**cfg, batch_size=5))
        np.testing.assert_array_equal(np.nan_to_num(shared[k].map, nan=9.0), np.nan_to_num(alone.map, nan=9.0),
                                      err_msg=f"RoI {k}")
        for key in ("M0", "n_blocks", "n_blocks_screened_in", "min_ate", "far_share", "far_mean_abs_ate"):
            assert shared[k].stats[key] == alone.stats[key], (k, key)
        assert shared[k].stats["forward_passes"] < 2 * alone.stats["forward_passes"]
    assert shared[0].stats["first_map_seconds"] is not None, "RoI 0's map was whole at some point"
    if adaptive:  # RoIs settle at different rounds: the shared run draws some blocks past where one RoI stopped
        assert shared[0].stats["adaptive_mean_draws"] > 3
