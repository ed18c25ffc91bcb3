"""Issue 12 items 1 and 6 (widget side): a model with four input channels is fed four co-registered image layers,
one per contrast, ticked under 'Contrasts' in the image section (the model card's channel order, named by layer);
a Shapley run shows four named bars; with a second model, the two runs selected in the runs list show the mean
with error bars (± sd) and the rank variance.

Uses the shipped multi-contrast sample (T1, T1c, T2, FLAIR + a synthetic lesion) and its 4-channel model.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_shapley_layers.py -q``.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from gui_helpers import add_rect, wait_idle
from sample_paths import SAMPLE_DIR
from scipy import ndimage

from napari_seg_explain.core.sample import (MULTICONTRAST_CARD, MULTICONTRAST_LABEL, MULTICONTRAST_NAMES,
                                            MULTICONTRAST_VOLUMES)
from napari_seg_explain.napari.widgets.contrasts import candidates, matches
from napari_seg_explain.napari.widgets.shapley_panel import ContrastValuesPanel

CARD = SAMPLE_DIR / MULTICONTRAST_CARD


def _open_sample(viewer):
    """The four contrasts (opened in a shuffled order: the card's order must win) and the lesion label."""
    from napari_seg_explain.napari.reader import read_layers

    for path in (MULTICONTRAST_VOLUMES[2], MULTICONTRAST_VOLUMES[0], MULTICONTRAST_VOLUMES[3],
                 MULTICONTRAST_VOLUMES[1], MULTICONTRAST_LABEL):
        for data, kwargs, kind in read_layers(SAMPLE_DIR / path):
            getattr(viewer, f"add_{kind}")(data, **kwargs)


def _lesion_box(viewer, z: int) -> tuple[int, int, int, int]:
    """The largest lesion cross-section on slice z, padded by 4 pixels: (y0, x0, y1, x1)."""
    lab = np.asarray(viewer.layers["lesion_label"].data[z]) > 0
    comps, n = ndimage.label(lab)
    k = int(np.argmax(np.bincount(comps.ravel())[1:])) + 1
    rows, cols = ndimage.find_objects(comps)[k - 1]
    return rows.start - 4, cols.start - 4, rows.stop + 4, cols.stop + 4


def _heldout_slice() -> int:
    held = yaml.safe_load(CARD.read_text())["training"]["heldout_slices"]
    return int(held[1])


def test_layer_name_matching():
    assert matches("T1", "T1") and matches("sub-01_FLAIR", "FLAIR") and matches("scan [T1c]", "T1c")
    assert not matches("T1c", "T1") and not matches("sub-01_T1c", "T1")


@pytest.fixture
def dock(qtbot, make_napari_viewer):
    from napari_seg_explain.core.models import load_model
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    _open_sample(viewer)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation Explainer", area="right")
    assert widget.image_section.contrasts.isHidden()  # no model yet
    widget.set_model(load_model(CARD, device="cpu"))
    wait_idle(qtbot, widget)
    return viewer, widget


def test_four_contrast_layers_give_four_named_bars_and_error_bars_across_models(qtbot, dock):
    from napari_seg_explain.core.explainers.shapley import across_models
    from napari_seg_explain.core.models import load_model

    viewer, widget = dock
    z = _heldout_slice()
    viewer.dims.set_current_step(0, z)
    widget.image_combo.setCurrentText("T1")
    widget.update_slice_label()
    lst = widget.image_section.contrasts
    assert not lst.isHidden() and not widget.image_section.contrasts_label.isHidden()
    assert set(candidates(viewer, viewer.layers["T1"])) == set(MULTICONTRAST_NAMES)  # not the label layer
    assert lst.chosen() == MULTICONTRAST_NAMES  # ticked and put in the card's channel order

    y0, x0, y1, x1 = _lesion_box(viewer, z)
    add_rect(viewer, y0, x0, y1, x1, z=z, image=viewer.layers["T1"])
    widget.sync.refresh()
    widget.set_method("shapley")
    widget.gt_combo.setCurrentText("lesion_label")
    assert widget.run() is not None
    wait_idle(qtbot, widget, timeout=120000)
    rec = widget.latest("shapley")
    assert rec is not None
    stats = rec.expl.stats
    assert stats["contrasts"] == list(MULTICONTRAST_NAMES)
    panel: ContrastValuesPanel = widget.stats_panel.contrasts
    assert not panel.isHidden()
    assert panel.bars.names == list(MULTICONTRAST_NAMES) and len(panel.bars.values) == 4
    np.testing.assert_allclose(panel.bars.values, stats["shapley"])
    assert panel.bars.errors == [] and panel.variance_label.isHidden()

    # the same run with a second model (a stand-in for another fold: the sample's weights, perturbed), then both
    # runs selected in the runs list: mean ± sd per contrast and the rank variance
    import torch

    from napari_seg_explain.core.models import SegmentationModel

    first = widget.controller.model
    net = load_model(CARD, device="cpu").net
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * p.std(correction=0) * torch.randn(p.shape, generator=gen))
    widget.set_model(SegmentationModel(net, first.card, device="cpu"))
    wait_idle(qtbot, widget)
    assert widget.image_section.contrasts.chosen() == MULTICONTRAST_NAMES
    assert widget.run() is not None
    wait_idle(qtbot, widget, timeout=120000)
    second = widget.latest("shapley")
    assert second.run_id != rec.run_id
    assert len(widget.runs_list.selectedItems()) == 1 and panel.bars.errors == []
    widget.runs_section.select([rec.run_id, second.run_id])
    agg = across_models([rec.expl, second.expl])
    assert panel.bars.names == list(MULTICONTRAST_NAMES)
    np.testing.assert_allclose(panel.bars.values, agg["shapley"])
    assert len(panel.bars.errors) == 4 and any(e > 0 for e in panel.bars.errors)
    np.testing.assert_allclose(panel.bars.errors, agg["shapley_std"])
    spans = panel.bars.error_spans()
    assert all(lo <= v / panel.bars.scale <= hi for (lo, hi), v in zip(spans, panel.bars.values))
    assert "± " in panel.bars.value_text(0)
    assert panel.ranking_label.text().startswith("Ranking (mean of 2 models): ")
    assert not panel.variance_label.isHidden() and "Rank variance across 2 models" in panel.variance_label.text()
    assert "models: 2" in widget.stats_panel.text()
    panel.bars.grab()  # paints the error bars without error


