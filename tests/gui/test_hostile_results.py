"""*Open results...* refuses a results folder whose index points outside it (``../``, a symlink leading out):
nothing is read from outside, no layer is added, and the user is told why.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_hostile_results.py -q``.
"""

from __future__ import annotations

import json

import numpy as np

from napari_seg_explain.core.results import Explanation
from napari_seg_explain.napari.widgets import results_view
from napari_seg_explain.napari.widgets.dock import SegExplainWidget
from napari_seg_explain.napari.widgets.results_io import FORMAT, INDEX


def _folder(tmp_path, file: str):
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    Explanation("occlusion", np.ones((16, 16), np.float32), provenance={"x": 1}).save(folder / "a_map.npy")
    (folder / INDEX).write_text(json.dumps({"format": FORMAT, "version": 2, "runs": [
        {"run_id": "a", "method": "occlusion", "label": "RoI 1", "file": file, "geometry": {"shape": [16, 16]}}]}))
    return folder


def test_open_results_refuses_a_folder_pointing_outside(qtbot, make_napari_viewer, tmp_path, monkeypatch, notes):
    viewer = make_napari_viewer()
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    outside = tmp_path / "outside.npy"
    Explanation("occlusion", np.full((16, 16), 7, np.float32), provenance={"x": 1}).save(outside)
    for file in ("../outside.npy", str(outside)):
        folder = _folder(tmp_path, file)
        monkeypatch.setattr(results_view.QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
        assert widget.open_results() == [] and len(viewer.layers) == 0  # the menu's path: the folder dialog
        assert notes and notes[-1][0] == "error" and "outside its folder" in notes[-1][1], notes
    (folder / "link_map.npy").symlink_to(outside)
    (folder / "link_map.json").symlink_to(outside.with_suffix(".json"))
    folder = _folder(tmp_path, "link_map.npy")
    assert widget.open_results(folder) == [] and len(viewer.layers) == 0
    assert "outside" in notes[-1][1], notes
    # the same folder pointing at its own file opens
    folder = _folder(tmp_path, "a_map.npy")
    assert widget.open_results(folder) and len(viewer.layers) >= 1
