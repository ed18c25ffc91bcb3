"""The batched engine, the RoI score and N-D perturbation, against models whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_seg_explain.core.engine import CPU_CANDIDATES, PARALLEL_CANDIDATES, Engine
from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
from napari_seg_explain.core.modelcard import ModelCard
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.grid import BlockGrid, blocks_touching
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.progress import drive
from napari_seg_explain.core.rois import roi_from_bounds
from napari_seg_explain.core.score import RoIScore


class Doubler(nn.Module):
    """Two-class logits from a conv: class 1 where the image is bright. Refuses batches above ``limit`` with a
    real ``torch.OutOfMemoryError`` (what CUDA raises), to exercise the back-off."""

    def __init__(self, limit: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.limit = limit
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.fill_(-0.5)

    def forward(self, x):
        if self.limit is not None and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        logit = 20 * self.conv(x)
        return torch.cat([-logit, logit], dim=1)


def _images(n=37, size=24, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 1, size, size)).astype(np.float32)


def _run(engine, model, x):
    xt = torch.as_tensor(x)
    return drive(engine.run(len(x), lambda a, b: model.normalize(xt[a:b]), lambda p: p[:, 1].mean(dim=(1, 2)),
                            shape=tuple(x.shape[1:])))


def test_auto_batch_size_times_candidates_keeps_the_fastest_and_caches_it():
    model = SegmentationModel(Doubler(), device="cpu")
    x = _images(400)  # enough for every candidate, each timed on two steps, with one worker or several
    engine = Engine(model, 0)
    auto = _run(engine, model, x)
    fixed = _run(Engine(model, 5), model, x)
    torch.testing.assert_close(auto, fixed)
    d = engine.describe()
    cands = PARALLEL_CANDIDATES if engine.workers > 1 else CPU_CANDIDATES
    assert d["batch_mode"] == "auto" and set(d["batch_timings_ms_per_image"]) == {str(c) for c in cands[1:]} | {
        str(c) for c in cands[:1] if c in engine.timings}
    best = min(engine.timings, key=engine.timings.get)
    assert d["batch_size"] == best == model.batch_sizes[(1, 24, 24, None, engine.workers)]
    assert d["cpu_workers"] == engine.workers
    again = Engine(model, 0)
    _run(again, model, x[:10])
    assert again.size == best and not again.timings, "a second run on the same shape reuses the choice"


def test_out_of_memory_halves_the_batch_and_gives_the_same_scores():
    model = SegmentationModel(Doubler(limit=3), device="cpu")
    x = _images(20)
    engine = Engine(model, 16)
    out = _run(engine, model, x)
    ref = _run(Engine(SegmentationModel(Doubler(), device="cpu"), 1), SegmentationModel(Doubler(), device="cpu"), x)
    torch.testing.assert_close(out, ref)
    per_worker = -(-engine.size // engine.workers)  # a fixed size is the images per step, shared by the workers
    assert per_worker <= 3 < -(-2 * engine.size // engine.workers) and model.forward_passes == 20


class Huge(Doubler):
    """Refuses batches above ``limit`` as CUDA kernels refuse tensors of over 2^31 elements."""

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise RuntimeError("input tensor must fit into 32-bit index math")
        return super().forward(x)


def test_a_batch_too_large_for_32_bit_indexing_is_halved_like_out_of_memory():
    from napari_seg_explain.core.errors import IncompatibleInputError

    model = SegmentationModel(Huge(limit=5), device="cpu").set_speed(cpu_workers=1)
    x = _images(20)
    engine = Engine(model, 16)
    torch.testing.assert_close(_run(engine, model, x), _run(Engine(model, 1), model, x))
    assert engine.size == 4
    with pytest.raises(IncompatibleInputError, match="32-bit index"):  # even one image: the model's own limit
        SegmentationModel(Huge(limit=0), device="cpu").predict(x[0], batch_size=1)


def test_early_stop_and_progress_counts():
    model = SegmentationModel(Doubler(), device="cpu").set_speed(cpu_workers=1)  # one batch per step
    x = _images(30)
    xt = torch.as_tensor(x)
    events = []
    gen = Engine(model, 4).run(30, lambda a, b: model.normalize(xt[a:b]), lambda p: p[:, 1].mean(dim=(1, 2)),
                               until=lambda s, done: done >= 8, total=30)
    out = drive(gen, events.append)
    assert [e.done for e in events] == [4, 8] and torch.isnan(out[8:]).all() and model.forward_passes == 8


class Slow(nn.Module):
    """A real network whose forward runs long enough for two worker threads to overlap."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                                 nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def test_cpu_workers_run_groups_side_by_side_with_the_same_scores_counts_and_threads_restored():
    import threading

    x = _images(37, size=32)
    ref_model = SegmentationModel(Slow(), device="cpu").set_speed(cpu_workers=1)
    ref = _run(Engine(ref_model, 4), ref_model, x)
    model = SegmentationModel(Slow(), device="cpu").set_speed(cpu_workers=3)
    threads_before = torch.get_num_threads()
    seen: set[str] = set()
    xt = torch.as_tensor(x)

    def score(p):
        seen.add(threading.current_thread().name)
        assert torch.get_num_threads() == 1, "workers run single-threaded kernels"
        return p[:, 1].mean(dim=(1, 2))

    events = []
    engine = Engine(model, 12)  # a fixed size is the images per step: 3 workers x 4
    out = drive(engine.run(37, lambda a, b: model.normalize(xt[a:b]), score, total=37), events.append)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert model.forward_passes == 37 and engine.workers == 3 and engine.describe()["cpu_workers"] == 3
    assert [e.done for e in events] == [12, 24, 36, 37], "one progress event per group of 3 batches of 4"
    assert len({n for n in seen if n.startswith("seg-explain-cpu")}) >= 2
    assert torch.get_num_threads() == threads_before
    # cancelled mid-run (the generator closed at a yield): threads restored, no worker left behind
    gen = Engine(model, 4).run(37, lambda a, b: model.normalize(xt[a:b]), score)
    next(gen)
    assert torch.get_num_threads() == 1
    gen.close()
    assert torch.get_num_threads() == threads_before
    assert not [t for t in threading.enumerate() if t.name.startswith("seg-explain-cpu")]
    # one image in all (segmenting a slice or a whole volume): every core on it, no worker threads
    seen_threads = []
    drive(Engine(model, 0).run(1, lambda a, b: model.normalize(xt[a:b]),
                               lambda p: seen_threads.append(torch.get_num_threads()) or p[:, 1].mean(dim=(1, 2))))
    assert seen_threads == [threads_before]


