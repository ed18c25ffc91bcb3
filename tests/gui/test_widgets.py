"""The dock widget with real napari viewers (pytest-qt, Xvfb): load, segment, explain, cancel, save/open.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui -q``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from gui_helpers import (
    SCALE,
    SELF_POOL,
    TRANSLATE,
    Z,
    PixelCost,
    add_rect,
    configure_pdcr,
    cue_volume,
    sample_scan_layer_data,
    wait_idle,
)

from napari_seg_explain.napari import layers as L
from napari_seg_explain.napari.widgets.sections.explain import NO_ROI

# the layers of the first run on the cue volume: method, RoI (shape 1 of layer 'RoI'), class
MAP = "PdCR map · RoI 1 · object"
ROI = "PdCR RoI · RoI 1 · object"
SALIENCY = "MiSuRe saliency · whole image · object"
REGION = "MiSuRe sufficient region · whole image · object"


def _load(qtbot, widget, path):
    widget.load_model(str(path))
    wait_idle(qtbot, widget)
    assert widget.loaded is not None


def _configure_pdcr(widget, n=4, screen=1, batch=0, pool=SELF_POOL):
    configure_pdcr(widget, n=n, screen=screen, batch=batch, pool=pool)


def _truth_and_dark_pool(viewer, widget, image):
    """The paper's setting on the cue volume: a ground-truth Labels layer and a pool of dark images."""
    import known_models as km

    label = np.stack([km.cue_scene()["label"]] * image.data.shape[0])
    viewer.add_labels(label, name="truth", scale=image.scale, translate=image.translate)
    rng = np.random.default_rng(1)
    viewer.add_image(rng.uniform(0, 0.2, (3, 40, 40)).astype(np.float32), name="dark pool", visible=False)
    widget.sync.refresh()
    widget.gt_combo.setCurrentText("truth")
    widget.pool_combo.setCurrentText("Other open image layers")


def _names(viewer):
    return [lay.name for lay in viewer.layers]


def _ids(viewer):
    return [id(lay) for lay in viewer.layers]


def _running(viewer):
    return [lay.name for lay in viewer.layers if lay.name.endswith(" (running)")]


# --------------------------------------------------------------------------------------- model
def test_load_model_file_shows_card_device_and_classes(qtbot, viewer_widget, cue_model_file):
    viewer, widget, _ = viewer_widget
    _load(qtbot, widget, cue_model_file)
    text = widget.model_summary.text()
    assert "cue-model" in text and "torchscript" in text and "device: <b>cpu</b>" in text
    assert "normalisation: none" in text
    assert widget.cpu_note.isVisibleTo(widget)
    assert [widget.target.itemText(i) for i in range(widget.target.count())] == ["background", "object"]
    assert widget.target.currentIndex() == 1
    devices = [widget.device.itemText(i) for i in range(widget.device.count())]
    assert devices[0] == "auto" and "cpu" in devices


def test_bad_model_file_gives_a_notification_not_an_exception(qtbot, viewer_widget, tmp_path, notes,
                                                               cue_model_file):
    viewer, widget, _ = viewer_widget
    bad = tmp_path / "broken.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(2048))
    widget.load_model(str(bad))
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: any("ERROR" in s.upper() for s, _ in notes), timeout=5000)
    assert widget.loaded is None and "Could not load" in widget.model_summary.text()
    assert any("broken.pt" in m for _, m in notes)
    widget.run()  # no model: a notification, no exception
    assert any("load a model first" in m for _, m in notes)
    _load(qtbot, widget, cue_model_file)  # the widget still works: a good model loads afterwards
    assert "cue-model" in widget.model_summary.text()


# ------------------------------------------------------------------------------------- segment
def test_segment_slice_then_volume_updates_one_labels_layer(qtbot, viewer_widget, cue_model_file):
    viewer, widget, image = viewer_widget
    before = image.data.copy()
    _load(qtbot, widget, cue_model_file)
    widget.segment_scope.setCurrentText("current slice")
    widget.segment()
    wait_idle(qtbot, widget)
    lab = viewer.layers["cue-model segmentation"]
    assert L.layer_kind(lab) == "labels" and lab.data.shape == image.data.shape
    np.testing.assert_allclose(lab.scale, SCALE)
    np.testing.assert_allclose(lab.translate, TRANSLATE)
    assert lab.data[Z].any() and not lab.data[Z - 1].any()  # only the current slice
    n_layers = len(viewer.layers)
    widget.segment_scope.setCurrentText("whole volume")
    widget.segment()
    wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers  # rerun updates instead of piling up
    lab = viewer.layers["cue-model segmentation"]
    assert all(lab.data[k].any() for k in range(lab.data.shape[0]))
    np.testing.assert_array_equal(image.data, before)


