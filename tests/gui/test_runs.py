"""Many runs in one viewer: layers of their own per run (method · RoI · class), reruns in place, every shape of a
RoI layer in one Run, the runs list (show/hide, compare side by side, delete), save/open of every run, and an
explainer registered from outside the package showing up everywhere with no edit to the plugin.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_runs.py -q``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from gui_helpers import (SCALE, SELF_POOL, TRANSLATE, Z, add_rect, configure_pdcr, cue_volume, sample_scan_layer_data,
                         wait_idle)
from qtpy.QtCore import Qt

from napari_seg_explain.core.explainers import registry
from napari_seg_explain.core.explainers.base import ExplainerSpec, ResultLayer, Stat, param
from napari_seg_explain.core.progress import Progress
from napari_seg_explain.core.results import Explanation
from napari_seg_explain.napari.widgets.compare import viewer_grid


def _load(qtbot, widget, path):
    widget.load_model(str(path))
    wait_idle(qtbot, widget)
    assert widget.loaded is not None


def _names(viewer):
    return [lay.name for lay in viewer.layers]


def _pdcr(widget, patch=8, n=2, screen=1, pool=SELF_POOL):
    configure_pdcr(widget, n=n, screen=screen, patch=patch, pool=pool)


def _two_shapes(viewer, image, boxes, z=Z):
    """One Shapes layer 'RoI' with a rectangle per box (shape 0 = 'RoI 1', shape 1 = 'RoI 2')."""
    rects = []
    for y0, x0, y1, x1 in boxes:
        corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) - 0.5
        rects.append(np.column_stack([np.full(4, float(z)), corners]))
    return viewer.add_shapes(rects, shape_type="rectangle", name="RoI", edge_color="lime", face_color="transparent",
                             scale=image.scale, translate=image.translate)


def _mixed_boxes(seg: np.ndarray, size: int = 32, step: int = 8) -> list[tuple[int, int, int, int]]:
    """Two non-overlapping boxes each holding both classes (30 to 70 % white matter), most balanced first."""
    h, w = seg.shape
    cands = []
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            frac = float((seg[y:y + size, x:x + size] == 1).mean())
            if 0.3 <= frac <= 0.7:
                cands.append((abs(frac - 0.5), y, x))
    first = min(cands)
    second = min(c for c in cands if abs(c[1] - first[1]) >= size or abs(c[2] - first[2]) >= size)
    return [(y, x, y + size, x + size) for _, y, x in (first, second)]


# ------------------------------------------------------------------ two RoIs x two classes, sample model
def test_two_rois_and_two_classes_keep_four_runs_saved_and_opened(qtbot, make_napari_viewer, tmp_path):
    """The sample model: every shape of the RoI layer (two RoIs on the white-matter border) explained for
    white_matter, then for background: four sets of layers, four runs in the saved folder, four opened back."""
    from napari.layers import Layer

    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    data, kwargs = sample_scan_layer_data()
    image = viewer.add_layer(Layer.create(data, kwargs, "image"))
    z = 62
    viewer.dims.set_current_step(0, z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30000)  # the scan names its model
    wait_idle(qtbot, widget)
    widget.image_section.segment_scope.setCurrentText("current slice")
    widget.segment()
    wait_idle(qtbot, widget)
    seg = viewer.layers["mni152-wm-unet2d segmentation"].data[z]
    _two_shapes(viewer, image, _mixed_boxes(seg), z)
    widget.sync.refresh()
    _pdcr(widget, patch=16, n=1, screen=1)
    widget.every_shape.setChecked(True)
    assert "2 RoIs as one shared run" in widget.update_estimate()  # both shapes on slice z: one PdCR run
    classes = [widget.target.itemText(i) for i in range(widget.target.count())]
    assert classes == ["background", "white_matter"]
    for cls in ("white_matter", "background"):
        widget.target.setCurrentText(cls)
        assert widget.run() is not None
        wait_idle(qtbot, widget, 120000)

    labels = {f"RoI {r} · {c}" for r in (1, 2) for c in ("white_matter", "background")}
    assert {run.label for run in widget.runs} == labels and len(widget.runs) == 4
    for label in labels:
        assert f"PdCR map · {label}" in viewer.layers and f"PdCR RoI · {label}" in viewer.layers
    runs = {run.run_id: run for run in widget.runs}
    for run in runs.values():  # each run's layers carry its id, and its class
        for lay in run.layers.values():
            assert lay.metadata["seg_explain"]["run_id"] == run.run_id
        assert run.expl.run["class_name"] in run.label and run.expl.run["target"] == classes.index(
            run.expl.run["class_name"])
    assert widget.runs_list.count() == 4

    out = tmp_path / "four"
    assert widget.save_results(out) is not None
    index = json.loads((out / "results.json").read_text())
    assert {e["run_id"] for e in index["runs"]} == set(runs) and {e["label"] for e in index["runs"]} == labels
    for rid in runs:
        assert (out / f"{rid}_pdcr_map.nii.gz").exists() and (out / f"{rid}_pdcr_map.json").exists()

    # delete every run in the dock, then open the folder: the four runs come back with their layers
    widget.runs_section.select(list(runs))
    widget.runs_section.delete_button.click()
    assert len(widget.runs) == 0 and not [n for n in _names(viewer) if n.startswith("PdCR")]
    widget.open_results(out)
    assert {run.run_id for run in widget.runs} == set(runs) and {run.label for run in widget.runs} == labels
    for rid, run in runs.items():
        back = widget.runs.get(rid)
        np.testing.assert_array_equal(back.layers["map"].data[z], run.expl.map)
        assert back.layers["map"].name == f"PdCR map · {run.label}"
    assert widget.runs_list.count() == 4


# ---------------------------------------------------------------------------- reruns update in place
def test_rerun_with_identical_inputs_updates_its_layers_in_place(qtbot, viewer_widget, cue_model_file):
    """Two shapes in one Run, twice: the second Run has the same run ids, so the same layer objects are updated
    (none added); moving a shape makes a run of its own, labelled '#2'."""
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    shapes = _two_shapes(viewer, image, [(8, 8, 24, 24), (8, 16, 16, 24)])  # both on the object
    widget.sync.refresh()
    _pdcr(widget)
    widget.every_shape.setChecked(True)
    widget.run()
    wait_idle(qtbot, widget)
    names, layers = _names(viewer), list(viewer.layers)
    ids = [run.run_id for run in widget.runs]
    assert [run.label for run in widget.runs] == ["RoI 1 · object", "RoI 2 · object"]
    assert "PdCR map · RoI 2 · object" in names and len(names) == 2 + 4  # image, RoI layer, 2 runs x 2 layers
    maps = [widget.runs.get(rid).expl.map for rid in ids]

    widget.run()
    wait_idle(qtbot, widget)
    assert _names(viewer) == names and all(a is b for a, b in zip(viewer.layers, layers))
    assert [run.run_id for run in widget.runs] == ids
    for rid, before in zip(ids, maps):
        np.testing.assert_array_equal(widget.runs.get(rid).layers["map"].data[Z], before)

    # the first shape moved: a new run id, the same RoI name and class -> layers of its own, '#2'
    shapes.data = [shapes.data[0] + np.array([0, 4, 4]), shapes.data[1]]
    widget.every_shape.setChecked(False)
    shapes.selected_data = {0}
    widget.run()
    wait_idle(qtbot, widget)
    assert len(widget.runs) == 3 and widget.latest().label == "RoI 1 · object #2"
    assert _names(viewer)[:len(names)] == names and "PdCR map · RoI 1 · object #2" in viewer.layers


# ------------------------------------------------------------------------------------- the runs list
def test_runs_list_shows_hides_compares_side_by_side_and_deletes(qtbot, viewer_widget, cue_model_file):
    viewer, widget, image = viewer_widget
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    _pdcr(widget)
    widget.run()
    wait_idle(qtbot, widget)
    widget.set_method("misure")
    widget.param("iterations").setValue(2)
    widget.run()
    wait_idle(qtbot, widget)
    lst = widget.runs_list
    assert [lst.item(i).text() for i in range(lst.count())] == ["PdCR · RoI 1 · object", "MiSuRe · RoI 1 · object"]
    assert lst.item(1).isSelected() and "Dice explained" in widget.stats_panel.text()
    pdcr, misure = widget.runs
    lst.item(0).setSelected(True)
    lst.item(1).setSelected(False)
    assert "M0" in widget.stats_panel.text()  # the selected run's numbers

    # untick a run: its layers are hidden; tick: shown again; hiding its layers in napari unticks it
    lst.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert not any(lay.visible for lay in pdcr.layers.values())
    lst.item(0).setCheckState(Qt.CheckState.Checked)
    assert all(lay.visible for lay in pdcr.layers.values())
    for lay in misure.layers.values():
        lay.visible = False
    assert lst.item(1).checkState() == Qt.CheckState.Unchecked
    for lay in misure.layers.values():
        lay.visible = True

    # compare: napari's grid, each run over the image in a viewbox of its own, everything else hidden
    order, shapes = list(viewer.layers), viewer.layers["RoI"]
    widget.runs_section.select([pdcr.run_id, misure.run_id])
    widget.runs_section.compare_button.click()
    grid = viewer_grid(viewer)
    assert grid.enabled and widget.runs_section.compare_button.text() == "End comparison"
    layers = list(viewer.layers)
    second = viewer.layers["cue volume (compare)"]
    assert second.data is image.data  # a second view of the image, not a copy
    pos = {id(lay): grid.position(i, layers) for i, lay in enumerate(layers)}
    cell_a = {pos[id(lay)] for lay in [image, *misure.layers.values()]}  # the run with more layers first
    cell_b = {pos[id(lay)] for lay in [second, *pdcr.layers.values()]}
    assert len(cell_a) == 1 and len(cell_b) == 1 and cell_a != cell_b and (-1, -1) not in cell_a | cell_b
    assert not shapes.visible and pos[id(shapes)] == (-1, -1)
    np.testing.assert_allclose(second.data_to_world((Z, 3, 5)), image.data_to_world((Z, 3, 5)))
    widget.runs_section.compare_button.click()  # end: the viewer as before
    assert not grid.enabled and "cue volume (compare)" not in viewer.layers
    assert all(a is b for a, b in zip(viewer.layers, order)) and len(viewer.layers) == len(order)
    assert shapes.visible and all(lay.visible for lay in pdcr.layers.values())

    # delete a run: its layers leave the viewer, the other run stays
    widget.runs_section.select([pdcr.run_id])
    widget.runs_section.delete_button.click()
    assert [run.run_id for run in widget.runs] == [misure.run_id] and lst.count() == 1
    assert not [n for n in _names(viewer) if n.startswith("PdCR")]
    assert all(lay in viewer.layers for lay in misure.layers.values())


# ------------------------------------------------------------- an explainer registered from outside
@dataclass(frozen=True)
class ToyConfig:
    gain: float = param(2.0, lo=0.0, hi=10.0, step=0.5, tip="how much the toy map is scaled", label="Gain",
                        advanced=False)


def toy(model, image, roi, target, *, config, geometry=None):
    """The image (first channel) scaled by ``gain`` and clipped to [0, 1]; streams one partial map."""
    amap = np.clip(np.asarray(image[0], np.float32) * config.gain, 0, 1)
    yield Progress(0, 1, "toying", partial=np.full(amap.shape, np.nan, np.float32))
    yield Progress(1, 1, "toying", partial=amap)
    return Explanation(method="toy", map=amap, roi=roi, stats={"mean": float(amap.mean())},
                       params={"gain": config.gain, "target_class": int(target)},
                       provenance={"forward_passes": 0, "wall_time_s": 0.0}, geometry=dict(geometry or {}))


TOY = ExplainerSpec(name="toy", title="Toy", paper="a test", config=ToyConfig, run=toy,
                    needs=frozenset({"roi_optional"}), stats=(Stat("mean", "mean toy value", "{:.3f}"),),
                    layers=(ResultLayer("map", "score", "saliency", colorbar=True),
                            ResultLayer("roi", "RoI", "outline")),
                    estimate=lambda config, roi: 1, summary=lambda expl: f"Toy done: mean {expl.stats['mean']:.2f}",
                    description="the image, scaled")


@pytest.fixture
def toy_registered():
    registry.register(TOY)
    yield TOY
    registry.unregister("toy")


def test_a_registered_explainer_appears_in_the_dock_layers_and_folder(qtbot, toy_registered, make_napari_viewer,
                                                                      cue_model_file, tmp_path):
    from napari_seg_explain.napari.widgets import SegExplainWidget
    from napari_seg_explain.napari.widgets.sections.params import ParamForm

    viewer = make_napari_viewer()
    image = viewer.add_image(cue_volume(), name="cue volume", scale=SCALE, translate=TRANSLATE)
    viewer.dims.set_current_step(0, Z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    labels = [widget.method.itemText(i) for i in range(widget.method.count())]
    assert "Toy (a test)" in labels and labels == [s.label for s in registry.specs()]
    _load(qtbot, widget, cue_model_file)
    add_rect(viewer, 8, 8, 24, 24, z=Z, image=image)
    widget.sync.refresh()
    widget.set_method("toy")
    gain = widget.param("gain")
    assert isinstance(widget.explain_section.forms["toy"], ParamForm)
    assert gain.isVisibleTo(widget) and gain.toolTip() == "how much the toy map is scaled"
    assert (gain.minimum(), gain.maximum(), gain.singleStep(), gain.value()) == (0.0, 10.0, 0.5, 2.0)
    assert not widget.param("n", "pdcr").isVisibleTo(widget) and not widget.param("iterations", "misure").isVisibleTo(
        widget)
    assert not widget.gt_combo.isEnabled() and not widget.pool_combo.isEnabled()
    assert "at most 1 forward pass" in widget.update_estimate()
    gain.setValue(3.0)
    inserted = []
    viewer.layers.events.inserted.connect(lambda ev: inserted.append((ev.value.name, ev.value)))
    widget.run()
    wait_idle(qtbot, widget)

    run = widget.latest("toy")
    score = viewer.layers["Toy score · RoI 1 · object"]
    outline = viewer.layers["Toy RoI · RoI 1 · object"]
    assert run.layers == {"map": score, "roi": outline} and run.expl.params["gain"] == 3.0
    # its partial maps streamed into a layer of its own, which became the run's map layer
    assert [name for name, _ in inserted] == ["Toy score · RoI 1 · object (running)", outline.name]
    assert inserted[0][1] is score
    np.testing.assert_allclose(score.data[Z], np.clip(image.data[Z] * 3.0, 0, 1))
    assert score.colormap.name == "inferno_transparent_zero" and score.metadata["seg_explain"]["run_id"] == run.run_id
    assert "mean toy value" in widget.stats_panel.text()
    assert [widget.runs_list.item(i).text() for i in range(widget.runs_list.count())] == ["Toy · RoI 1 · object"]

    out = tmp_path / "toy"
    widget.save_results(out)
    index = json.loads((out / "results.json").read_text())
    assert [e["method"] for e in index["runs"]] == ["toy"]
    assert (out / f"{run.run_id}_toy_map.npy").exists() and (out / f"{run.run_id}_toy_map_roi.npy").exists()
    viewer.layers.remove(score)
    viewer.layers.remove(outline)
    assert {lay.name for lay in widget.open_results(out)} == {score.name, outline.name}


def test_parameter_form_is_generated_from_the_spec(qtbot):
    """Every kind of parameter gets its widget, range, step, tooltip and place (basic or advanced), and the form's
    values make the method's config."""
    from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

    from napari_seg_explain.napari.widgets.sections.params import ParamForm

    @dataclass(frozen=True)
    class Many:
        steps: int = param(10, lo=1, hi=500, step=5, tip="how many", advanced=False)
        batch_size: int = param(0, lo=0, hi=64, tip="per pass; 0 = automatic")
        rate: float = param(0.025, lo=0.0, hi=1.0, tip="a rate")
        smooth: bool = param(True, tip="smooth it")
        mode: str = param("fast", choices=("fast", "exact"), tip="speed or exactness")
        scale: float | None = param(None, tip="empty: the image's own")

    spec = ExplainerSpec(name="many", title="Many", paper="", config=Many, run=toy)
    changes = []
    form = ParamForm(spec, lambda *_: changes.append(1))
    qtbot.addWidget(form.basic)
    qtbot.addWidget(form.advanced)
    w = form.widgets
    assert isinstance(w["steps"], QSpinBox) and (w["steps"].minimum(), w["steps"].maximum()) == (1, 500)
    assert w["steps"].singleStep() == 5 and w["steps"].toolTip() == "how many"
    assert form.basic_form.rowCount() == 1 and form.advanced_form.rowCount() == 5
    assert isinstance(w["batch_size"], QSpinBox) and w["batch_size"].text() == "auto"
    assert isinstance(w["rate"], QDoubleSpinBox) and w["rate"].decimals() == 3 and w["rate"].value() == 0.025
    assert isinstance(w["smooth"], QCheckBox) and w["smooth"].isChecked()
    assert isinstance(w["mode"], QComboBox) and w["mode"].currentText() == "fast"
    assert isinstance(w["scale"], QLineEdit) and w["scale"].text() == ""
    assert spec.make_config(**form.values()) == Many()
    w["steps"].setValue(20)
    w["smooth"].setChecked(False)
    w["mode"].setCurrentIndex(1)
    w["scale"].setText("1.5")
    assert spec.make_config(**form.values()) == Many(steps=20, smooth=False, mode="exact", scale=1.5)
    assert len(changes) == 4
