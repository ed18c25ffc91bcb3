"""How results are shown and kept: a new result hides the other runs (a sufficient region is an outline),
reopened results show every run at its slice, two runs compared share one colour scale, notifications keep
whole words, Save asks before writing into a non-empty folder and leaves it consistent, NIfTI outputs keep
the source's sform/qform codes, and a fitted view stays fitted when the canvas changes size.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_results_display.py -q``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gui_helpers import SCALE, TRANSLATE, Z, add_rect, cue_volume, wait_idle
from qtpy.QtCore import Qt

from napari_seg_explain.napari.colormaps import MASK_CONTOUR
from napari_seg_explain.napari.widgets.compare import viewer_grid
from napari_seg_explain.napari.widgets.runner import FIRST_LINE, notice

SELF_POOL = "The image itself (fallback, not the paper's setting)"


def _load(qtbot, widget, path):
    widget.load_model(str(path))
    wait_idle(qtbot, widget)
    assert widget.loaded is not None


def _pdcr(widget, n=2, screen=1):
    widget.set_method("pdcr")
    widget.param("patch").setValue(8)
    widget.param("n").setValue(n)
    widget.param("screen").setValue(screen)
    widget.pool_combo.setCurrentText(SELF_POOL)


def _run(qtbot, widget):
    assert widget.run() is not None
    wait_idle(qtbot, widget)


def _ticked(widget):
    lst = widget.runs_list
    return [lst.item(i).checkState() == Qt.CheckState.Checked for i in range(lst.count())]


def _limits(layer):
    return tuple(float(v) for v in layer.contrast_limits)


def _run_on_slice(qtbot, viewer, widget, image, z, box, name):
    """Show slice ``z``, draw ``box`` on it in a RoI layer of its own, explain it with PdCR."""
    viewer.dims.set_current_step(0, z)
    add_rect(viewer, *box, z=z, image=image, name=name)
    widget.sync.refresh()
    widget.roi_combo.setCurrentText(name)
    _run(qtbot, widget)
    return widget.latest()


# ------------------------------------------------------------------------ item 4: no pile-up on the canvas
def test_a_new_result_hides_the_other_runs_and_the_sufficient_region_is_an_outline(qtbot, viewer_widget,
                                                                                 cue_model_file):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _pdcr(widget)
    _run(qtbot, widget)
    pdcr = widget.latest()
    assert all(lay.visible for lay in pdcr.layers.values())

    widget.set_method("misure")
    widget.param("iterations").setValue(2)
    _run(qtbot, widget)
    misure = widget.latest()
    assert not any(lay.visible for lay in pdcr.layers.values()), "the PdCR map no longer shows under MiSuRe's"
    assert all(lay.visible for lay in misure.layers.values())
    assert len(widget.runs) == 2 and _ticked(widget) == [False, True]  # still listed, unticked
    region = misure.layers["sufficient_region"]
    assert region.contour == MASK_CONTOUR > 0, "the sufficient region is an outline, not a fill"

    # a rerun of the PdCR run (same inputs): its layers come back, MiSuRe's go
    _pdcr(widget)
    _run(qtbot, widget)
    assert len(widget.runs) == 2 and widget.latest().run_id == pdcr.run_id
    assert all(lay.visible for lay in pdcr.layers.values())
    assert not any(lay.visible for lay in misure.layers.values())
    assert region.contour == MASK_CONTOUR  # untouched by the other run


# ------------------------------------------------------------------- item 5: reopened results are found
def test_reopened_results_show_every_run_at_its_slice(qtbot, viewer_widget, cue_model_file, tmp_path):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    _pdcr(widget)
    first = _run_on_slice(qtbot, viewer, widget, image, 2, (8, 8, 24, 24), "RoI low")
    second = _run_on_slice(qtbot, viewer, widget, image, 6, (8, 16, 16, 24), "RoI high")
    assert (first.geom.slice_index, second.geom.slice_index) == (2, 6)
    saved = {rec.run_id: (rec.label, rec.expl.map.copy(), rec.geom.slice_index) for rec in widget.runs}
    out = tmp_path / "two slices"
    assert widget.save_results(out) is not None
    widget.runs_section.select(list(saved))
    widget.runs_section.delete_button.click()
    assert len(widget.runs) == 0
    viewer.dims.set_current_step(0, 0)  # the user is elsewhere

    widget.open_results(out)
    assert {rec.run_id for rec in widget.runs} == set(saved) and widget.runs_list.count() == 2
    for rec in widget.runs:  # every run, its map at its own slice (NaN on the other slices)
        label, amap, z = saved[rec.run_id]
        assert rec.label == label and rec.geom.slice_index == z
        np.testing.assert_array_equal(rec.layers["map"].data[z], amap)
        assert np.isnan(np.delete(rec.layers["map"].data, z, axis=0)).all()
    shown = widget.runs.get(second.run_id)
    # the viewer is on the shown (last) run's slice, with its numbers and only its layers
    assert viewer.dims.current_step[0] == 6
    assert "RoI high" in widget.stats_panel.title.text() and "M0" in widget.stats_panel.text()
    assert widget.runs_list.selectedItems()[0].text() == shown.display
    assert _ticked(widget) == [False, True]
    assert all(lay.visible for lay in shown.layers.values())
    assert not any(lay.visible for lay in widget.runs.get(first.run_id).layers.values())
    # the display defaults hold: colour bars are off unless asked for
    assert not widget.canvas_colorbar.isChecked()
    assert not any(lay.colorbar.visible for lay in viewer.layers if hasattr(lay, "colorbar"))

    # ticking the other run shows it at its slice
    widget.runs_list.item(0).setCheckState(Qt.CheckState.Checked)
    assert viewer.dims.current_step[0] == 2
    assert all(lay.visible for lay in widget.runs.get(first.run_id).layers.values())


# ---------------------------------------------------------------- item 10: one colour scale for two runs
def test_two_runs_compared_share_contrast_limits(qtbot, make_napari_viewer, cue_model_file):
    """Docked as napari docks it from the Plugins menu (the widget gets a proxy of the viewer)."""
    viewer = make_napari_viewer()
    image = viewer.add_image(cue_volume(), name="cue volume", scale=SCALE, translate=TRANSLATE)
    _, widget = viewer.window.add_plugin_dock_widget("napari-seg-explain", "Segmentation Explainer")
    assert widget.viewer is not viewer  # napari's PublicOnlyProxy
    _load(qtbot, widget, cue_model_file)
    _pdcr(widget)
    assert widget.runs_section.shared_scale.isChecked()  # on by default
    a = _run_on_slice(qtbot, viewer, widget, image, Z, (8, 8, 24, 24), "RoI a")
    b = _run_on_slice(qtbot, viewer, widget, image, Z, (16, 8, 24, 16), "RoI b")
    la, lb = (float(np.nanmax(np.abs(r.expl.map))) for r in (a, b))
    assert not np.isclose(la, lb), "the two runs need different largest effects"
    big = max(la, lb)
    map_a, map_b = a.layers["map"], b.layers["map"]
    # one run shown: its own scale
    assert _limits(map_b) == pytest.approx((-lb, lb))
    assert widget.stats_panel.legend.limit == pytest.approx(lb)

    before = list(viewer.layers)
    widget.runs_section.select([a.run_id, b.run_id])
    widget.runs_section.compare_button.click()
    grid = viewer_grid(viewer)
    assert grid.enabled
    layers = list(viewer.layers)  # each run over the image in a viewbox of its own
    assert len(layers) == 1 + 2 + 2 * 2 + 1  # image, 2 RoI layers, 2 runs x 2 layers, the second view
    pos = {id(lay): grid.position(i, layers) for i, lay in enumerate(layers)}
    second = viewer.layers["cue volume (compare)"]
    cells = [{pos[id(lay)] for lay in group} for group in ([image, *a.layers.values()], [second, *b.layers.values()])]
    assert all(len(c) == 1 for c in cells) and cells[0] != cells[1] and (-1, -1) not in cells[0] | cells[1]
    assert _limits(map_a) == pytest.approx((-big, big)) and _limits(map_b) == pytest.approx((-big, big))
    widget.runs_section.select([a.run_id])  # the panel of one of them: the shared scale, in Dice points
    legend = widget.stats_panel.legend
    assert legend.limit == pytest.approx(big)
    assert "Dice points" in legend.caption() and "shared by the 2 runs shown" in legend.caption()
    widget.canvas_colorbar.setChecked(True)  # the canvas colour bars show the same absolute scale
    assert map_a.colorbar.visible and map_b.colorbar.visible
    widget.canvas_colorbar.setChecked(False)

    widget.runs_section.shared_scale.setChecked(False)  # each map on its own scale again
    assert _limits(map_a) == pytest.approx((-la, la)) and _limits(map_b) == pytest.approx((-lb, lb))
    assert legend.limit == pytest.approx(la) and "own" in legend.caption()
    widget.runs_section.shared_scale.setChecked(True)
    assert _limits(map_a) == pytest.approx((-big, big))

    widget.runs_section.compare_button.click()  # end: one run shown again, its own scale
    assert not grid.enabled and all(x is y for x, y in zip(viewer.layers, before)) and len(viewer.layers) == len(before)
    assert _limits(map_b) == pytest.approx((-lb, lb)) and not map_a.visible


# ------------------------------------------------------------------- item 11: notifications, whole words
@pytest.mark.parametrize("text", [
    "PdCR done: 42% of blocks support the RoI (red), 30% work against it (blue)",
    "Explaining: PdCR needs a RoI: press 'Draw RoI' and draw a rectangle over the structure",
    "Opening results: /tmp/some/folder holds no results.json: choose a folder written by 'Save results'",
    "MiSuRe done: Dice explained 0.95, perturbation ratio 0.12",
    "a short one",
])
def test_notice_keeps_a_short_first_line_of_whole_words(text):
    out = notice(text)
    first = out.split("\n")[0]
    assert len(first) <= FIRST_LINE
    assert " ".join(out.split()) == " ".join(text.split()), "nothing lost, no word split"
    assert text.startswith(first) and text[len(first):len(first) + 1] in ("", " ")


def test_notifications_show_their_first_line_whole(qtbot, viewer_widget, cue_model_file, tmp_path):
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QLabel

    messages: list[str] = []  # as napari gets them (the 'notes' fixture puts them on one line)
    record = lambda n: messages.append(str(n.message))  # noqa: E731
    notification_manager.notification_ready.connect(record)
    try:
        _notifications_of_a_session(qtbot, *viewer_widget, cue_model_file, tmp_path)
    finally:
        notification_manager.notification_ready.disconnect(record)
    viewer = viewer_widget[0]
    assert len(messages) >= 6 and any("PdCR done" in m for m in messages) and any("saved" in m for m in messages)
    window = viewer.window._qt_window
    for message in messages:
        first = message.split("\n")[0]
        assert len(first) <= FIRST_LINE, message
        note = NapariQtNotification(message, "info", parent=window)  # as napari shows it, collapsed
        note.show()
        qtbot.wait(10)
        shown = QLabel.text(note.message).split("\n")[0]  # the elided text napari paints
        note.close()
        assert shown == first, f"cut: {shown!r}"


def _notifications_of_a_session(qtbot, viewer, widget, image, cue_model_file, tmp_path):
    widget.run()  # an error: no model yet
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _pdcr(widget)
    _run(qtbot, widget)
    widget.save_results(tmp_path / "r")
    widget.save_results(tmp_path / "r")  # refused: not empty
    widget.open_results(tmp_path / "nothing here")


# ---------------------------------------------------------------------- item 11: Save into a used folder
def test_save_into_a_non_empty_folder_asks_and_leaves_it_consistent(qtbot, viewer_widget, cue_model_file,
                                                                    tmp_path, monkeypatch, notes):
    from napari_seg_explain.napari.widgets import results_view

    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    _pdcr(widget)
    a = _run_on_slice(qtbot, viewer, widget, image, Z, (8, 8, 24, 24), "RoI a")
    b = _run_on_slice(qtbot, viewer, widget, image, Z, (16, 8, 24, 16), "RoI b")
    out = tmp_path / "res"
    assert widget.save_results(out) is not None
    first = json.loads((out / "results.json").read_text())
    files_a = next(e["files"] for e in first["runs"] if e["run_id"] == a.run_id)
    assert all((out / f).is_file() for f in files_a)
    (out / "my notes.txt").write_text("mine")  # never listed by a results.json: never touched
    (out / "other.npy").write_bytes(b"x")

    widget.runs_section.select([a.run_id])
    widget.runs_section.delete_button.click()
    # a folder given in code: refused unless overwrite=True, nothing written
    n_notes = len(notes)
    assert widget.save_results(out) is None
    assert "not empty" in " ".join(m for _, m in notes[n_notes:])
    assert json.loads((out / "results.json").read_text()) == first
    # the button: a folder dialog, then a question; the answer 'Cancel' writes nothing
    asked = []
    monkeypatch.setattr(results_view.QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    widget.results_view.confirm_overwrite = lambda folder, entries: asked.append(set(entries)) or False
    widget.save_button.click()
    assert asked and {"results.json", "my notes.txt"} <= asked[0]
    assert json.loads((out / "results.json").read_text()) == first
    # 'Save': the folder holds this save only, plus the files no results.json listed
    widget.results_view.confirm_overwrite = lambda folder, entries: True
    widget.save_button.click()
    index = json.loads((out / "results.json").read_text())
    assert [e["run_id"] for e in index["runs"]] == [b.run_id]
    listed = {f for e in index["runs"] for f in e["files"]} | {e["file"] for e in index["segmentations"]}
    assert all((out / f).is_file() for f in listed)
    assert not any((out / f).exists() for f in files_a), "the deleted run's files are gone"
    assert {p.name for p in out.iterdir()} == listed | {"results.json", "my notes.txt", "other.npy"}
    # in code, with overwrite=True
    assert widget.save_results(out, overwrite=True) is not None
    assert {p.name for p in out.iterdir()} == listed | {"results.json", "my notes.txt", "other.npy"}


# ------------------------------------------------------------------ item 11: NIfTI codes of the source
def test_nifti_outputs_keep_the_sources_sform_and_qform_codes(qtbot, make_napari_viewer, cue_model_file, tmp_path):
    import nibabel as nib

    from napari_seg_explain.napari.widgets import SegExplainWidget
    from napari_seg_explain.napari.writer import write_layer

    # a scan stored so that the display orientation is its voxel order: i runs A->P, j R->L, k I->S
    affine = np.array([[0, -0.5, 0, 20.0], [-0.5, 0, 0, 30.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])
    nii = nib.Nifti1Image(np.moveaxis(cue_volume(), 0, -1), affine)
    nii.set_sform(affine, code=2)  # aligned
    nii.set_qform(affine, code=1)  # scanner
    path = tmp_path / "cue_scan.nii.gz"
    nib.save(nii, str(path))
    viewer = make_napari_viewer()
    image, = viewer.open(str(path), plugin="napari-seg-explain")
    np.testing.assert_array_equal(image.data, cue_volume())
    meta = image.metadata["seg_explain"]
    assert (meta["sform_code"], meta["qform_code"]) == (2, 1)
    viewer.dims.set_current_step(0, Z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    _load(qtbot, widget, cue_model_file)
    widget.image_section.segment_scope.setCurrentText("current slice")
    widget.segment()
    wait_idle(qtbot, widget)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _pdcr(widget)
    _run(qtbot, widget)
    run = widget.latest()
    out = tmp_path / "res"
    widget.save_results(out)
    index = json.loads((out / "results.json").read_text())
    written = [out / f for e in index["runs"] for f in e["files"] if f.endswith(".nii.gz")]
    written += [out / e["file"] for e in index["segmentations"]]
    assert len(written) == 3  # map, RoI, segmentation
    for f in written:
        hdr = nib.load(str(f)).header
        assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (2, 1), f.name
        np.testing.assert_allclose(nib.load(str(f)).affine, affine)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / f"{run.run_id}_pdcr_map.nii.gz")).dataobj)[:, :, Z],
                                  run.expl.map)
    # the plugin's writer (File > Save Selected Layer) too
    amap = run.layers["map"]
    saved, = write_layer(str(tmp_path / "map.nii.gz"), amap.data, {"metadata": amap.metadata, "name": amap.name})
    hdr = nib.load(saved).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (2, 1)


# --------------------------------------------------------------- item 11: the canvas keeps the brain in view
def _fitted_camera(viewer):
    """The camera napari's Reset view gives now (the camera is put back)."""
    cam = viewer.camera
    before = (tuple(cam.center), cam.zoom)
    viewer.reset_view()
    fitted = (tuple(cam.center), cam.zoom)
    cam.center, cam.zoom = before
    return fitted