# ---------------------------------------------------------------------------------------- PdCR
def test_pdcr_run_makes_result_layers_at_the_slice(qtbot, viewer_widget, cue_model_file):
    viewer, widget, image = viewer_widget
    before = image.data.copy()
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    assert widget.roi_combo.currentText() == "RoI"
    _configure_pdcr(widget)
    _truth_and_dark_pool(viewer, widget, image)
    assert widget.roi_combo.currentText() == "RoI"
    est = widget.update_estimate()
    assert "at most 301 forward passes" in est  # 60 blocks outside the RoI x (S + N) + the unperturbed pass
    worker = widget.run()
    assert worker is not None and not widget.run_button.isEnabled()
    wait_idle(qtbot, widget)
    assert widget.run_button.isEnabled()

    amap = viewer.layers[MAP]
    roi = viewer.layers[ROI]
    assert not _running(viewer)
    assert amap.data.shape == image.data.shape and amap.data.dtype == np.float32
    np.testing.assert_allclose(amap.scale, SCALE)
    np.testing.assert_allclose(amap.translate, TRANSLATE)
    assert amap.colormap.name == "seg_explain_diverging" and amap.blending == "translucent"
    lo, hi = amap.contrast_limits
    assert lo == pytest.approx(-hi) and hi > 0
    assert np.isnan(amap.data[Z - 1]).all() and np.isnan(amap.data[Z, 8:24, 8:24]).all()
    run = widget.latest("pdcr")
    expl = run.expl
    np.testing.assert_array_equal(amap.data[Z], expl.map)
    assert hi == pytest.approx(np.nanmax(np.abs(expl.map)))
    # known by construction: the cue block supports (red, < 0), the suppressor works against (blue, > 0)
    assert (expl.map[48:56, 48:56] < -1).all() and (expl.map[48:56, 0:8] > 1).all()
    assert expl.stats["metric"] == "dice_vs_label" and expl.stats["n_negative"] == 1 == expl.stats["n_positive"]
    meta = amap.metadata
    assert meta["explanation"]["method"] == "pdcr" and meta["explanation"]["params"]["n"] == 4
    assert meta["seg_explain"]["slice_index"] == Z and meta["seg_explain"]["source_layer"] == "cue volume"
    assert meta["seg_explain"]["run_id"] == run.run_id == expl.run["id"] == roi.metadata["seg_explain"]["run_id"]
    assert L.layer_kind(roi) == "shapes" and roi.shape_type == ["rectangle"]
    np.testing.assert_allclose(roi.data[0][:, 0], Z)
    np.testing.assert_allclose(roi.data[0][:, 1:].min(axis=0), [7.5, 7.5])
    assert np.allclose(roi.edge_color[0], [0, 1, 0, 1])
    assert "M0" in widget.stats_panel.text() and "forward passes" in widget.stats_panel.text()
    np.testing.assert_array_equal(image.data, before)

    # rerun: the same layers are updated, none added
    names, objects = _names(viewer), list(viewer.layers)
    widget.run()
    wait_idle(qtbot, widget)
    assert _names(viewer) == names and _ids(viewer) == [id(lay) for lay in objects]
    assert len(widget.runs) == 1 and widget.latest().run_id == run.run_id
    np.testing.assert_array_equal(image.data, before)


