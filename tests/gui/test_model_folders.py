"""Model folders in napari: a tiny nnU-Net v2 folder (3d_fullres) loaded through the Folder… button, its
summary, nnU-Net's own segmentation of the 3 mm sample volume, and PdCR and MiSuRe runs on nnU-Net's
preprocessed grid whose maps come back on the volume (finite inside the context box only); a MONAI bundle
the same way when the bundle support is there."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gui_helpers import wait_idle

pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the testing install")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nnunet_builder import SCAN, build_nnunet_folder  # noqa: E402

K = 1  # RoI slices ± 1 (3d_fullres)


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nnunet_folder(tmp_path_factory.mktemp("nnunet") / "m3d", "3d_fullres", folds=(0,), steps=30)


def open_scan(make_napari_viewer):
    """A viewer with the dock and the 3 mm sample volume (the plugin's reader); no model loaded."""
    from napari_seg_explain.napari.launch import PLUGIN, prepare_viewer

    viewer = make_napari_viewer()
    widget = prepare_viewer(viewer, with_sample=False)
    widget.auto_load_suggested = False
    viewer.open(str(SCAN), plugin=PLUGIN)
    widget.image_combo.setCurrentText(viewer.layers[0].name)
    return viewer, widget, viewer.layers[0]


def load_folder(widget, qtbot, folder: Path, monkeypatch) -> None:
    """Press Folder… with the dialog answering ``folder``."""
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    widget.model_section.folder_button.click()
    wait_idle(qtbot, widget, 60000)


def white_square(seg: np.ndarray, k: int, size: int = 3) -> tuple[int, int, int]:
    """(z, row, col) of a size x size square the model segmented as class 1 on slices z - k .. z + k."""
    n = seg.shape[0]
    for z in sorted(range(k, n - k), key=lambda z: abs(z - n // 2)):
        slab = (seg[z - k: z + k + 1] == 1).all(axis=0)
        for r in range(seg.shape[1] - size):
            for c in range(seg.shape[2] - size):
                if slab[r:r + size, c:c + size].all():
                    return z, r, c
    raise AssertionError("the model segmented no white-matter square")


def draw(viewer, widget, z: int, r: int, c: int, size: int = 3) -> None:
    roi = widget.new_roi_layer()
    roi.add(np.array([[z, r - 0.5, c - 0.5], [z, r - 0.5, c + size - 0.5], [z, r + size - 0.5, c + size - 0.5],
                      [z, r + size - 0.5, c - 0.5]]), shape_type="rectangle")
    widget.roi_combo.setCurrentText(roi.name)


def run_and_check(viewer, widget, qtbot, title: str, scan) -> np.ndarray:
    plan, = widget.gather()
    job = plan.job
    box = np.zeros(job.full_shape, bool)
    box[job.crop] = True
    box = np.moveaxis(job.reorder.display(box), -1, 0)  # display grid -> layer order (slices, rows, cols)
    assert widget.run() is not None
    wait_idle(qtbot, widget, 120000)
    rec = widget.latest(plan.spec.name)
    assert rec is not None and rec.layers.get("map") is not None, [lay.name for lay in viewer.layers]
    layer = rec.layers["map"]
    assert layer.name.startswith(title) and layer in viewer.layers
    amap = np.asarray(layer.data)
    assert amap.shape == scan.data.shape and amap.dtype.kind == "f"
    np.testing.assert_allclose(layer.scale, scan.scale)
    finite = np.isfinite(amap)
    assert finite.any() and not (finite & ~box).any()  # values only inside the context box, NaN elsewhere
    assert np.isnan(amap[~box]).all()
    return amap


def test_nnunet_folder_load_segment_explain(make_napari_viewer, qtbot, nnunet_folder, monkeypatch):
    viewer, widget, scan = open_scan(make_napari_viewer)
    sec = widget.model_section
    assert not sec.nnunet_options.isVisibleTo(widget)
    load_folder(widget, qtbot, nnunet_folder, monkeypatch)
    assert widget.loaded is not None, widget.progress_label.text()
    assert sec.nnunet_options.isVisibleTo(widget)  # shown for nnU-Net folders only
    assert sec.checkpoint.currentText() == "checkpoint_final.pth" and sec.mirroring.isChecked()
    assert not sec.ensemble.isChecked()
    text = widget.model_summary.text()
    for part in ("nnU-Net v2", "3d_fullres", "folds: 0", "patch size: 32x32x32", "spacing: 4x4x4 mm",
                 "channels: T1", "1: white_matter"):
        assert part in text, text
    assert widget.target.currentText() == "white_matter"

    # nnU-Net's own segmentation of the whole volume, in a worker
    worker = widget.segment()
    assert worker is not None
    wait_idle(qtbot, widget, 120000)
    seg_layers = widget.controller.segmentation_layers()
    assert seg_layers, widget.progress_label.text()
    seg = np.asarray(seg_layers[0].data)
    assert seg.shape == scan.data.shape and 0.02 < (seg == 1).mean() < 0.6

    z, r, c = white_square(seg, K)
    draw(viewer, widget, z, r, c)
    widget.roi_slices.setValue(K)
    widget.set_method("pdcr")
    widget.param("screen").setValue(1)
    widget.param("n").setValue(2)
    widget.param("batch_size").setValue(0)
    assert "nnU-Net v2" in widget.update_estimate() and "Cost:" in widget.estimate_label.text()
    amap = run_and_check(viewer, widget, qtbot, "PdCR", scan)
    assert np.isnan(amap[z, r:r + 3, c:c + 3]).all()  # PdCR leaves the RoI out

    widget.set_method("misure")
    for name, value in (("iterations", 3), ("param_size", 16), ("max_dilations", 3)):
        widget.param(name).setValue(value)
    run_and_check(viewer, widget, qtbot, "MiSuRe", scan)
    assert len(widget.runs) == 2
    for rec in widget.runs:
        assert any("patch" in d for d in rec.expl.deviations)  # recorded: one patch, not nnU-Net's sliding window


def test_nnunet_options_reach_load_model(make_napari_viewer, qtbot, nnunet_folder, monkeypatch):
    """Folds, checkpoint, mirroring and ensemble from the dock are the options the model is loaded with."""
    viewer, widget, _scan = open_scan(make_napari_viewer)
    sec = widget.model_section
    sec.model_path.setText(str(nnunet_folder))
    assert sec.nnunet_options.isVisibleTo(widget)
    sec.folds.setText("0")
    sec.mirroring.setChecked(False)
    sec.ensemble.setChecked(True)
    assert sec.folder_options() == {"folds": ["0"], "checkpoint": "checkpoint_final.pth", "mirroring": False,
                                    "ensemble": True}
    widget.load_button.click()
    wait_idle(qtbot, widget, 60000)
    s = widget.loaded.model.summary()
    assert s["folds"] == ["0"] and s["mirroring"] is False and s["explain ensemble"] is True
    assert "mirroring: off" in widget.model_summary.text()
    worker = widget.segment()  # Cancel stops nnU-Net's segmentation at its next step: no layer
    assert worker is not None
    widget.cancel()
    wait_idle(qtbot, widget, 60000)
    assert not widget.controller.segmentation_layers() and "cancelled" in widget.progress_label.text()
    sec.model_path.setText(str(nnunet_folder / "fold_0"))  # not a model folder: options hidden, none passed
    assert not sec.nnunet_options.isVisibleTo(widget) and sec.folder_options() == {}


def test_monai_bundle_load_segment_explain(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import bundle_builder

    folder = Path(bundle_builder.build_bundle(tmp_path / "bundle"))
    viewer, widget, scan = open_scan(make_napari_viewer)
    load_folder(widget, qtbot, folder, monkeypatch)
    assert widget.loaded is not None, widget.progress_label.text()
    assert not widget.model_section.nnunet_options.isVisibleTo(widget)
    text = widget.model_summary.text()
    assert "patch size" in text and "classes" in text, text
    widget.segment()
    wait_idle(qtbot, widget, 120000)
    seg = np.asarray(widget.controller.segmentation_layers()[0].data)
    assert seg.shape == scan.data.shape and (seg == 1).any()
    z, r, c = white_square(seg, K)
    draw(viewer, widget, z, r, c)
    widget.roi_slices.setValue(K)
    widget.set_method("pdcr")
    widget.param("screen").setValue(1)
    widget.param("n").setValue(2)
    run_and_check(viewer, widget, qtbot, "PdCR", scan)


def test_nnunet_2d_configuration_explains_the_roi_plane(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A 2-D configuration on a volume: whole-scan segmentation, and a rectangle on one slice explained on the
    model plane holding it ('RoI slices' is not offered: one plane)."""
    folder = build_nnunet_folder(tmp_path / "m2d", "2d", folds=(0,), steps=30)
    viewer, widget, scan = open_scan(make_napari_viewer)
    load_folder(widget, qtbot, folder, monkeypatch)
    assert widget.loaded is not None and widget.loaded.model.card.spatial_dims == 2
    assert "patch size: 48x48" in widget.model_summary.text()
    assert not widget.roi_slices.isVisibleTo(widget)
    assert widget.controller.is_3d(scan)  # a whole-volume path although the network is 2-D
    widget.segment()
    wait_idle(qtbot, widget, 120000)
    seg = np.asarray(widget.controller.segmentation_layers()[0].data)
    assert seg.shape == scan.data.shape and (seg == 1).any()
    z, r, c = white_square(seg, 0)
    draw(viewer, widget, z, r, c)
    widget.roi_slices.setValue(2)  # ignored by a 2-D configuration
    widget.set_method("pdcr")
    widget.param("screen").setValue(1)
    widget.param("n").setValue(2)
    plan, = widget.gather()
    assert plan.job.image.ndim == 3  # (C, rows, cols) of one plane of the model's grid
    amap = run_and_check(viewer, widget, qtbot, "PdCR", scan)
    on = np.flatnonzero(np.isfinite(amap).any(axis=(1, 2)))
    assert list(on) == [z]  # the sample's model planes are the layer's slices: the RoI's slice only
