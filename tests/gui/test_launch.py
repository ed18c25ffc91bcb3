"""The README's main job: napari opens with the sample scan, the plugin docked, the sample model loaded and a
RoI layer ready; plus the display windows and the orientation/size line a radiologist reads."""

from __future__ import annotations

import numpy as np

from gui_helpers import wait_idle


def test_prepare_viewer_is_ready_to_draw_and_run(make_napari_viewer, qtbot):
    from napari_seg_explain.napari.launch import prepare_viewer

    viewer = make_napari_viewer()
    widget = prepare_viewer(viewer)
    wait_idle(qtbot, widget)
    names = [lay.name for lay in viewer.layers]
    assert names[:2] == ["mni152_t1", "mni152_wm_label"] and names[-1] == "RoI"
    assert widget.loaded is not None and widget.loaded.model.name == "mni152-wm-unet2d"
    assert viewer.layers["RoI"].mode == "add_rectangle"
    held = 64  # the middle held-out slice of the sample model
    assert viewer.dims.current_step[0] == held
    assert widget.gt_combo.currentText() == "mni152_wm_label"
    assert "radiological" in widget.slice_label.text() and "mm" in widget.slice_label.text()
    assert widget.run_button.isEnabled()


def test_ct_window_presets_change_display_only(make_napari_viewer):
    from napari_seg_explain.napari.widgets import SegExplainWidget
    from napari_seg_explain.napari.windows import window_choices

    viewer = make_napari_viewer()
    ct = np.linspace(-1000, 2000, 64 * 64, dtype=np.float32).reshape(64, 64)
    layer = viewer.add_image(ct.copy(), name="ct")
    widget = SegExplainWidget(viewer)
    lung = next(c for c in window_choices() if c.startswith("lung"))
    assert widget.apply_window(lung) == (-1350.0, 150.0)
    assert tuple(layer.contrast_limits) == (-1350.0, 150.0)
    bone = next(c for c in window_choices() if c.startswith("bone"))
    assert widget.apply_window(bone) == (-500.0, 1300.0)
    lo, hi = widget.apply_window(window_choices()[0])  # auto: percentiles
    assert -1000 < lo < hi < 2000
    np.testing.assert_array_equal(layer.data, ct)


def test_the_plugin_becomes_the_preferred_reader_without_overriding_a_choice(tmp_path):
    from napari.settings import NapariSettings

    from napari_seg_explain.napari.launch import PLUGIN, prefer_plugin_reader
    from napari_seg_explain.napari.reader import EXTENSIONS

    settings = NapariSettings(config_path=tmp_path / "settings.yaml")
    settings.plugins.extension2reader = {"*.png": "napari"}  # the user chose napari's reader for PNG
    added = prefer_plugin_reader(settings)
    prefs = settings.plugins.extension2reader
    assert prefs["*.png"] == "napari", "a choice the user made stays"
    assert prefs["*.nii.gz"] == PLUGIN and prefs["*.dcm"] == PLUGIN and "*.png" not in added
    assert set(added) == {f"*{e}" for e in EXTENSIONS} - {"*.png"}
    assert prefer_plugin_reader(settings) == [], "nothing to do the second time"