def test_cancel_leaves_the_viewer_as_before_and_it_stays_usable(qtbot, viewer_widget, slow_model):
    """Cancel a rerun (it streams into its own run's map) and a new run (it streams into a layer of its own):
    each time the viewer is as before, the first run's layers and results untouched."""
    viewer, widget, image = viewer_widget
    before = image.data.copy()
    widget.set_model(slow_model)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget, n=2, screen=3, batch=1)  # a first run of about 200 passes: the map a rerun streams into
    widget.run()
    wait_idle(qtbot, widget)
    amap = viewer.layers[MAP]
    map_before, limits_before, meta_before = amap.data.copy(), tuple(amap.contrast_limits), amap.metadata
    result_before = widget.latest("pdcr").expl
    assert np.isfinite(map_before[Z]).any()

    def cancel_soon(worker):
        finished = []
        worker.finished.connect(lambda: finished.append(time.perf_counter()))
        qtbot.waitUntil(lambda: widget.progress.value() >= 5, timeout=10000)
        t0 = time.perf_counter()
        widget.cancel()
        assert _names(viewer) == names  # immediately as before
        qtbot.waitUntil(lambda: bool(finished), timeout=5000)
        stop_s = finished[0] - t0
        assert stop_s < 1.0, f"worker took {stop_s:.2f} s to stop"
        wait_idle(qtbot, widget, 5000)
        assert _names(viewer) == names and _ids(viewer) == ids and widget.run_button.isEnabled()
        # the map of the first run is back: same layer, data, contrast limits and metadata; same run
        assert viewer.layers[MAP] is amap
        np.testing.assert_array_equal(amap.data, map_before)
        assert tuple(amap.contrast_limits) == limits_before and amap.metadata == meta_before
        np.testing.assert_allclose(amap.scale, SCALE)
        assert len(widget.runs) == 1 and widget.latest("pdcr").expl is result_before
        np.testing.assert_array_equal(image.data, before)

    # an identical rerun (same run id) streams into the run's own map, renamed while it runs
    names, ids = _names(viewer), _ids(viewer)
    worker = widget.run()
    qtbot.waitUntil(lambda: MAP + " (running)" in viewer.layers, timeout=5000)
    assert viewer.layers[MAP + " (running)"] is amap and len(viewer.layers) == len(names)
    qtbot.waitUntil(lambda: tuple(amap.contrast_limits) != limits_before
                    or not np.array_equal(amap.data, map_before, equal_nan=True), timeout=5000)
    cancel_soon(worker)

    # another run (other parameters, a new run id) streams into a layer of its own; the first run stays as it is
    _configure_pdcr(widget, n=50, screen=1, batch=1)
    widget.param("seed").setValue(3)
    worker = widget.run()
    stream = MAP + " #2 (running)"
    qtbot.waitUntil(lambda: stream in viewer.layers, timeout=5000)
    qtbot.waitUntil(lambda: np.isfinite(viewer.layers[stream].data[Z]).any(), timeout=5000)
    np.testing.assert_array_equal(amap.data, map_before)
    cancel_soon(worker)

    # still usable: a short run succeeds, with layers of its own
    _configure_pdcr(widget, n=2, screen=1, batch=0)
    widget.run()
    wait_idle(qtbot, widget)
    assert MAP in viewer.layers and MAP + " #2" in viewer.layers and len(widget.runs) == 2
    assert widget.latest("pdcr").expl is not result_before
    np.testing.assert_array_equal(amap.data, map_before)
    np.testing.assert_array_equal(image.data, before)


def test_cancel_stops_within_a_second_on_a_large_plane(qtbot, make_napari_viewer, notes):
    """The automatic batch size keeps batches short: a model whose time grows with the pixels takes 64 ms per
    512x512 image, and Cancel must still stop PdCR and Segment at once."""
    import known_models as km

    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.models import SegmentationModel
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    vol = np.zeros((24, 512, 512), np.float32)
    vol[:, :64, :64] = km.cue_scene()["image"][0]
    viewer.add_image(vol, name="large planes")
    viewer.dims.set_current_step(0, Z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    card = ModelCard(name="pixel-cost", in_channels=1, classes=("background", "object"),
                     output_activation="softmax")
    widget.set_model(SegmentationModel(PixelCost(two_class=True), card, device="cpu"))
    add_rect(viewer, 8, 8, 24, 24, z=Z)
    widget.sync.refresh()
    _configure_pdcr(widget, n=50, screen=1, batch=0)
    for start in (widget.run, widget.segment):
        if start == widget.segment:
            widget.segment_scope.setCurrentText("whole volume")
        names = _names(viewer)
        worker = start()
        finished = []
        worker.finished.connect(lambda: finished.append(time.perf_counter()))
        qtbot.waitUntil(lambda: widget.progress.value() >= 4, timeout=20000)
        t0 = time.perf_counter()
        widget.cancel()
        qtbot.waitUntil(lambda: bool(finished), timeout=5000)
        wait_idle(qtbot, widget, 5000)
        stop_s = finished[0] - t0
        print(f"\n{start.__name__}: worker stopped {1000 * stop_s:.0f} ms after Cancel")
        assert stop_s < 1.0, f"{start.__name__}: the worker took {stop_s:.2f} s to stop"
        assert _names(viewer) == names and widget.progress_label.text() == "cancelled"
    assert not [m for sev, m in notes if "ERROR" in sev.upper()]
    assert widget._config().batch_size == 0, "the widget leaves the batch size to the engine (automatic)"
    # 64 ms per 512x512 image: batches of about 0.25 s. On the CPU the engine times its sizes per worker, a
    # batch each side by side, and caches a choice once timed: a cancel during the timing caches none
    chosen = widget.model.batch_sizes
    assert all(v <= 4 for v in chosen.values()), chosen


def test_cancel_with_keep_partial_keeps_a_partial_layer(qtbot, viewer_widget, slow_model):
    viewer, widget, image = viewer_widget
    widget.set_model(slow_model)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget, n=50, screen=1, batch=4)
    widget.explain_section.set_fast(False)  # exact (paper) mode: blocks not yet estimated stay NaN (no preview)
    widget.keep_partial.setChecked(True)
    names = _names(viewer)
    widget.run()
    qtbot.waitUntil(lambda: MAP + " (running)" in viewer.layers, timeout=2000)
    stream = viewer.layers[MAP + " (running)"]
    qtbot.waitUntil(lambda: np.isfinite(stream.data[Z]).any(), timeout=20000)  # streaming filled some blocks
    widget.cancel()
    wait_idle(qtbot, widget, 5000)
    partial = viewer.layers[MAP + " (partial)"]
    assert _names(viewer) == names + [partial.name]
    assert "partial" in partial.metadata["seg_explain"]["status"]
    assert MAP not in viewer.layers and len(widget.runs) == 0
    # block by block: estimated blocks are numbers (0 = irrelevant), blocks not yet estimated are NaN, like the
    # RoI and the blocks touching it
    from napari_seg_explain.core.perturb.grid import blocks_touching

    plane = partial.data[Z]
    roi = np.zeros(plane.shape, bool)
    roi[8:24, 8:24] = True
    touching = blocks_touching(roi, 8)
    blocks = plane.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(8, 8, 64)
    finite = np.isfinite(blocks)
    assert (finite.all(axis=-1) | ~finite.any(axis=-1)).all()  # each block all NaN or all estimated
    estimated = finite.all(axis=-1)
    assert not estimated[touching].any()
    assert estimated[~touching].any(), "no block was estimated before Cancel"
    assert not estimated[~touching].all(), "blocks not yet estimated must be NaN in the partial map"


