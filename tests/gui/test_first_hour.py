"""The first hour in napari: what a new user meets first, with real viewers and the real sample model.

A single DICOM file (a one-slice volume) explained with the default pool; a RoI drawn on another slice than the
one shown; the time left during a run and the cost line's time against the real run.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_first_hour.py -q``.
"""

from __future__ import annotations

import time

import numpy as np
from gui_helpers import add_rect, sample_scan_layer_data, wait_idle

from napari_seg_explain.napari.widgets.pools import POOL_LAYERS, POOL_SELF, POOL_VOLUME

HELD_OUT = 64  # a held-out slice of the sample model


def _pdcr(widget, n: int, screen: int = 3, patch: int = 8) -> None:
    widget.set_method("pdcr")
    widget.param("patch").setValue(patch)
    widget.param("screen").setValue(screen)
    widget.param("n").setValue(n)
    widget.param("batch_size").setValue(0)


def _sample_viewer(make_napari_viewer, qtbot, shown: int, label: bool = False):
    """The sample scan as File > Open Sample gives it (and its label), slice ``shown`` in view, the dock docked
    from the Plugins menu and the model the scan names loaded."""
    from napari.layers import Layer

    from napari_seg_explain.napari.launch import PLUGIN, WIDGET
    from napari_seg_explain.napari.sample_data import sample_label

    viewer = make_napari_viewer()
    data, kwargs = sample_scan_layer_data()
    image = viewer.add_layer(Layer.create(data, kwargs, "image"))
    if label:
        (ldata, lkw, kind), = sample_label()
        viewer.add_layer(Layer.create(ldata, lkw, kind))
        viewer.layers.selection.active = image
    viewer.dims.set_current_step(0, shown)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)  # as from the Plugins menu
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30000)  # the scan names its model
    wait_idle(qtbot, widget)
    return viewer, widget, image


def _wm_box(z: int) -> tuple[int, int, int, int]:
    """A 32x32 box on white matter of slice ``z`` (layer rows and columns), from the sample's label."""
    from napari_seg_explain.core.sample import pick_box
    from napari_seg_explain.napari.sample_data import sample_label

    (ldata, _kw, _kind), = sample_label()
    return pick_box(np.asarray(ldata[z]) == 1)


# -------------------------------------------------------------------- 1. a one-slice volume is 2-D
def _one_file_dicom(path):
    """One axial slice of the sample scan written as a single DICOM file (int16, 1.5 mm pixels)."""
    import SimpleITK as sitk

    data, _kwargs = sample_scan_layer_data()
    plane = np.asarray(data[HELD_OUT], dtype=np.float32)
    img = sitk.GetImageFromArray(np.round(plane / plane.max() * 1000).astype(np.int16)[None])
    img.SetSpacing((1.5, 1.5, 1.5))
    sitk.WriteImage(img, str(path))
    return path


def test_one_slice_dicom_runs_pdcr_with_the_default_pool(qtbot, make_napari_viewer, tmp_path, notes):
    """A single DICOM file opens as a (1, rows, cols) volume: the dock (from the Plugins menu) treats it as 2-D (the
    image itself as the pool, no 'whole volume', no 'other slices' entry); forcing the volume pool is refused in
    the cost line and at Run, naming the control; PdCR with the defaults (N = 1) then runs."""
    from napari_seg_explain.napari.launch import PLUGIN, WIDGET

    path = _one_file_dicom(tmp_path / "one_slice.dcm")
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-seg-explain")
    assert len(layers) == 1
    image = layers[0]
    assert image.data.shape[0] == 1 and image.data.ndim == 3  # the reader's (slices, rows, cols)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)  # sees the layers through proxies
    assert widget.explain_section.pool_choice() == POOL_SELF  # nothing else open: the image itself
    volume_item = widget.pool_combo.model().item(0)
    assert not volume_item.isEnabled()
    assert not widget.image_section.segment_scope.isEnabled()
    assert "one-slice volume" in widget.slice_label.text()
    widget.load_sample_model()
    wait_idle(qtbot, widget)
    assert widget.loaded is not None

    y0, x0, y1, x1 = _wm_box(HELD_OUT)
    add_rect(viewer, y0, x0, y1, x1, z=0, image=image)
    widget.sync.refresh()
    _pdcr(widget, n=1)  # the defaults (patch 8, S 3, the pool) with a tiny N

    # the volume pool, chosen anyway: the cost line says what is wrong, the Run refuses before starting
    widget.pool_combo.setCurrentIndex(0)
    assert widget.explain_section.pool_choice() == POOL_VOLUME
    est = widget.update_estimate()
    assert est.startswith("Cannot run yet:") and "one-slice volume" in est and "set Pool to" in est
    assert widget.run() is None
    errors = [" ".join(m.split()) for sev, m in notes if "error" in sev]  # lines joined
    assert errors and "set Pool to" in errors[-1] and "--pool" not in errors[-1]

    widget.explain_section.set_pool(POOL_SELF)
    est = widget.update_estimate()
    assert est.startswith("Cost: at most") and "about" in est
    assert widget.run() is not None
    wait_idle(qtbot, widget, 60000)
    run = widget.latest("pdcr")
    assert run is not None, [m for _s, m in notes]
    assert run.expl.map.shape == image.data.shape[1:] and np.isfinite(run.expl.map).any()
    assert viewer.layers["PdCR map · RoI 1 · white_matter"].data.shape == image.data.shape
    assert any("itself" in m for sev, m in notes if "warning" in sev)  # the recorded fallback
    assert not [m for sev, m in notes if "error" in sev][len(errors):]


