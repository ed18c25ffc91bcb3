"""One contract over every registered explainer: shapes, seeds, batch sizes, no mutation, progress."""

from __future__ import annotations

import numpy as np
import pytest

import known_models as km
from napari_seg_explain.core.errors import Cancelled
from napari_seg_explain.core.explainers import registry
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.progress import drive
from napari_seg_explain.core.rois import roi_from_box

SMALL = {"pdcr": {"n": 6, "screen": 2}, "misure": {"iterations": 10},
         "seg_gradcam": {"layer": "input"}, "rise": {"n_masks": 12}, "occlusion": {"fill": "blur"}}
SMALL_3D = {"pdcr": {"patch": 4}, "misure": {"param_size": 24},  # added for the 24^3 3-D scene
            "seg_gradcam": {}, "rise": {"cell": 4}, "occlusion": {"patch": 8}}
BUILTINS = sorted(SMALL)


def _gen(name, model, image, roi, config=None, **extra):
    spec = registry.get(name)
    return spec.run_generator(model, image, roi, 1, config=config, **extra)


def _cfg(name, **kw):
    return registry.get(name).config(**kw)


def _setup_3d(name):
    """The same contract on a 3-D model (tests/core/test_explain_3d.py's planted cue and suppressor)."""
    from test_explain_3d import Cue3DModel, scene

    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.rois import roi_from_bounds

    vol, label = scene(object_value=0.45 if name == "misure" else None, context=0.2 if name == "misure" else 0.4)
    net = Cue3DModel(gain=40, cue_w=12, supp_w=0) if name == "misure" else Cue3DModel()
    model = SegmentationModel(net, ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    roi = roi_from_bounds(vol.shape, (8, 8, 8), (16, 16, 12))
    extra = {}
    if name == "pdcr":
        levels = [np.full((1, 16, 16, 16), v, np.float32) for v in (0.0, 0.1, 0.2, 0.3, 0.35)]
        extra = {"pool": pool_from_arrays(model, levels), "label": label}
    return model, {"image": vol[None], "label": label}, roi, extra


def _setup(name, dims=2):
    if dims == 3:
        return _setup_3d(name)
    sc = km.cue_scene(object_value=0.45 if name == "misure" else None, context=0.2 if name == "misure" else 0.4)
    net = km.CueModel(gain=40, cue_w=12, supp_w=0) if name == "misure" else km.CueModel()
    model = SegmentationModel(net, device="cpu")
    roi = roi_from_box((64, 64), *sc["box"])
    extra = {}
    if name == "pdcr":
        levels = [np.full((1, 32, 32), v, np.float32) for v in (0.0, 0.1, 0.2, 0.3, 0.35)]
        extra = {"pool": pool_from_arrays(model, levels),  # which image is drawn changes dDice
                 "label": sc["label"]}
    return model, sc, roi, extra


def _run(name, batch_size=None, seed=0, progress=None, dims=2):
    model, sc, roi, extra = _setup(name, dims)
    kw = dict(SMALL[name], seed=seed) | (SMALL_3D[name] if dims == 3 else {})
    if batch_size:
        kw["batch_size"] = batch_size
    img = sc["image"]
    before = img.copy(), roi.copy()
    gen = _gen(name, model, img, roi, config=_cfg(name, **kw), **extra)
    expl = drive(gen, progress)
    assert np.array_equal(img, before[0]) and np.array_equal(roi, before[1]), "inputs must not be mutated"
    return expl


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUILTINS)
def test_shape_dtype_and_metadata(name, dims):
    expl = _run(name, dims=dims)
    assert expl.map.shape == ((64, 64) if dims == 2 else (24, 24, 24)) and expl.map.dtype == np.float32
    meta = expl.metadata()
    import json

    json.dumps(meta)
    for key in ("seed", "forward_passes", "wall_time_s", "versions", "model"):
        assert key in meta["provenance"]
    assert len(meta["provenance"]["model"]["sha256"]) == 64
    assert meta["deviations"], "every deviation from the paper is recorded"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUILTINS)