def test_errors_in_the_inputs_are_notifications(qtbot, viewer_widget, cue_model_file, notes):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    assert widget.run() is None  # no RoI layer yet
    assert any("PdCR needs a RoI" in m for _, m in notes)
    viewer.add_shapes([np.array([[Z, 1, 1], [Z, 5, 9]], float)], shape_type="line", name="lines",
                      scale=image.scale, translate=image.translate)
    widget.sync.refresh()
    widget.roi_combo.setCurrentText("lines")
    assert widget.run() is None
    assert any("has no inside" in m for _, m in notes)
    assert not widget.busy and not _running(viewer)


def test_keyboard_shortcuts_run_and_cancel(qtbot, make_napari_viewer, slow_model):
    """Ctrl+Return runs, Escape cancels (real key events in a shown window); Escape is napari's while idle."""
    from qtpy.QtCore import Qt

    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(cue_volume(), name="cue volume")
    viewer.dims.set_current_step(0, Z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.set_model(slow_model)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    _configure_pdcr(widget, n=50, screen=1, batch=1)
    assert widget.shortcut_run.key().toString() == "Ctrl+Return"
    assert not widget.shortcut_cancel.isEnabled()
    win = widget.window()
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=3000)
    n_draws = widget.param("n")
    n_draws.setFocus()
    qtbot.keyClick(n_draws, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert widget.busy and widget.shortcut_cancel.isEnabled()
    qtbot.keyClick(n_draws, Qt.Key.Key_Escape)
    wait_idle(qtbot, widget, 5000)
    assert widget.progress_label.text().startswith("cancelled")
    assert not _running(viewer) and not widget.shortcut_cancel.isEnabled()


# ----------------------------------------------------------------------- 2-D layers, other RoIs
def test_2d_image_with_ellipse_polygon_and_labels_rois(qtbot, make_napari_viewer, cue_model_file, notes):
    """Any image layer works (a plain numpy array); RoIs from an ellipse, a polygon or a Labels layer."""
    import known_models as km

    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    scene = km.cue_scene()["image"][0]
    image = viewer.add_image(scene.copy(), name="scene 2d")
    before = image.data.copy()
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    _load(qtbot, widget, cue_model_file)
    assert not widget.segment_scope.isEnabled()  # a 2-D image has no volume to segment
    shapes = viewer.add_shapes([np.array([[8, 8], [8, 24], [24, 24], [24, 8]], float)], shape_type="ellipse",
                               name="ellipse RoI")
    _configure_pdcr(widget)
    assert widget.pool_combo.currentText().startswith("The image itself")
    widget.run()
    wait_idle(qtbot, widget)
    expl = widget.latest("pdcr").expl
    amap = viewer.layers["PdCR map · ellipse RoI 1 · object"]  # shape 1 of the layer 'ellipse RoI'
    assert amap.data.shape == (64, 64) and amap.ndim == 2
    # the ellipse inscribed in the 16x16 box: centre pixels inside, corners outside, area ~ pi r^2
    assert expl.roi[16, 16] and not expl.roi[8, 8] and abs(expl.roi.sum() - np.pi * 8 ** 2) < 25
    assert viewer.layers["PdCR RoI · ellipse RoI 1 · object"].shape_type == ["polygon"]
    assert any("crops of the explained image itself" in w for w in expl.warnings)

    # the selected shape wins over the newest one (a triangle on the segmented right part of the object)
    shapes.add(np.array([[9, 17], [9, 23], [15, 23]], float), shape_type="polygon")
    shapes.selected_data = {1}
    widget.run()
    wait_idle(qtbot, widget)
    run = widget.latest("pdcr")
    roi = run.expl.roi
    assert roi[10, 21] and not roi[16, 16] and not roi[14, 18]
    assert run.label == "ellipse RoI 2 · object" and run.layers["map"].name == "PdCR map · ellipse RoI 2 · object"

    # a Labels layer: its non-zero pixels
    lab = np.zeros((64, 64), np.uint8)
    lab[10:20, 14:24] = 3  # on the segmented part of the object
    viewer.add_labels(lab, name="painted RoI")
    widget.sync.refresh()
    widget.roi_combo.setCurrentText("painted RoI")
    widget.run()
    wait_idle(qtbot, widget)
    run = widget.latest("pdcr")
    np.testing.assert_array_equal(run.expl.roi, lab > 0)
    assert run.label == "painted RoI · object" and len(widget.runs) == 3  # each RoI keeps its run
    np.testing.assert_array_equal(image.data, before)
    assert not [m for sev, m in notes if "ERROR" in sev.upper()]


def test_rgb_layer_with_a_grayscale_model_is_a_notification(qtbot, make_napari_viewer, cue_model_file, notes):
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    rgb = viewer.add_image(np.zeros((64, 64, 3), np.uint8) + 40, rgb=True, name="photo")
    widget = SegExplainWidget(viewer)
    _load(qtbot, widget, cue_model_file)
    viewer.add_shapes([np.array([[8, 8], [8, 24], [24, 24], [24, 8]], float)], shape_type="rectangle")
    widget.run()
    wait_idle(qtbot, widget)
    assert any("expects 1 input channel(s) but the image has 3" in m for _, m in notes)
    assert [lay.name for lay in viewer.layers] == ["photo", "Shapes"]  # nothing left behind
    assert rgb.data.max() == 40


# -------------------------------------------------------------------------------------- MiSuRe
def test_misure_layers(qtbot, viewer_widget, cue_model_file, tmp_path):
    viewer, widget, image = viewer_widget
    before = image.data.copy()
    _load(qtbot, widget, cue_model_file)
    widget.sync.refresh()
    assert widget.gt_combo.isEnabled()
    widget.set_method("misure")
    assert not widget.gt_combo.isEnabled()  # MiSuRe does not use a ground truth
    assert not widget.pool_combo.isEnabled()  # nor a pool
    assert widget.param("iterations").isVisibleTo(widget) and not widget.param("n", "pdcr").isVisibleTo(widget)
    widget.roi_combo.setCurrentText(NO_ROI)
    widget.param("iterations").setValue(5)
    widget.run()
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(image.data, before)
    sal = viewer.layers[SALIENCY]
    region = viewer.layers[REGION]
    assert sal.data.shape == region.data.shape == image.data.shape
    assert L.layer_kind(region) == "labels" and region.data[Z].any() and not region.data[Z + 1].any()
    assert sal.contrast_limits == [0.0, 1.0] and sal.colormap.name == "inferno_transparent_zero"
    assert sal.metadata["explanation"]["method"] == "misure"
    assert not [name for name in _names(viewer) if name.startswith("MiSuRe RoI")]
    assert "Dice explained" in widget.stats_panel.text()
    # saved and opened back
    widget.save_results(tmp_path / "m")
    for name in (SALIENCY, REGION):
        viewer.layers.remove(name)
    assert len(widget.runs) == 0  # a run whose layers are all gone is forgotten
    names = {lay.name for lay in widget.open_results(tmp_path / "m")}
    assert names == {SALIENCY, REGION} and len(widget.runs) == 1
    np.testing.assert_array_equal(viewer.layers[REGION].data, region.data)


def test_pool_choices_leave_out_result_layers_and_name_the_excluded_slices(qtbot, viewer_widget, cue_model_file,
                                                                            notes):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    widget.set_method("misure")  # MiSuRe adds an image layer of its own: the saliency
    widget.roi_combo.setCurrentText(NO_ROI)
    widget.param("iterations").setValue(3)
    widget.run()
    wait_idle(qtbot, widget)
    assert SALIENCY in viewer.layers
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget, pool="Other open image layers")
    assert widget.run() is None  # the result layers are no perturbation pool
    assert any("no other image layer" in m for _, m in notes)
    # nor is a map kept on Cancel (named like one, whatever its metadata)
    viewer.add_image(np.ones((64, 64), np.float32), name=MAP + " (partial)")
    viewer.add_image(np.random.default_rng(0).uniform(size=(64, 64)).astype(np.float32), name="other scan")
    widget.sync.refresh()
    assert widget.image_combo.currentText() == "cue volume"
    assert widget.image_combo.findText(SALIENCY) == -1
    req, = widget.gather()
    assert req.pool.description == "image layers 'other scan'" and len(req.pool.planes()) == 1

    # the volume pool's entry names the 'Pool exclude ±' value
    widget.exclude.setValue(3)
    assert widget.pool_combo.itemText(0) == "Other slices of this volume (±3 excluded)"
    widget.pool_combo.setCurrentIndex(0)
    req, = widget.gather()
    assert req.pool.kind == "volume" and req.pool.exclude == 3 and "±3" in req.pool.description
    assert len(req.pool.planes()) == image.data.shape[0] - 7  # slices Z-3 .. Z+3 left out


