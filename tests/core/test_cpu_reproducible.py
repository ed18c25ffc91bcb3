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
    finally:
        torch.set_num_threads(before)
    setup[0].set_speed(cpu_workers=0)
