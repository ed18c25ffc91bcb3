"""Compare… in a real viewer: three methods on one RoI of the 2-D sample slice, their maps side by side in the grid,
the deletion / insertion curves docked; Cancel mid-way leaves the viewer as it was; RISE maps get contrast limits
from their data.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_compare_methods.py -q``.
"""

from __future__ import annotations

import numpy as np
from gui_helpers import add_rect, configure_pdcr, wait_idle

from napari_seg_explain.napari.widgets.compare import viewer_grid

METHODS = ["pdcr", "occlusion", "seg_gradcam"]
TITLES = {"pdcr": "PdCR", "occlusion": "Occlusion", "seg_gradcam": "Seg-Grad-CAM"}


def _sample_slice_viewer(qtbot, make_napari_viewer):
    """The 2-D sample slice (it names the sample model: the dock loads it), segmented, a 32x32 RoI on white matter."""
    from napari.layers import Layer

    from napari_seg_explain.core.sample import pick_box
    from napari_seg_explain.napari.sample_data import sample_slice
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    (data, kwargs, kind), = sample_slice()
    image = viewer.add_layer(Layer.create(data, kwargs, kind))
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30000)
    wait_idle(qtbot, widget)
    widget.segment()
    wait_idle(qtbot, widget)
    seg = next(lay for lay in viewer.layers if lay.name.endswith("segmentation")).data
    add_rect(viewer, *pick_box(np.asarray(seg) == 1), z=None, image=image)
    widget.sync.refresh()
    widget.roi_combo.setCurrentText("RoI")
    widget.target.setCurrentText("white_matter")
    configure_pdcr(widget, n=2, screen=1)
    return viewer, widget, image


def test_compare_three_methods_grid_curves_and_cancel(qtbot, make_napari_viewer):
    viewer, widget, image = _sample_slice_viewer(qtbot, make_napari_viewer)

    # the dialog offers the methods that fit (one channel: no Shapley), the default ones checked
    offered = dict(widget.method_compare.offered())
    assert "shapley" not in offered and offered["pdcr"] and offered["occlusion"] and offered["seg_gradcam"]
    assert widget.compare_button.isEnabled()

    # Cancel mid-way: no new layer, no run
    before = [lay.name for lay in viewer.layers]
    worker = widget.compare_methods(METHODS, steps=4, draws=1)
    assert worker is not None and widget.busy
    qtbot.waitUntil(lambda: "Occlusion" in widget.progress_label.text(), timeout=30000)
    widget.cancel()
    wait_idle(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == before and len(widget.runs) == 0
    assert not viewer_grid(viewer).enabled

    # the whole comparison
    assert widget.compare_methods(METHODS, steps=4, draws=1) is not None
    wait_idle(qtbot, widget, 60000)
    assert len(widget.runs) == 3 and {r.method for r in widget.runs} == set(METHODS)
    for rec in widget.runs:
        assert rec.layers["map"] in viewer.layers and rec.layers["map"].visible
    grid = viewer_grid(viewer)
    assert grid.enabled and grid.stride == 3  # each cell: a view of the image, the map, the RoI outline
    assert widget.runs_section.comparing
    plot = widget.method_compare.plot
    assert plot is not None and plot.isVisible() or plot.parent() is not None
    deletion = plot.deletion_curves()
    assert set(deletion) == {TITLES[m] for m in METHODS}
    m0 = {r.evaluation["M0"] for r in widget.method_compare.results}
    assert len(m0) == 1 and 0 < m0.pop() <= 100  # one unperturbed RoI Dice (Dice points) ...
    starts = {round(c[0], 6) for c in deletion.values()}
    assert len(starts) == 1  # ... where every deletion curve starts
    assert all(len(c) == 5 for c in deletion.values())  # steps = 4: fractions 0, 1/4, ..., 1
    assert plot.table.rowCount() == 3
    insertion = plot.insertion_curves()
    assert all(plot.lines[t][1].get_linestyle() == "--" for t in insertion)

    # End compare puts the viewer back (the compare views removed, the grid off)
    widget.runs_section.compare_button.click()
    assert not viewer_grid(viewer).enabled
    assert not [lay for lay in viewer.layers if "(compare)" in lay.name or "(empty)" in lay.name]


def test_rise_map_contrast_limits_follow_its_data():
    """RISE maps cluster around the mean Dice: drawn from their minimum to their maximum; MiSuRe keeps 0..1."""
    from napari_seg_explain.napari import layers as L
    from napari_seg_explain.napari.slice_geometry import SliceGeometry

    plane = np.linspace(0.30, 0.36, 64, dtype=np.float32).reshape(8, 8)
    plane[0, 0] = np.nan
    geom = SliceGeometry((8, 8))
    rl = next(r for r in L.result_layers("rise")[1] if r.key == "map")
    _, kw, _ = L.result_layer_data(rl, plane, geom, "RISE saliency", {"seg_explain": {"method": "rise"}})
    lo, hi = kw["contrast_limits"]
    assert np.isclose(lo, np.nanmin(plane)) and np.isclose(hi, np.nanmax(plane))
    _, kw, _ = L.result_layer_data(rl, plane, geom, "MiSuRe saliency", {"seg_explain": {"method": "misure"}})
    assert kw["contrast_limits"] == (0.0, 1.0)