def test_cpu_workers_default_to_the_cores_and_stay_off_for_onnx_and_cuda_and_pinned_dataset_runs():
    from napari_seg_explain.core.cpu_parallel import MAX_AUTO_WORKERS, cpu_workers, split

    model = SegmentationModel(Slow(), device="cpu")
    assert cpu_workers(model) == max(1, min(torch.get_num_threads(), MAX_AUTO_WORKERS))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what a dataset run's worker does: one thread, one batch at a time
        assert cpu_workers(model) == 1
    finally:
        torch.set_num_threads(before)
    model.is_onnx = True
    assert cpu_workers(model) == 1
    assert split(0, 10, 3, 4) == [(0, 4), (4, 7), (7, 10)]
    assert split(5, 3, 4, 8) == [(5, 6), (6, 7), (7, 8)]  # a short last group still uses every worker
    assert split(0, 1, 4, 8) == [(0, 1)]
    with pytest.raises(Exception, match="cpu workers must be >= 0"):
        model.set_speed(cpu_workers=-1)


def test_roi_score_many_rois_in_one_pass_equal_one_at_a_time():
    rng = np.random.default_rng(1)
    probs = torch.as_tensor(rng.uniform(size=(5, 3, 16, 16)).astype(np.float32)).softmax(dim=1)
    rois = [np.zeros((16, 16), bool) for _ in range(3)]
    rois[0][2:8, 2:8] = True
    rois[1][5:12, 5:12] = True  # overlaps RoI 0
    rois[2][10:, :4] = True
    label = (rng.uniform(size=(16, 16)) > 0.5).astype(np.uint8)
    labels = [label, None, label]
    both = RoIScore(rois, [1, 2, 1], labels=labels)
    m0 = both.prepare(probs[:1])
    together = both(probs)
    for r in range(3):
        one = RoIScore(rois[r], [1, 2, 1][r], labels=labels[r])
        assert float(one.prepare(probs[:1])[0]) == pytest.approx(float(m0[r]))
        torch.testing.assert_close(one(probs)[:, 0], together[:, r])
    assert both.metrics == ["dice_vs_label", "soft_dice_vs_own_prediction", "dice_vs_label"]


