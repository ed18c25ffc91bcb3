"""Jobs that share one PdCR run (core.jobs.group_jobs / run_group / run_jobs): which jobs group, results in order,
each with its own run id, maps equal to one-RoI runs, the shared-run note kept through save/load. No Qt."""

from __future__ import annotations

import numpy as np
import pytest

import known_models as km
from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
from napari_seg_explain.core.jobs import ExplainJob, group_jobs, group_tag, run_jobs
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.results import Explanation
from napari_seg_explain.core.rois import roi_from_box

CFG = PdCRConfig(n=4, screen=1, patch=8, seed=3)
BOXES = [(8, 8, 16, 16), (8, 16, 16, 24), (16, 8, 24, 24)]  # three RoIs on the object


@pytest.fixture(scope="module")
def scene():
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    pool = pool_from_arrays(model, km.dark_pool_images())
    return model, sc["image"], pool, sc["label"]


def _job(image, box, method="pdcr", config=CFG, pool=None, pool_key="", z=4, **kw) -> ExplainJob:
    roi = roi_from_box((km.H, km.W), *box) if box is not None else None
    k = BOXES.index(box) + 1 if box in BOXES else 9
    if method != "pdcr":
        config = None
    return ExplainJob(method, image, roi, 1, config, pool=pool, pool_key=pool_key,
                      geometry={"source": "cue.nii", "slice_index": z}, roi_name=f"RoI {k}", **kw)


def test_grouping_rules_keep_the_order(scene):
    model, image, pool, _ = scene
    same = [_job(image, b, pool=pool) for b in BOXES]
    assert group_jobs(same) == [[0, 1, 2]]
    assert group_tag(same, [0, 1, 2]) == "PdCR RoI 1-3 (1-3/3)" and group_tag(same, [1]) == "PdCR RoI 2 (2/3)"
    # an equal copy of the image, an equal pool recipe's key: still one group
    a, b = _job(image, BOXES[0], pool=lambda m, p: pool, pool_key="dark"), _job(image.copy(), BOXES[1],
                                                                               pool=lambda m, p: pool, pool_key="dark")
    assert group_jobs([a, b]) == [[0, 1]]
    other = image.copy()
    other[0, 0, 0] += 1
    apart = {
        "config": _job(image, BOXES[1], config=PdCRConfig(n=5, screen=1, patch=8, seed=3), pool=pool),
        "image": _job(other, BOXES[1], pool=pool),
        "pool": _job(image, BOXES[1], pool=pool_from_arrays(model, [np.zeros((1, 40, 40), np.float32)])),
        "pool key": _job(image, BOXES[1], pool=lambda m, p: pool, pool_key="other"),
        "slice": _job(image, BOXES[1], pool=pool, z=5),
        "crop": _job(image, BOXES[1], pool=pool, crop=(slice(0, 64), slice(0, 64)), full_shape=(64, 64)),
        "method": _job(image, None, method="misure"),
    }
    for what, job in apart.items():
        assert group_jobs([same[0], job]) == [[0], [1]], what
    # interleaved: groups in the order of their first job, members in their own order
    assert group_jobs([same[0], apart["slice"], same[1], apart["config"], same[2]]) == [[0, 2, 4], [1], [3]]
    # hierarchical screening (opt-in in 2-D, auto in 3-D) judges coarse blocks for all RoIs together: no sharing
    hier = PdCRConfig(n=4, screen=1, patch=8, seed=3, screening="hierarchical")
    assert group_jobs([_job(image, b, config=hier, pool=pool) for b in BOXES[:2]]) == [[0], [1]]
    vol = np.zeros((1, 16, 16, 16), np.float32)
    cubes = [np.zeros((16, 16, 16), bool) for _ in range(2)]
    cubes[0][:4, :4, :4] = cubes[1][8:, 8:, 8:] = True
    assert group_jobs([ExplainJob("pdcr", vol, c, 1, PdCRConfig(patch=4), pool=pool) for c in cubes]) == [[0], [1]]
    assert group_jobs([ExplainJob("pdcr", vol, c, 1, PdCRConfig(patch=4, screening="exact"), pool=pool)
                       for c in cubes]) == [[0, 1]]
    # different classes and labels may share a run
    lab = np.zeros((km.H, km.W), np.uint8)
    assert group_jobs([same[0], _job(image, BOXES[1], pool=pool, label=lab)]) == [[0, 1]]