def test_wrong_number_of_contrasts_says_what_to_do(qtbot, dock):
    from napari_seg_explain.core.errors import UserError

    viewer, widget = dock
    viewer.dims.set_current_step(0, _heldout_slice())
    widget.image_combo.setCurrentText("T1")
    widget.update_slice_label()
    widget.image_section.contrasts.set_chosen(["T1", "T2"])
    widget.set_method("shapley")
    with pytest.raises(UserError, match="tick 4 layers under 'Contrasts'"):
        widget.gather()


def test_pdcr_pool_of_other_slices_takes_every_contrast(qtbot, dock):
    """A method with a pool runs on the stacked contrasts too: the other slices of the volume, from every
    contrast; a pool of other layers (one contrast each) is refused with what to choose instead."""
    from napari_seg_explain.core.errors import UserError
    from napari_seg_explain.core.progress import drive
    from napari_seg_explain.napari.widgets import pools

    viewer, widget = dock
    z = _heldout_slice()
    viewer.dims.set_current_step(0, z)
    widget.image_combo.setCurrentText("T1")
    widget.update_slice_label()
    y0, x0, y1, x1 = _lesion_box(viewer, z)
    add_rect(viewer, y0, x0, y1, x1, z=z, image=viewer.layers["T1"])
    widget.sync.refresh()
    widget.set_method("pdcr")
    widget.param("n").setValue(2)
    widget.param("screen").setValue(1)
    run = widget.gather()[0]
    assert run.job.image.shape[0] == 4 and run.pool.kind == "volume" and len(run.pool.arrays) == 4
    assert all(p.shape[0] == 4 for p in run.pool.planes()[:3])
    expl = drive(run.job.run(widget.controller.model))
    assert expl.map.shape == run.job.image.shape[1:]
    widget.explain_section.set_pool(pools.POOL_LAYERS)
    with pytest.raises(UserError, match="pool must hold every contrast"):
        widget.gather()


def test_nnunet_contrast_names_from_dataset_json_order_the_layers(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A two-channel nnU-Net folder (dataset.json: T1, T2; 2d configuration) on two layers opened in the other
    order: the list puts them in the model's order, and a Shapley run on the whole scan (the model's own
    preprocessing) names its two bars after dataset.json."""
    pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the testing install")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from nnunet_builder import SCAN, build_nnunet_folder, second_contrast
    from test_model_folders import draw, load_folder

    from napari_seg_explain.napari.launch import PLUGIN, prepare_viewer

    folder = build_nnunet_folder(tmp_path / "m2d", "2d", folds=(0,), steps=10, channels=("T1", "T2"))
    t2 = second_contrast(SCAN, tmp_path / "sub-01_T2.nii.gz")
    t1 = tmp_path / "sub-01_T1.nii.gz"
    t1.write_bytes(Path(SCAN).read_bytes())
    viewer = make_napari_viewer()
    widget = prepare_viewer(viewer, with_sample=False)
    widget.auto_load_suggested = False
    viewer.open(str(t2), plugin=PLUGIN)
    viewer.open(str(t1), plugin=PLUGIN)
    load_folder(widget, qtbot, folder, monkeypatch)
    assert widget.loaded.model.channel_names == ("T1", "T2")
    widget.image_combo.setCurrentText("sub-01_T2")
    widget.update_slice_label()
    assert widget.image_section.contrasts.chosen() == ("sub-01_T1", "sub-01_T2")
    z = viewer.layers["sub-01_T1"].data.shape[0] // 2
    viewer.dims.set_current_step(0, z)
    draw(viewer, widget, z, 20, 20, size=6)
    widget.set_method("shapley")
    plan, = widget.gather()
    assert plan.job.image.shape[0] == 2 and plan.job.geometry["contrast_layers"] == ["sub-01_T1", "sub-01_T2"]
    assert widget.run() is not None
    wait_idle(qtbot, widget, 120000)
    rec = widget.latest("shapley")
    assert rec is not None and rec.expl.stats["contrasts"] == ["T1", "T2"]
    assert widget.stats_panel.contrasts.bars.names == ["T1", "T2"]