def test_a_fitted_view_stays_fitted_when_the_canvas_changes_size(qtbot, make_napari_viewer, cue_model_file):
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(cue_volume(), name="cue volume", scale=(2.0, 0.5, 0.5))
    viewer.dims.set_current_step(0, Z)
    qtbot.wait(50)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")  # the dock narrows the canvas
    qtbot.wait(100)
    assert viewer.camera.zoom == pytest.approx(_fitted_camera(viewer)[1])
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    widget.set_method("misure")
    widget.param("iterations").setValue(2)
    _run(qtbot, widget)  # result layers (a Labels layer among them) appear
    qtbot.wait(100)
    size = tuple(viewer.canvas.size)
    window = viewer.window._qt_window
    window.resize(window.width() + 300, window.height())  # the canvas changes width (as when the panels do)
    qtbot.waitUntil(lambda: tuple(viewer.canvas.size) != size, timeout=3000)
    center, zoom = _fitted_camera(viewer)
    assert viewer.camera.zoom == pytest.approx(zoom) and np.allclose(viewer.camera.center, center)

    viewer.camera.zoom = 3 * zoom  # the user zooms in: a later size change leaves the view alone
    size = tuple(viewer.canvas.size)
    window.resize(window.width() - 150, window.height())
    qtbot.waitUntil(lambda: tuple(viewer.canvas.size) != size, timeout=3000)
    assert viewer.camera.zoom == pytest.approx(3 * zoom)
