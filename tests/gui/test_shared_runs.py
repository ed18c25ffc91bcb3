"""Every shape of the RoI layer with PdCR: the shapes of one slice share one PdCR run (``pdcr_multi``), each still a
run of its own (run id, layers, Explanation) whose map is the one of a one-shape run, bit for bit; shapes on two
slices make two shared runs; Cancel undoes a shared run; the time left and the cost line count it once.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_shared_runs.py -q -p xvfb --xvfb-backend xvfb``.
"""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
from gui_helpers import Z, configure_pdcr, wait_idle

pdcr_module = importlib.import_module("napari_seg_explain.core.explainers.pdcr")  # the package exports pdcr()

BOXES = [(8, 8, 16, 16), (8, 16, 16, 24), (16, 8, 24, 24)]  # three RoIs on the cue object


def _shapes(viewer, image, boxes, slices):
    """One Shapes layer 'RoI', a rectangle per box on its slice (shape k = 'RoI k+1')."""
    rects = []
    for (y0, x0, y1, x1), z in zip(boxes, slices):
        corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) - 0.5
        rects.append(np.column_stack([np.full(4, float(z)), corners]))
    return viewer.add_shapes(rects, shape_type="rectangle", name="RoI", edge_color="lime", face_color="transparent",
                             scale=image.scale, translate=image.translate)


@pytest.fixture
def multi_calls(monkeypatch):
    """Counts the pdcr_multi runs started (``started``) and ended or closed (``closed``)."""
    calls = {"started": 0, "closed": 0}
    orig = pdcr_module.pdcr_multi

    def counted(*args, **kwargs):
        calls["started"] += 1
        try:
            return (yield from orig(*args, **kwargs))
        finally:
            calls["closed"] += 1

    monkeypatch.setattr(pdcr_module, "pdcr_multi", counted)
    return calls


def _load(qtbot, widget, path):
    widget.load_model(str(path))
    wait_idle(qtbot, widget)
    assert widget.loaded is not None


def _record_progress(widget):
    texts = []
    show = widget.explain_section.show_progress

    def record(done, total, text):
        texts.append(text)
        show(done, total, text)

    widget.explain_section.show_progress = record
    return texts


def test_shapes_of_one_slice_share_one_run_with_the_maps_of_one_shape_runs(qtbot, viewer_widget, cue_model_file,
                                                                        multi_calls):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    shapes = _shapes(viewer, image, BOXES, [Z] * 3)
    widget.sync.refresh()
    configure_pdcr(widget, n=4, screen=1, patch=8)
    widget.every_shape.setChecked(True)
    widget.param("screening").setCurrentText("hierarchical")  # coarse blocks judged for all RoIs: no sharing
    assert "Cost: 3 runs, " in widget.update_estimate()
    widget.param("screening").setCurrentText("auto")
    assert "3 RoIs as one shared run, at most 321 forward passes" in widget.update_estimate()
    texts = _record_progress(widget)
    widget.run()
    assert widget.tasks.clock.bounds == [321, 0, 0]  # the time left counts the shared run once
    wait_idle(qtbot, widget, 60000)
    assert multi_calls == {"started": 1, "closed": 1}
    assert any("RoI 1-3 (one shared run: runs 1-3/3)" in t for t in texts)
    labels = [f"RoI {k} · object" for k in (1, 2, 3)]
    assert [run.label for run in widget.runs] == labels
    shared = {}
    for run, box in zip(widget.runs, BOXES):
        assert f"PdCR map · {run.label}" in viewer.layers and f"PdCR RoI · {run.label}" in viewer.layers
        assert run.layers["map"].metadata["seg_explain"]["run_id"] == run.run_id == run.expl.run_id
        assert run.expl.stats["shared_run_rois"] == 3
        roi = np.zeros(image.data.shape[1:], bool)
        roi[box[0]:box[2], box[1]:box[3]] = True
        np.testing.assert_array_equal(run.expl.roi, roi)
        shared[run.run_id] = (np.array(run.layers["map"].data, copy=True), run.expl.provenance["forward_passes"])
    shared_passes = {p for _, p in shared.values()}
    assert len(shared_passes) == 1

    # each shape on its own: the same run ids (same inputs), so the same layers, updated in place
    widget.every_shape.setChecked(False)
    assert "runs" not in widget.update_estimate()
    single_passes = 0
    for k in range(3):
        shapes.selected_data = {k}
        widget.run()
        wait_idle(qtbot, widget, 60000)
        run = widget.latest("pdcr")
        assert run.label == labels[k] and run.run_id in shared and "shared_run_rois" not in run.expl.stats
        single_passes += run.expl.provenance["forward_passes"]
        np.testing.assert_array_equal(run.layers["map"].data, shared[run.run_id][0])
    assert len(widget.runs) == 3 and multi_calls["started"] == 1
    assert shared_passes.pop() < single_passes


def test_shapes_on_two_slices_make_two_shared_runs(qtbot, viewer_widget, cue_model_file, multi_calls):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    slices = [Z, Z + 1, Z, Z + 1]
    _shapes(viewer, image, [BOXES[0], BOXES[0], BOXES[1], BOXES[2]], slices)
    widget.sync.refresh()
    configure_pdcr(widget, n=2, screen=1, patch=8)
    widget.every_shape.setChecked(True)
    assert "4 RoIs as 2 runs" in widget.update_estimate()
    widget.run()
    b = widget.tasks.clock.bounds  # groups [RoI 1, 3] and [RoI 2, 4]: each counted on its first run
    assert b[0] > 0 and b[1] > 0 and b[2] == b[3] == 0
    wait_idle(qtbot, widget, 60000)
    assert multi_calls == {"started": 2, "closed": 2}
    runs = {run.label: run for run in widget.runs}
    assert sorted(runs) == [f"RoI {k} · object" for k in (1, 2, 3, 4)]
    for k, z in enumerate(slices):
        run = runs[f"RoI {k + 1} · object"]
        assert run.expl.geometry["slice_index"] == z and run.expl.stats["shared_run_rois"] == 2
        data = run.layers["map"].data
        assert np.isfinite(data[z]).any() and not np.isfinite(np.delete(data, z, axis=0)).any()


def test_cancel_during_a_shared_run_leaves_no_layer_of_it(qtbot, viewer_widget, slow_model, multi_calls):
    viewer, widget, image = viewer_widget
    widget.set_model(slow_model)
    _shapes(viewer, image, BOXES, [Z] * 3)
    widget.sync.refresh()
    configure_pdcr(widget, n=50, screen=3, batch=1)
    widget.every_shape.setChecked(True)
    names = [lay.name for lay in viewer.layers]
    worker = widget.run()
    finished = []
    worker.finished.connect(lambda: finished.append(time.perf_counter()))
    qtbot.waitUntil(lambda: "PdCR map · RoI 1 · object (running)" in viewer.layers, timeout=10000)
    qtbot.waitUntil(lambda: widget.progress.value() >= 5, timeout=10000)
    assert "one shared run" in widget.progress_label.text()
    widget.cancel()
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    wait_idle(qtbot, widget, 5000)
    assert multi_calls == {"started": 1, "closed": 1}  # the shared run's generator was closed
    assert [lay.name for lay in viewer.layers] == names and len(widget.runs) == 0
    assert widget.progress_label.text().startswith("cancelled")

    configure_pdcr(widget, n=2, screen=1, batch=0)  # still usable: a short shared run succeeds
    widget.run()
    wait_idle(qtbot, widget, 60000)
    assert [run.label for run in widget.runs] == [f"RoI {k} · object" for k in (1, 2, 3)]
    assert multi_calls == {"started": 2, "closed": 2}
