"""3-D models in napari: the 3 mm sample volume, the 3-D sample model, a rectangle drawn on one slice and
extruded over 5 slices, a 3-D PdCR run in napari's 3-D view, and its map placed back over the whole volume."""

from __future__ import annotations

import numpy as np
import yaml

from gui_helpers import wait_idle

K = 2  # RoI slices ± 2: 5 slices


def _white_matter_square(label: np.ndarray, slices: list[int], size: int = 4) -> tuple[int, int, int]:
    """(z, row, col) of a size x size square that is white matter on slices z - K .. z + K, z held out."""
    for z in slices:
        if z - K < min(slices) or z + K > max(slices):
            continue
        slab = label[z - K: z + K + 1] != 0
        for r in range(label.shape[1] - size):
            for c in range(label.shape[2] - size):
                if slab[:, r:r + size, c:c + size].all():
                    return z, r, c
    raise AssertionError("no white-matter square in the held-out slab")


def test_3d_pdcr_run_on_the_3mm_sample(make_napari_viewer, qtbot):
    from napari_seg_explain.core.sample import SAMPLE_CARD_3D, sample_path
    from napari_seg_explain.napari import layers as L
    from napari_seg_explain.napari.launch import prepare_viewer

    viewer = make_napari_viewer()
    widget = prepare_viewer(viewer, three_d=True)
    wait_idle(qtbot, widget, 60000)
    assert widget.loaded is not None and widget.loaded.model.card.spatial_dims == 3
    scan, label = viewer.layers[0], viewer.layers[1]
    assert scan.data.ndim == 3 and label.data.shape == scan.data.shape
    assert widget.roi_slices.isVisibleTo(widget)  # shown for 3-D models only

    held = yaml.safe_load(sample_path(SAMPLE_CARD_3D).read_text())["training"]["heldout_slices"]
    z, r, c = _white_matter_square(np.asarray(label.data), held)
    roi = viewer.layers["RoI"]
    corners = np.array([[z, r - 0.5, c - 0.5], [z, r - 0.5, c + 3.5], [z, r + 3.5, c + 3.5], [z, r + 3.5, c - 0.5]])
    roi.add(corners, shape_type="rectangle")
    widget.roi_combo.setCurrentText("RoI")
    widget.roi_slices.setValue(K)
    widget.set_method("pdcr")
    widget.param("screen").setValue(1)
    widget.param("n").setValue(2)
    widget.param("batch_size").setValue(0)
    viewer.dims.ndisplay = 3  # a 3-D model runs in the 3-D view too
    assert "Cost:" in widget.update_estimate() and "3-D" in widget.estimate_label.text()

    plan, = widget.gather()
    job = plan.job
    assert job.crop is not None and tuple(job.image.shape[1:]) == (32, 32, 32)
    box = np.zeros(job.full_shape, bool)
    box[job.crop] = True
    box = np.moveaxis(job.reorder.display(box), -1, 0)  # layer order (slices, rows, cols)

    assert widget.run() is not None
    wait_idle(qtbot, widget, 60000)
    maps = [lay for lay in viewer.layers if lay.name.startswith("PdCR map")]
    assert len(maps) == 1, [lay.name for lay in viewer.layers]
    amap = np.asarray(maps[0].data)
    assert amap.shape == scan.data.shape
    np.testing.assert_allclose(maps[0].scale, scan.scale)
    np.testing.assert_allclose(maps[0].translate, scan.translate)
    assert maps[0].rendering == "translucent"
    # NaN stays transparent in the 3-D view too: the volume colormap is clear at both ends, the limits widened
    cmap = maps[0].colormap
    assert cmap.map(np.array([0.0, 1.0]))[:, 3].max() == 0 and cmap.map(np.array([0.01]))[0, 3] > 0.9
    lim = np.nanmax(np.abs(amap))
    assert maps[0].contrast_limits[1] > lim and np.isclose(maps[0].contrast_limits[1], L.volume_limit(lim))
    assert np.isnan(amap[z - K: z + K + 1, r:r + 4, c:c + 4]).all()  # the RoI, on all 5 slices
    finite = np.isfinite(amap)
    assert finite.any() and not (finite & ~box).any()  # values only inside the context box
    outline = [lay for lay in viewer.layers if lay.name.startswith("PdCR RoI")]
    assert outline and sorted({int(round(v[0, 0])) for v in outline[0].data}) == list(range(z - K, z + K + 1))
    assert widget.runs_list.count() == 1 and len(widget.runs) == 1


def test_whole_volume_geometry_and_partial_maps_land_in_layer_order():
    """A whole-volume result (display order rows, cols, slices) goes into a (slices, rows, cols) layer; a 3-D
    job's partial map (its context box, model order) becomes the volume in display order, as the final map."""
    from types import SimpleNamespace

    from napari_seg_explain.napari.slice_geometry import SliceGeometry
    from napari_seg_explain.napari.widgets.jobs import partial_to_full

    geom = SliceGeometry(shape=(4, 5, 6), slice_index=2, whole=True)
    disp = np.arange(5 * 6 * 4, dtype=np.float32).reshape(5, 6, 4)
    placed = geom.place(disp)
    assert placed.shape == (4, 5, 6) and placed[3, 1, 2] == disp[1, 2, 3]
    assert SliceGeometry.from_dict(geom.to_dict()).whole

    crop = (slice(1, 3), slice(0, 2), slice(2, 4))
    flip = SimpleNamespace(display=lambda a: a[::-1])  # a model order that flips the first axis
    job = SimpleNamespace(crop=crop, full_shape=(5, 6, 4), reorder=flip)
    part = np.ones((2, 2, 2), np.float32)
    full = partial_to_full(job, part)
    assert full.shape == (5, 6, 4) and np.isfinite(full).sum() == 8
    assert np.isfinite(full[::-1][crop]).all()
    assert partial_to_full(SimpleNamespace(crop=None, reorder=None), part) is part  # 2-D jobs: unchanged


def test_anisotropic_voxels_get_a_note():
    from types import SimpleNamespace

    from napari_seg_explain.napari.widgets.controller import anisotropy_note

    assert "anisotropic voxels 5 x 1 x 1" in anisotropy_note(SimpleNamespace(scale=(5.0, 1.0, 1.0)))
    assert anisotropy_note(SimpleNamespace(scale=(1.5, 1.5, 1.2))) == ""
    assert anisotropy_note(None) == ""