def test_one_slice_volume_draws_its_pool_from_the_other_open_images(qtbot, make_napari_viewer):
    """With other images open, a one-slice volume's pool is those images (never the image itself, also for a dock
    from the Plugins menu, which sees the layers through proxies); a one-slice volume has no 'whole volume'
    segmentation, a real volume gets both back."""
    from napari_seg_explain.napari.launch import PLUGIN, WIDGET
    from napari_seg_explain.napari.widgets.pools import pool_spec

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 32, 32), dtype=np.float32), name="other scan")
    viewer.add_image(rng.random((1, 32, 32), dtype=np.float32), name="single slice")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.image_combo.currentText() == "single slice"
    assert widget.explain_section.pool_choice() == POOL_LAYERS
    assert pool_spec(POOL_LAYERS, widget.viewer, widget.image_layer(), 0).description == "image layers 'other scan'"
    assert not widget.image_section.segment_scope.isEnabled()
    widget.image_combo.setCurrentText("other scan")
    assert widget.image_section.segment_scope.isEnabled() and widget.pool_combo.model().item(0).isEnabled()


# ---------------------------------------------------------------- 2. a RoI drawn on another slice
def test_roi_on_another_slice_is_named_before_run_and_brought_into_view(qtbot, make_napari_viewer):
    """A rectangle drawn on slice 64 while 74 is shown: the cost and slice lines say that slice 64 is explained,
    and the viewer shows slice 64 once the result arrives."""
    from napari_seg_explain.napari.widgets.inputs import current_slice

    viewer, widget, image = _sample_viewer(make_napari_viewer, qtbot, shown=74)
    y0, x0, y1, x1 = _wm_box(HELD_OUT)
    add_rect(viewer, y0, x0, y1, x1, z=HELD_OUT, image=image)
    widget.sync.refresh()
    _pdcr(widget, n=1, screen=1, patch=16)
    assert current_slice(viewer, image) == 74
    said = "explains slice 64 (the RoI's slice; the viewer shows 74)"
    est = widget.update_estimate()
    assert est.startswith(f"Run {said}. Cost: at most"), est
    assert "axial slice 74 shown; <span style='color:#e8a33d'>Run explains slice 64 (the RoI's slice)</span>" \
        in widget.slice_label.text()

    assert widget.run() is not None
    wait_idle(qtbot, widget, 60000)
    run = widget.latest("pdcr")
    assert run.geom.slice_index == HELD_OUT
    assert current_slice(viewer, image) == HELD_OUT  # the result's slice is in view
    assert "the viewer now shows its slice 64" in widget.progress_label.text()
    assert "axial slice 64 (the one shown)" in widget.slice_label.text()
    assert np.isfinite(viewer.layers["PdCR map · RoI 1 · white_matter"].data[HELD_OUT]).any()
    assert "the viewer shows" not in widget.update_estimate()