def test_result_layers_follow_a_rotated_sheared_image(qtbot, make_napari_viewer, cue_model_file):
    """Every result layer has the image layer's whole data-to-world transform (rotate, shear, affine)."""
    import known_models as km

    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    extra = np.eye(3)
    extra[0, 2] = 7.0  # an extra affine (a shift) on top of scale/rotate/shear/translate
    transform = {"rotate": 30, "shear": [0.2], "scale": (1.5, 1.0), "translate": (5.0, 5.0), "affine": extra}
    image = viewer.add_image(km.cue_scene()["image"][0].copy(), name="rotated", **transform)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    _load(qtbot, widget, cue_model_file)
    roi = viewer.add_shapes([np.array([[8, 8], [8, 24], [24, 24], [24, 8]], float) - 0.5], shape_type="rectangle",
                            name="RoI", **transform)
    _configure_pdcr(widget)
    widget.segment()
    wait_idle(qtbot, widget)
    widget.run()
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(widget.latest("pdcr").expl.roi[8:24, 8:24], True)
    widget.set_method("misure")
    widget.param("iterations").setValue(3)
    widget.run()
    wait_idle(qtbot, widget)
    names = [MAP, ROI, "MiSuRe saliency · RoI 1 · object", "MiSuRe sufficient region · RoI 1 · object",
             "MiSuRe RoI · RoI 1 · object", "cue-model segmentation"]
    for name in names:
        layer = viewer.layers[name]
        for pixel in [(0.0, 0.0), (10.0, 20.0), (63.0, 5.0)]:
            np.testing.assert_allclose(layer.data_to_world(pixel), image.data_to_world(pixel), atol=1e-9,
                                       err_msg=name)
    # the RoI outline lies where the RoI was drawn; 'Draw RoI' makes a layer on the image's frame
    np.testing.assert_allclose(viewer.layers[ROI].data[0], roi.data[0])
    drawn = widget.new_roi_layer()
    np.testing.assert_allclose(drawn.data_to_world((10.0, 20.0)), image.data_to_world((10.0, 20.0)), atol=1e-9)