def test_blocks_touching_and_paint_in_3d():
    mask = np.zeros((10, 12, 9), bool)
    mask[4, 5, 0] = True
    t = blocks_touching(mask, 4)
    assert t.shape == (3, 3, 3) and t.sum() == 1 and t[1, 1, 0]
    grid = BlockGrid(mask.shape, 4, mask)
    assert grid.n_blocks == 26 and grid.partial_edges
    painted = grid.paint(np.arange(26, dtype=np.float32))
    assert painted.shape == mask.shape and np.isnan(painted[4:8, 4:8, 0:4]).all()
    assert painted[9, 11, 8] == 25 and painted[0, 0, 0] == 0


class Cue3D(nn.Module):
    """3-D: object = voxels brighter than 0.5, shifted up by the mean of a cue cube far from the object."""

    def forward(self, x):
        cue = x[:, :, 12:16, 12:16, 12:16].mean(dim=(1, 2, 3, 4))[:, None, None, None, None]
        logit = 10 * (x[:, :1] - 0.5) + 6 * cue
        return torch.cat([torch.zeros_like(logit), logit], dim=1)


def test_pdcr_3d_finds_the_planted_cue_and_nothing_else():
    img = np.zeros((1, 16, 16, 16), np.float32)
    img[0, 0:4, 0:4, 0:4] = np.linspace(0.3, 0.9, 4)[None, None, :]  # the object, a ramp
    img[0, 12:16, 12:16, 12:16] = 0.4  # the cue
    label = (img[0] > 0.35).astype(np.uint8)
    model = SegmentationModel(Cue3D(), ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    pool = pool_from_arrays(model, [np.zeros((1, 8, 8, 8), np.float32)])
    roi = roi_from_bounds((16, 16, 16), (0, 0, 0), (4, 4, 4))
    expl = explain_pdcr(model, img, roi, 1, pool=pool, label=label, config=PdCRConfig(patch=4, n=3, screen=2))
    assert expl.map.shape == (16, 16, 16)
    assert (expl.map[12:, 12:, 12:] < 0).all(), "the cue supports the RoI (negative ATE)"
    others = expl.map.copy()
    others[12:, 12:, 12:] = 0
    assert np.nansum(np.abs(others)) == 0 and np.isnan(expl.map[:4, :4, :4]).all()
    assert expl.stats["n_blocks"] == 63


class SlowPerImage(nn.Module):
    """Takes 10 ms per image (a stand-in for a big model on a CPU), output known: the image itself."""

    def forward(self, x):
        import time

        time.sleep(0.01 * x.shape[0])
        return torch.cat([-x, x], dim=1)


def test_batch_time_limit_keeps_batches_short_for_cancel():
    from napari_seg_explain.core.engine import with_batch_time_limit

    model = SegmentationModel(SlowPerImage(), device="cpu")
    x = _images(60, size=8)
    xt = torch.as_tensor(x)

    def job():  # as an explainer does: the engine is made when the generator starts, in the driving thread
        return (yield from Engine(model, 0).run(60, lambda a, b: xt[a:b], lambda p: p[:, 1].mean(dim=(1, 2)),
                                                shape=(1, 8, 8)))

    out = drive(with_batch_time_limit(job(), 0.1))
    torch.testing.assert_close(out, torch.sigmoid(2 * xt).mean(dim=(1, 2, 3)))  # softmax of (-x, x)
    chosen = model.batch_sizes[(1, 8, 8, 0.1, Engine(model).workers)]
    assert chosen <= 8, "16 images would take 0.16 s per batch: never tried"
    with_limit = Engine(model, 0)
    assert with_limit.max_batch_seconds is None, "the limit holds only while the wrapped generator runs"


def test_pdcr_3d_anisotropic_blocks_from_the_cli_form():
    """--patch 2 4 4: blocks of 2 slices x 4 x 4. Half the cue removed (one block) lowers the offset just enough to
    drop the over-segmented 0.3 voxels and keep the 0.5 ones: Dice vs the label rises, so the ATE is positive
    (the whole cue removed at once, as with 4x4x4 blocks, also drops the 0.5 voxels: negative)."""
    from napari_seg_explain.core.explainers import registry

    img = np.zeros((1, 16, 16, 16), np.float32)
    img[0, 0:4, 0:4, 0:4] = np.linspace(0.3, 0.9, 4)[None, None, :]
    img[0, 12:16, 12:16, 12:16] = 0.4
    label = (img[0] > 0.35).astype(np.uint8)
    model = SegmentationModel(Cue3D(), ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    pool = pool_from_arrays(model, [np.zeros((1, 8, 8, 8), np.float32)], block=(2, 4, 4))
    roi = roi_from_bounds((16, 16, 16), (0, 0, 0), (4, 4, 4))
    cfg = registry.get("pdcr").make_config(patch=[2, 4, 4], n=3, screen=2)
    assert cfg.patch == (2, 4, 4)
    expl = explain_pdcr(model, img, roi, 1, pool=pool, label=label, config=cfg)
    assert expl.stats["n_blocks"] == 8 * 4 * 4 - 2 and (expl.map[12:, 12:, 12:] > 0).all()
    others = expl.map.copy()
    others[12:, 12:, 12:] = 0
    assert np.nansum(np.abs(others)) == 0
    with pytest.raises(Exception, match="patch"):
        PdCRConfig(patch=(0, 4, 4))


# ------------------------------------------------------------------ speed options (CUDA; no-ops on the CPU)
def test_mixed_shape_pool_keeps_one_unpadded_group_per_shape_and_crops_as_the_padded_stack():
    model = SegmentationModel(Doubler(), device="cpu")
    rng = np.random.default_rng(3)
    arrays = [rng.uniform(size=s).astype(np.float32) for s in [(8, 8), (20, 20), (8, 8), (12, 30), (8, 8)]]
    pool = pool_from_arrays(model, arrays, block=8)
    assert sorted(tuple(g.shape) for g in pool.groups) == [(1, 1, 12, 30), (1, 1, 20, 20), (3, 1, 8, 8)]
    padded = pool.images  # (5, 1, 20, 30), built on demand
    assert padded.shape == (5, 1, 20, 30)
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(padded[i, 0, :a.shape[0], :a.shape[1]].numpy(), a)
    draws = pool.draw(200, 8, torch.Generator().manual_seed(0))
    which = draws[:, 0].reshape(-1, 1, 1)
    from napari_seg_explain.core.perturb.grid import block_index

    expected = padded[(which, slice(None)) + block_index(draws[:, 1:], 8)]
    torch.testing.assert_close(pool.crops(draws, 8), expected, rtol=0, atol=0)
    bound = pool.bind(model, torch.as_tensor(arrays[1])[None, None] * 3)
    torch.testing.assert_close(bound.crops(draws, 8), expected, rtol=0, atol=0)  # normalisation 'none'


def test_speed_options_are_recorded_and_are_no_ops_on_the_cpu():
    model = SegmentationModel(Doubler(), device="cpu")
    x = _images(20)
    ref = _run(Engine(model, 4), model, x)
    model.set_speed(channels_last=True, compile=True, pin_memory=True, amp_dtype="bf16")
    engine = Engine(model, 4, amp=True)
    out = _run(engine, model, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    speed = engine.describe()["speed"]
    assert speed["amp"].startswith("off (CPU") and speed["compile"] == "off (CPU: no-op)"
    assert speed["channels_last"] == speed["pin_memory"] == "off (CPU: no-op)"
    assert model.describe()["speed"]["amp"] == "off" and model.amp_dtype == "bfloat16"
    with pytest.raises(Exception, match="amp dtype"):
        model.set_speed(amp_dtype="int8")


def test_a_failing_compiled_network_falls_back_to_eager_with_a_recorded_warning():
    model = SegmentationModel(Doubler(), device="cpu")
    x = _images(9)
    ref = _run(Engine(model, 3), model, x)

    def broken(_x):
        raise RuntimeError("inductor: no compiler (test)")

    model._compile_requested, model._compiled = True, broken  # what set_speed(compile=True) leaves on CUDA
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = _run(Engine(model, 3), model, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert model._compiled is None and "inductor" in model.speed_notes[0]
    assert "fell back" in model.speed_info()["compile"] or "CPU" in model.speed_info()["compile"]


def test_speed_options_on_the_test_device_match_exact_mode(test_device):
    """On CUDA (SEG_EXPLAIN_TEST_DEVICE=cuda): channels_last, pinned host batches and compile give the exact
    mode's probabilities (to float tolerance), amp in bf16/fp16 to a loose one; on the CPU: identical."""
    x = _images(33, size=32)
    exact = SegmentationModel(Doubler(), device=test_device).predict(x, batch_size=8, amp=False)
    fast = SegmentationModel(Doubler(), device=test_device).set_speed(channels_last=True, pin_memory=True)
    np.testing.assert_allclose(fast.predict(x, batch_size=8, amp=False), exact, atol=1e-5)
    lab = SegmentationModel(Doubler(), device=test_device).set_speed(pin_memory=True).segment_batches(x, batch_size=8)
    sure = np.abs(exact[:, 1] - 0.5) > 0.05  # segmentation runs in amp on CUDA: pixels at 0.5 may flip
    np.testing.assert_array_equal(drive(lab)[sure], (exact[:, 1] > 0.5)[sure].astype(np.uint8))
    for dtype in ("float16", "bfloat16"):
        amp = SegmentationModel(Doubler(), device=test_device).predict(x, batch_size=8, amp=dtype)
        np.testing.assert_allclose(amp, exact, atol=0.05)
    comp = SegmentationModel(Doubler(), device=test_device).set_speed(compile=True)
    with warnings_allowed():
        np.testing.assert_allclose(comp.predict(x, batch_size=8, amp=False), exact, atol=1e-4)


def test_pdcr_on_the_test_device_with_speed_options_matches_the_cpu_map(test_device):
    """The seeded draws are the same on any device: the map on the test device (with channels_last and
    pinned memory) equals the CPU's (CUDA: to float tolerance)."""
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(1, 48, 48)).astype(np.float32)
    image[0, 16:32, 16:32] += 1.0
    roi = np.zeros((48, 48), bool)
    roi[20:28, 20:28] = True
    pool = [rng.uniform(size=(1, 16, 16)).astype(np.float32) for _ in range(20)]
    cfg = PdCRConfig(n=4, screen=2, tau=0.0, batch_size=16, seed=3)
    maps = []
    for dev in ("cpu", test_device):
        model = SegmentationModel(Doubler(), device=dev).set_speed(channels_last=True, pin_memory=True)
        expl = explain_pdcr(model, image, roi, 1, pool=pool_from_arrays(model, pool), config=cfg)
        maps.append(expl.map)
        assert "speed" in expl.provenance
    np.testing.assert_allclose(maps[1], maps[0], atol=1e-5, equal_nan=True)


class warnings_allowed:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


class OneAtATime(Doubler):
    """A network traced for one image: refuses any other batch."""

    def forward(self, x):
        if x.shape[0] != 1:
            raise RuntimeError(f"expected a batch of 1, got {x.shape[0]}")
        return super().forward(x)


def test_a_model_that_takes_one_image_still_runs_a_lone_image():
    """A lone image runs beside a copy of itself on the CPU (same kernels as a batch); a model that refuses two
    gets it alone, through the engine and through predict."""
    model = SegmentationModel(OneAtATime(), device="cpu")
    x = _images(3)
    out = _run(Engine(model, 1), model, x)
    assert out.shape == (3,) and model.forward_passes == 3
    assert model.predict(x[0]).shape == (2, 24, 24)