def test_shared_run_gives_each_job_its_result_in_order(scene, tmp_path):
    """Three RoIs in one run: results in the jobs' order, each with its own run id and RoI, the shared run noted
    (and kept through save/load), fewer passes than three runs, each map the one of a one-RoI run."""
    model, image, pool, label = scene
    jobs = [_job(image, b, pool=pool, label=label) for b in BOXES]
    stages = []
    shared = run_jobs(model, jobs, progress=lambda ev: stages.append(ev.stage))
    assert all(s.startswith("PdCR RoI 1-3 (1-3/3): ") for s in stages)
    assert [e.run["id"] for e in shared] == [j.run_id(model) for j in jobs]
    assert [e.run["roi_name"] for e in shared] == ["RoI 1", "RoI 2", "RoI 3"]
    for e, j in zip(shared, jobs):
        np.testing.assert_array_equal(e.roi, j.roi)
        assert e.stats["shared_run_rois"] == 3
    single = [explain_pdcr(model, image, j.roi, 1, pool=pool, label=label, config=CFG) for j in jobs]
    assert shared[0].stats["forward_passes"] < sum(e.stats["forward_passes"] for e in single)
    separate = run_jobs(model, jobs, share=False)
    assert all("shared_run_rois" not in e.stats for e in separate)
    for a, b in zip(separate, single):
        np.testing.assert_array_equal(a.map, b.map)
    shared[1].save(tmp_path / "roi2.npy")
    assert Explanation.load(tmp_path / "roi2.npy").stats["shared_run_rois"] == 3
    for e, one in zip(shared, single):  # the core's promise: each RoI's map is its one-RoI run's, bit for bit
        np.testing.assert_array_equal(e.map, one.map)


def test_shared_adaptive_run_gives_the_one_roi_maps(scene):
    """Adaptive N in a shared run: each RoI's map is still its one-RoI run's (its estimate frozen where its own
    test settles)."""
    model, image, pool, label = scene
    cfg = PdCRConfig(n=20, screen=1, patch=8, seed=5, adaptive=True, min_draws=5)
    jobs = [_job(image, b, config=cfg, pool=pool, label=label) for b in BOXES]
    assert group_jobs(jobs) == [[0, 1, 2]]
    for shared, job in zip(run_jobs(model, jobs), jobs):
        one = explain_pdcr(model, image, job.roi, 1, pool=pool, label=label, config=cfg)
        np.testing.assert_array_equal(shared.map, one.map)


def test_each_result_of_a_shared_run_keeps_its_own_geometry_only(scene):
    model, image, pool, label = scene
    a, b = _job(image, BOXES[0], pool=pool, label=label), _job(image, BOXES[1], pool=pool, label=label)
    a.geometry = {**a.geometry, "roi_box": [8, 8, 16, 16]}
    b.geometry = {**b.geometry, "roi_polygon": [[8, 16], [16, 24]]}
    ra, rb = run_jobs(model, [a, b])
    assert rb.stats["shared_run_rois"] == 2
    assert "roi_box" not in rb.geometry and rb.geometry["roi_polygon"] == [[8, 16], [16, 24]]
    assert ra.geometry["roi_box"] == [8, 8, 16, 16] and "roi_polygon" not in ra.geometry


def test_a_shared_run_that_fails_on_one_roi_names_that_job(scene):
    from napari_seg_explain.core.errors import UserError

    model, image, pool, label = scene
    empty = np.zeros_like(label)  # a ground truth with nothing of the class under the second RoI
    jobs = [_job(image, BOXES[0], pool=pool, label=label), _job(image, BOXES[1], pool=pool, label=empty)]
    jobs[1].roi_name = "RoI 7"
    with pytest.raises(UserError, match=r"^RoI 7: the label has no pixel of class 1 inside the RoI"):
        run_jobs(model, jobs)