def test_the_explained_plane_must_be_the_one_shown(qtbot, viewer_widget, cue_model_file, notes):
    """3-D view or another axis order: Run and Segment (current slice) refuse with advice, not axis-0 slice z."""
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget)
    widget.segment_scope.setCurrentText("current slice")

    def refusals():
        return sum("switch to 2-D axial view" in m for sev, m in notes if "ERROR" in sev.upper())

    viewer.dims.ndisplay = 3
    assert widget.run() is None and widget.segment() is None
    assert refusals() == 2 and "switch to 2-D axial view" in widget.slice_label.text()
    assert "in 3-D" in notes[-1][1]
    viewer.dims.ndisplay = 2
    viewer.dims.order = (1, 0, 2)  # a coronal reslice of the volume is shown
    assert widget.run() is None and widget.segment() is None
    assert refusals() == 4 and "axis 0" in notes[-1][1]
    assert "switch to 2-D axial view" in widget.slice_label.text()
    assert not widget.busy and not _running(viewer)
    # the whole volume does not depend on the view
    widget.segment_scope.setCurrentText("whole volume")
    assert widget.segment() is not None
    wait_idle(qtbot, widget)
    viewer.dims.order = (0, 1, 2)
    assert "axial slice 4" in widget.slice_label.text()
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.latest("pdcr") is not None and refusals() == 4


def test_results_scroll_into_view_with_the_map_colorbar(qtbot, make_napari_viewer, cue_model_file):
    from qtpy.QtCore import QPoint

    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(cue_volume(), name="cue volume", scale=SCALE, translate=TRANSLATE)
    viewer.dims.set_current_step(0, Z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.window().resize(1100, 620)
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget)
    scroll, panel = widget.scroll_area, widget.stats_panel
    bar = scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=3000)  # the dock is taller than its window
    bar.setValue(0)

    def panel_in_view() -> bool:
        top = panel.mapTo(scroll.viewport(), QPoint(0, 0)).y()
        return top >= 0 and top + panel.height() <= scroll.viewport().height()

    assert not panel_in_view()
    widget.run()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(panel_in_view, timeout=3000)
    assert "M0" in panel.text()
    amap = viewer.layers[MAP]
    assert not amap.colorbar.visible, "the canvas colour bar is opt-in (its first draw stalls the viewer)"
    widget.canvas_colorbar.setChecked(True)
    assert amap.colorbar.visible  # the map's colour scale in the canvas
    assert viewer.layers[ROI].visible


