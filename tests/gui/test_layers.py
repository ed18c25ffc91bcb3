"""``napari_seg_explain.napari.layers``: Explanation -> layer data tuples (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_explain.core.results import Explanation
from napari_seg_explain.napari import layers as L


def _pdcr_expl(h=16, w=24):
    amap = np.zeros((h, w), np.float32)
    amap[:, :4] = -2.0
    amap[:, -4:] = 0.5
    roi = np.zeros((h, w), bool)
    roi[4:8, 8:16] = True
    amap[roi] = np.nan
    return Explanation(method="pdcr", map=amap, roi=roi, stats={"M0": 80.0}, params={"n": 50})


def test_diverging_colormap_red_negative_blue_positive_transparent_zero():
    cmap = L.diverging_colormap()
    lo, mid, hi = cmap.map(np.array([0.0, 0.5, 1.0]))
    assert lo[0] > 0.5 and lo[2] < 0.2 and lo[3] == 1  # -L: red
    assert hi[2] > 0.5 and hi[0] < 0.2 and hi[3] == 1  # +L: blue
    assert mid[3] == 0  # 0: transparent
    # small effects are coloured too (anything beyond 0.2 % of L), pale and see-through
    near = cmap.map(np.array([0.5 - 0.003, 0.5 + 0.003]))
    assert near[0][3] > 0.3 and near[0][0] > near[0][2] and near[1][3] > 0.3 and near[1][2] > near[1][0]


def test_saliency_colormap_transparent_at_zero_only():
    cmap = L.saliency_colormap()
    zero, low, one = cmap.map(np.array([0.0, 0.2, 1.0]))
    assert zero[3] == 0 and low[3] == 1 and one[3] == 1


def test_volume_layers_place_the_map_at_the_slice_with_the_image_geometry():
    expl = _pdcr_expl()
    geom = L.SliceGeometry(shape=(5, 16, 24), slice_index=3, scale=(2.0, 0.5, 0.5), translate=(1.0, 2.0, 3.0),
                           source_layer="scan", source_metadata={"affine": np.eye(4).tolist(), "source": "a.nii"})
    (data, kw, kind), (roi_data, roi_kw, roi_kind) = L.explanation_layer_data(expl, geom)
    assert kw["name"] == "PdCR map" and roi_kw["name"] == "PdCR RoI"  # no run label: the method's layer titles
    assert kind == "image" and data.shape == (5, 16, 24) and data.dtype == np.float32
    np.testing.assert_array_equal(data[3], expl.map)
    assert np.isnan(data[[0, 1, 2, 4]]).all()
    assert kw["contrast_limits"] == (-2.0, 2.0) and kw["blending"] == "translucent"
    assert kw["scale"] == (2.0, 0.5, 0.5) and kw["translate"] == (1.0, 2.0, 3.0)
    assert kw["metadata"]["seg_explain"]["source"] == "a.nii"  # the source metadata is kept
    assert kw["metadata"]["seg_explain"]["slice_index"] == 3
    assert kw["metadata"]["explanation"]["stats"]["M0"] == 80.0
    assert kw["metadata"]["seg_explain"]["style"] == "diverging" and kw["metadata"]["seg_explain"]["colorbar"]
    assert roi_kind == "shapes" and roi_kw["shape_type"] == ["rectangle"] and roi_kw["edge_color"] == "lime"
    np.testing.assert_allclose(roi_data[0], [[3, 3.5, 7.5], [3, 3.5, 15.5], [3, 7.5, 15.5], [3, 7.5, 7.5]])
    assert roi_kw["face_color"] == "transparent"


def test_2d_layers_and_misure():
    geom = L.SliceGeometry(shape=(16, 24))
    sal = np.zeros((16, 24), np.float32)
    sal[2:6, 2:6] = 0.7
    region = np.zeros((16, 24), np.uint8)
    region[1:8, 1:8] = 1
    expl = Explanation(method="misure", map=sal, maps={"sufficient_region": region}, stats={"dice_explained": 0.95})
    tuples = L.explanation_layer_data(expl, geom)
    kinds = {kw["name"]: (kind, d) for d, kw, kind in tuples}
    assert set(kinds) == {"MiSuRe saliency", "MiSuRe sufficient region"}
    assert kinds["MiSuRe sufficient region"][0] == "labels" and kinds["MiSuRe sufficient region"][1].shape == (16, 24)
    np.testing.assert_array_equal(kinds["MiSuRe saliency"][1], sal)
    # a run's layers end with its RoI and class
    expl.run = {"id": "abc", "roi_name": "RoI 2", "class_name": "white_matter"}
    names = [kw["name"] for _, kw, _ in L.explanation_layer_data(expl, geom)]
    assert names == ["MiSuRe sufficient region · RoI 2 · white_matter", "MiSuRe saliency · RoI 2 · white_matter"]
    assert all(kw["metadata"]["seg_explain"]["run_id"] == "abc" for _, kw, _ in L.explanation_layer_data(expl, geom))


def test_roi_outline_of_an_irregular_mask_is_a_polygon_around_it():
    from matplotlib.path import Path

    mask = np.zeros((20, 20), bool)
    yy, xx = np.mgrid[:20, :20]
    mask[(yy - 10) ** 2 + (xx - 9) ** 2 <= 25] = True
    (verts, kind), = L.roi_outline(mask)
    assert kind == "polygon"
    inside = Path(verts).contains_points(np.argwhere(np.ones_like(mask))).reshape(mask.shape)
    assert (inside == mask).mean() > 0.97


def test_geometry_checks_and_round_trip():
    with pytest.raises(ValueError, match="slice_index"):
        L.SliceGeometry(shape=(4, 8, 8), slice_index=None)
    with pytest.raises(ValueError, match="does not fit"):
        L.SliceGeometry(shape=(8, 8)).place(np.zeros((4, 4)))
    g = L.SliceGeometry(shape=(4, 8, 8), slice_index=1, scale=(1.0, 2.0, 2.0), units=("mm", "mm", "mm"))
    assert L.SliceGeometry.from_dict(g.to_dict()) == g
    c, s = np.cos(0.5), np.sin(0.5)
    rotated = L.SliceGeometry(shape=(8, 8), rotate=((c, -s), (s, c)), shear=(0.2,), affine=((1.0, 0, 3.0),
                                                                                          (0, 1.0, 0), (0, 0, 1.0)))
    assert L.SliceGeometry.from_dict(rotated.to_dict()) == rotated
    kw = rotated.layer_kwargs()
    np.testing.assert_allclose(kw["rotate"], [[c, -s], [s, c]])
    np.testing.assert_allclose(kw["affine"][0], [1, 0, 3])


def test_result_layer_detection():
    from types import SimpleNamespace as NS

    assert L.is_result_layer(NS(name="anything", metadata={"seg_explain": {"result": "misure_saliency"}}))
    assert L.is_result_layer(NS(name="PdCR map" + L.PARTIAL_SUFFIX, metadata={}))
    assert L.is_result_layer(NS(name="PdCR map · RoI 1 · white_matter" + L.PARTIAL_SUFFIX, metadata={}))
    assert L.is_result_layer(NS(name="MiSuRe saliency · RoI 2 · class 1" + L.STREAM_SUFFIX, metadata={}))
    assert not L.is_result_layer(NS(name="mni152_t1", metadata={"seg_explain": {"source": "a.nii"}}))
    assert not L.is_result_layer(NS(name="PdCR map of last week", metadata={"seg_explain": "odd"}))


def test_symmetric_limit_handles_all_zero_and_nan():
    assert L.symmetric_limit(np.full((3, 3), np.nan)) == 1.0
    assert L.symmetric_limit(np.array([[0.0, -0.3], [0.2, np.nan]])) == pytest.approx(0.3)
