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


# ------------------------------------------------------------------------------ 3. the time left
def test_time_left_follows_the_whole_run_and_the_cost_line_is_about_right(qtbot, make_napari_viewer):
    """Acceptance test on the sample (slice 64, a 32x32 RoI on white matter, the ground-truth label, the volume
    pool): the time left shown stays within a factor 2 of the real remaining time at every tenth of the run
    (after its first second), the stage reads '1/2 screening' then '2/2 estimating', and the wall time is
    within a factor 2 of the cost line's time."""
    viewer, widget, image = _sample_viewer(make_napari_viewer, qtbot, shown=HELD_OUT, label=True)
    y0, x0, y1, x1 = _wm_box(HELD_OUT)
    add_rect(viewer, y0, x0, y1, x1, z=HELD_OUT, image=image)
    widget.sync.refresh()
    _pdcr(widget, n=8)
    widget.gt_combo.setCurrentText("mni152_wm_label")
    assert widget.explain_section.pool_choice() == POOL_VOLUME
    cost = widget.controller.estimate(widget.choices())
    assert cost.ok and "about" in cost.text and np.isfinite(cost.seconds), cost.text

    shown: list[tuple[float, float, int, int, str]] = []  # (time, seconds left shown, done, total, line)
    section = widget.explain_section
    show = section.show_progress

    def record(done, total, text):
        show(done, total, text)
        shown.append((time.perf_counter(), widget.tasks.time_left, int(done), int(total), text))

    section.show_progress = record
    ended: list[float] = []
    on_done = widget.tasks._on_done
    widget.tasks._on_done = lambda ev: (ended.append(time.perf_counter()), on_done(ev))
    t0 = time.perf_counter()
    assert widget.run() is not None
    wait_idle(qtbot, widget, 60000)
    t_end = ended[0]
    expl = widget.latest("pdcr").expl
    assert expl.stats["metric"] == "dice_vs_label" and expl.stats["n_blocks_screened_in"] > 0

    lines = [s[4] for s in shown]
    assert any(t.startswith("1/2 screening: ") and "/ at most " in t and " left" in t for t in lines), lines[:5]
    assert any(t.startswith("2/2 estimating: ") and "at most" not in t and " left" in t for t in lines)
    timed = [s for s in shown if np.isfinite(s[1]) and s[0] - t0 >= 1.0]
    assert timed, lines
    duration = t_end - t0
    report = []
    for frac in np.arange(0.1, 0.95, 0.1):  # the label shown when a tenth, two tenths, ... of the run had gone
        at = t0 + frac * duration
        s = max((s for s in timed if s[0] <= at), key=lambda s: s[0], default=None)
        if s is None:
            continue
        actual = t_end - s[0]
        report.append((round(frac, 1), round(s[1], 2), round(actual, 2), s[4].split(":")[0]))
        assert 0.5 <= s[1] / actual <= 2.0, report
    assert len(report) >= 7, report
    wall = float(expl.provenance["wall_time_s"])
    print(f"\ntime left shown vs real (fraction, shown s, real s, stage): {report}\n"
          f"cost line {cost.seconds:.1f} s ({cost.passes} passes at most), wall {wall:.1f} s "
          f"({expl.provenance['forward_passes']} passes), click to result {duration:.1f} s")
    assert 0.5 <= cost.seconds / wall <= 2.0
    assert 0.5 <= cost.seconds / duration <= 2.0


def test_run_clock_counts_the_whole_run_at_the_speed_of_the_current_stage():
    """The time left without a viewer: the upper bound until screening ends, then the revised total; later RoIs
    at their upper bounds; the speed at load until a stage has measured its own over half a second."""
    from napari_seg_explain.napari.widgets.tasks import RunClock

    clock = RunClock(0.0, [1001, 501], seconds_per_pass=0.01)
    total, left = clock.update(0.05, 0, 0, 1, "preparing the perturbation pool")
    assert (total, clock.is_bound, clock.stage) == (1001, True, None) and left == (1001 + 501) * 0.01
    t, done = 0.05, 1
    while done < 301:  # screening: 20 passes per 0.1 s = 5 ms per pass
        t, done = t + 0.1, done + 20
        total, left = clock.update(t, 0, done, 301, "screening")
    assert (total, clock.is_bound, clock.stage) == (1001, True, (1, 2))
    assert abs(left - (1001 - 301 + 501) * 0.005) < 1e-6
    t, done = t + 1.0, done + 20  # the first batch of a stage (one-off costs) does not set the speed
    total, left = clock.update(t, 0, done, 601, "estimating")
    assert (total, clock.is_bound, clock.stage) == (601, False, (2, 2))
    assert abs(left - (601 - 321 + 501) * 0.005) < 1e-6
    while done < 601:  # estimating: 10 ms per pass
        t, done = t + 0.2, done + 20
        total, left = clock.update(t, 0, done, 601, "estimating")
    assert abs(left - 501 * 0.01) < 1e-6
    total, left = clock.update(t + 0.1, 1, 5, 101, "sufficient region")  # the next RoI's run: MiSuRe-like
    assert (total, clock.stage) == (501, (1, 2)) and abs(left - 496 * 0.01) < 1e-6
    clock.update(t + 0.2, 1, 10, 51, "minimal region")
    assert clock.stage == (2, 2) and not clock.is_bound
    clock.update(t + 0.3, 1, 51, 51, "done")
    assert clock.stage is None and not clock.is_bound


def test_input_unlike_the_training_data_is_warned_in_the_widget_and_recorded(qtbot, make_napari_viewer, notes):
    """The sample model's card says MR; a CT-like scan (air at -1000) gets a warning when Run starts, and the result
    records it."""
    import numpy as np

    from napari_seg_explain.core.sample import SAMPLE_CARD, SAMPLE_VOLUME, sample_path
    from napari_seg_explain.napari.widgets import SegExplainWidget
    from gui_helpers import add_rect, wait_idle

    viewer = make_napari_viewer()
    from napari_seg_explain.core.images import read_image

    t1 = read_image(sample_path(SAMPLE_VOLUME)).data[0]
    ct = np.moveaxis(t1 / t1.max() * 2000 - 1000, -1, 0).astype(np.float32)  # (slices, rows, cols) in HU
    image = viewer.add_image(ct, name="ct-like")
    viewer.dims.set_current_step(0, 64)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.load_model(str(sample_path(SAMPLE_CARD)))
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30000)
    add_rect(viewer, 56, 16, 88, 48, z=64, image=image)
    widget.sync.refresh()
    widget.param("n").setValue(1)
    widget.param("screen").setValue(1)
    widget.run()
    wait_idle(qtbot, widget, 120000)
    assert any("looks like CT" in m for _, m in notes), notes
    assert any("looks like CT" in w for w in widget.latest("pdcr").expl.warnings), "recorded in the result"