def test_drawing_mode_ends_once_a_roi_is_drawn(qtbot, viewer_widget):
    """A rectangle drawn with the mouse ends the RoI layer's drawing mode: a stray drag adds no second shape."""
    from dataclasses import dataclass, field

    import wrapt
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    viewer, widget, image = viewer_widget
    roi = widget.new_roi_layer()
    assert roi.mode == "add_rectangle" and widget.roi_combo.currentText() == roi.name

    @dataclass
    class Mouse:  # what napari's shape drawing reads of a vispy mouse event
        type: str
        position: tuple
        is_dragging: bool = False
        modifiers: list = field(default_factory=list)
        handled: bool = False

    def drag(y0, x0, y1, x1):
        start, end = image.data_to_world((Z, y0, x0)), image.data_to_world((Z, y1, x1))
        mouse_press_callbacks(roi, wrapt.ObjectProxy(Mouse("mouse_press", start)))
        for t in (0.5, 1.0):
            pos = tuple(np.asarray(start) + t * (np.asarray(end) - np.asarray(start)))
            mouse_move_callbacks(roi, wrapt.ObjectProxy(Mouse("mouse_move", pos, is_dragging=True)))
            qtbot.wait(5)
        mouse_release_callbacks(roi, wrapt.ObjectProxy(Mouse("mouse_release", end)))

    drag(8, 8, 24, 24)  # the drawing mode lasts until the mouse is released
    assert len(roi.data) == 1 and roi.shape_type == ["rectangle"]
    qtbot.waitUntil(lambda: roi.mode == "pan_zoom", timeout=2000)
    np.testing.assert_allclose(roi.data[0][:, 1:].min(axis=0), [8, 8])
    drag(30, 30, 40, 40)  # a stray drag later
    assert len(roi.data) == 1


# ---------------------------------------------------------------------------------- save / open
def test_save_and_open_results_round_trip(qtbot, viewer_widget, cue_model_file, tmp_path):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    widget.segment()
    wait_idle(qtbot, widget)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget)
    widget.run()
    wait_idle(qtbot, widget)
    run = widget.latest("pdcr")
    expl = run.expl
    out = tmp_path / "results"
    index = widget.save_results(out)
    assert index is not None and index.name == "results.json"
    stem = f"{run.run_id}_pdcr_map"
    assert (out / f"{stem}.npy").exists() and (out / f"{stem}.json").exists() and (out / f"{stem}_roi.npy").exists()
    # a fresh viewer state: remove the result layers, then open the folder
    for name in (MAP, ROI, "cue-model segmentation"):
        viewer.layers.remove(name)
    assert len(widget.runs) == 0
    added = widget.open_results(out)
    assert {lay.name for lay in added} == {MAP, ROI, "cue-model segmentation"}
    assert widget.latest().run_id == run.run_id
    amap = viewer.layers[MAP]
    np.testing.assert_array_equal(amap.data[Z], expl.map)
    np.testing.assert_allclose(amap.scale, SCALE)
    assert amap.metadata["explanation"]["stats"]["M0"] == pytest.approx(expl.stats["M0"])
    assert viewer.layers[ROI].shape_type == ["rectangle"]


def test_save_nifti_with_the_scan_geometry(qtbot, viewer_widget, cue_model_file, tmp_path):
    import nibabel as nib

    viewer, widget, image = viewer_widget
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [4.0, -3.0, 10.0]
    image.metadata = {"seg_explain": {"affine": affine.tolist(), "spatial_shape": [64, 64, 9], "source": "x.nii"}}
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget)
    widget.run()
    wait_idle(qtbot, widget)
    widget.save_results(tmp_path / "r")
    run = widget.latest("pdcr")
    nii = nib.load(str(tmp_path / "r" / f"{run.run_id}_pdcr_map.nii.gz"))
    assert nii.shape == (64, 64, 9)
    np.testing.assert_allclose(nii.affine, affine)
    vol = np.asarray(nii.dataobj)
    np.testing.assert_array_equal(vol[:, :, Z], run.expl.map)
    assert viewer.layers[MAP].metadata["seg_explain"]["affine"] == affine.tolist()