def test_same_seed_same_map_and_batch_size_invariance(name, dims):
    maps = [_run(name, batch_size=bs, dims=dims).map for bs in (1, 2, 7)]
    for m in maps[1:]:
        np.testing.assert_array_equal(np.nan_to_num(m, nan=-999), np.nan_to_num(maps[0], nan=-999))


def test_pdcr_different_seed_different_draws():
    a, b = _run("pdcr", seed=0), _run("pdcr", seed=1)
    assert a.params["seed"] != b.params["seed"]
    assert not np.allclose(np.nan_to_num(a.map), np.nan_to_num(b.map)), "the seed must drive the draws"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUILTINS)
def test_progress_reaches_total_and_cancel_stops(name, dims):
    events = []
    expl = _run(name, progress=events.append, dims=dims)
    assert events and events[-1].done == events[-1].total == expl.stats["forward_passes"]
    assert all(e.done <= e.total for e in events)
    model, sc, roi, extra = _setup(name, dims)
    gen = _gen(name, model, sc["image"], roi, config=_cfg(name, **SMALL[name], batch_size=1,
                                                          **(SMALL_3D[name] if dims == 3 else {})), **extra)
    seen = []
    with pytest.raises(Cancelled):
        drive(gen, seen.append, cancel=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_pdcr_streams_partial_maps():
    """The map so far: 0 for blocks found irrelevant, NaN for blocks still to estimate, final values at the end."""
    events = []
    expl = _run("pdcr", batch_size=3, progress=events.append)
    partial = [e.partial for e in events if e.partial is not None]
    assert len(partial) == len(events), "every batch yields the map so far"
    known = [int(np.isfinite(p).sum()) for p in partial]
    assert known == sorted(known), "blocks only ever become known"
    assert known[0] < known[-1] == int(np.isfinite(expl.map).sum())
    np.testing.assert_array_equal(np.nan_to_num(partial[-1], nan=9), np.nan_to_num(expl.map, nan=9))
    mid = next(p for p, e in zip(partial, events) if e.stage == "estimating")
    cue = mid[km.CUE]
    assert np.isnan(cue).all() or (cue < 0).all(), "a block not yet estimated is NaN, never a fake 0"
    assert not np.isnan(expl.map[km.CUE]).any()


def test_paused_or_abandoned_explainers_leave_thread_and_model_state_alone():
    """Grad mode is thread-local: a generator paused at a yield (a napari worker) must not leave inference mode
    on, MiSuRe must not fill the model's .grad, and no explainer may reseed torch's global generator."""
    import torch

    model, sc, roi, extra = _setup("pdcr")
    gen = _gen("pdcr", model, sc["image"], roi, config=_cfg("pdcr", **SMALL["pdcr"]), **extra)
    next(gen)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    gen.close()  # abandoned, as a cancelled worker does
    m_model, m_sc, m_roi, _ = _setup("misure")
    probe = torch.nn.Conv2d(1, 1, 1)  # a parameter that takes part in the forward pass
    m_model.net = torch.nn.Sequential(probe, m_model.net)
    with torch.no_grad():
        probe.weight.fill_(1.0)
        probe.bias.zero_()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    drive(_gen("misure", m_model, m_sc["image"], m_roi, config=_cfg("misure", **SMALL["misure"])))
    assert probe.weight.grad is None and probe.bias.grad is None, "the user's model gets no gradients"
    assert torch.equal(torch.rand(3), expected), "torch's global random state is untouched"


def test_misure_roi_shape_is_checked():
    from napari_seg_explain.core.errors import IncompatibleInputError

    model, sc, _, _ = _setup("misure")
    with pytest.raises(IncompatibleInputError, match="RoI shape"):
        drive(_gen("misure", model, sc["image"], np.ones((10, 10), bool)))