# ------------------------------------------------------------------- the sample model, rendering
def test_sample_model_pdcr_streams_renders_and_keeps_the_event_loop_responsive(qtbot, make_napari_viewer, tmp_path):
    """The real job on the sample: load the model named by the scan, RoI on white matter, PdCR with small N.

    Measures the gaps between 10 ms timer ticks from the click until the results are shown: the longest
    (goal 100 ms, bound 250 ms) and the median (< 40 ms).
    """
    from napari.layers import Layer
    from qtpy.QtCore import QTimer

    from napari_seg_explain.core.sample import SAMPLE_CARD, sample_path
    from napari_seg_explain.napari.widgets import SegExplainWidget

    assert sample_path(SAMPLE_CARD).exists(), "the sample model ships with the package"
    viewer = make_napari_viewer(show=True)
    data, kwargs = sample_scan_layer_data()
    image = viewer.add_layer(Layer.create(data, kwargs, "image"))
    before = image.data.copy()
    z = 62
    viewer.dims.set_current_step(0, z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30000)  # auto-loaded: the scan names its model
    wait_idle(qtbot, widget)
    assert "mni152-wm-unet2d" in widget.model_summary.text()
    widget.segment()
    wait_idle(qtbot, widget)
    seg = viewer.layers["mni152-wm-unet2d segmentation"].data[z]
    from napari_seg_explain.core.sample import pick_box

    y0, x0, y1, x1 = pick_box(seg == 1)
    add_rect(viewer, y0, x0, y1, x1, z=z, image=image)
    widget.sync.refresh()
    _configure_pdcr(widget, n=4, screen=1, pool="Other slices of this volume (±5 excluded)")
    widget.gt_combo.setCurrentIndex(0)

    qtbot.wait(300)  # let the canvas draw the RoI the test just added (a user's drawing is long painted)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t_start = time.perf_counter()  # from the click: includes adding the streamed layer
    widget.run()
    wait_idle(qtbot, widget, 120000)
    t_end = time.perf_counter()
    timer.stop()
    during = [t for t in ticks if t_start <= t <= t_end]
    stamps = np.array([t_start, *during, t_end])
    gaps = np.diff(stamps)
    longest_ms = 1000 * float(gaps.max())
    median_ms = 1000 * float(np.median(gaps))
    at = 1000 * (stamps[int(np.argmax(gaps))] - t_start)
    print(f"\nPdCR on the sample (N=4, S=1): {t_end - t_start:.1f} s, {len(during)} ticks, "
          f"longest event-loop gap {longest_ms:.0f} ms (starting {at:.0f} ms after the click), "
          f"2nd longest {1000 * np.sort(gaps)[-2]:.0f} ms, median {median_ms:.1f} ms")
    assert longest_ms < 250  # goal: 100 ms (software OpenGL, 2 CPU cores)
    assert median_ms < 40  # the 10 ms timer keeps ticking while the model runs

    run = widget.latest("pdcr")
    expl = run.expl
    assert expl.stats["n_blocks"] > 150 and np.isfinite(expl.map).any()
    amap = viewer.layers["PdCR map · RoI 1 · white_matter"]
    assert amap.data.shape == image.data.shape
    np.testing.assert_allclose(amap.scale, image.scale)
    np.testing.assert_array_equal(image.data, before)

    print(f"GUI-thread steps: {', '.join(f'{k} {1000 * v:.0f} ms' for k, v in widget.timings.items())}")

    # saved results overlay the scan file: NIfTI with its affine, the map at file[:, :, z]
    import nibabel as nib

    from napari_seg_explain.core.images import read_image
    from napari_seg_explain.core.sample import SAMPLE_VOLUME, sample_path

    widget.save_results(tmp_path / "res")
    nii = nib.load(str(tmp_path / "res" / f"{run.run_id}_pdcr_map.nii.gz"))
    scan = read_image(sample_path(SAMPLE_VOLUME))
    assert nii.shape == scan.spatial_shape
    np.testing.assert_allclose(nii.affine, scan.affine)
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[:, :, z], expl.map)

    # rendering: the map adds red and blue over the scan and leaves the rest of it untouched
    viewer.layers["PdCR RoI · RoI 1 · white_matter"].visible = False
    shown = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    amap.visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    diff = (shown - hidden)[..., :3]
    changed = np.abs(diff).sum(axis=-1) > 30
    tint = diff[..., 0] - diff[..., 2]  # the overlay pulls red up (red map) or blue up (blue map)
    red = (changed & (tint > 15)).sum()
    blue = (changed & (tint < -15)).sum()
    assert red > 0 and blue > 0 and red + blue > 0.95 * changed.sum()
    # the share of red among coloured pixels follows the share of supporting blocks
    s = expl.stats
    assert red / (red + blue) == pytest.approx(s["n_negative"] / (s["n_negative"] + s["n_positive"]), abs=0.1)
    assert changed.mean() < 0.5  # most of the canvas (0 effect, NaN, background) stays as it was


def test_manifest_widget_docks_by_name(make_napari_viewer):
    """napari.yaml contributes the widget, and napari can dock it by name."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest("napari-seg-explain")
    widgets = list(manifest.contributions.widgets or [])
    assert widgets, "napari.yaml contributes the dock widget"
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-seg-explain", widgets[0].display_name)
    assert type(widget).__name__ == "SegExplainWidget"
