"""Pure geometry of the layer contract (no viewer): axis order, scale/translate, labels, convention."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.images import Image
from napari_seg_explain.napari.geometry import (
    axis_codes,
    convention_text,
    file_to_layer_index,
    geometry_kwargs,
    image_from_metadata,
    layer_axis_labels,
    layer_to_file_array,
    layer_to_file_index,
    scale_translate,
    seg_explain_metadata,
    slice_plane,
)


def _affine(cols, origin):
    a = np.eye(4)
    a[:3, :3] = np.asarray(cols, float).T  # cols[f] = world direction * spacing of file axis f
    a[:3, 3] = origin
    return a


# name, affine columns (one per file axis), origin, expected codes, expected convention start, plane
CASES = [
    ("PLS (sample)", [(0, -1.5, 0), (-1.5, 0, 0), (0, 0, 1.5)], (77.5, 79, -72), "PLS", "radiological", "axial"),
    ("PRS", [(0, -1, 0), (2, 0, 0), (0, 0, 3)], (1, 2, 3), "PRS", "neurological", "axial"),
    ("RAS", [(1, 0, 0), (0, 1, 0), (0, 0, 1)], (0, 0, 0), "RAS", "columns run posterior to anterior", "axial"),
    ("LPS k=sagittal", [(0, 0, -1), (0, -1, 0), (1, 0, 0)], (0, 0, 0), "IPR", "columns",
     "sagittal"),
]


@pytest.mark.parametrize("name,cols,origin,codes,convention,plane", CASES, ids=[c[0] for c in CASES])
def test_directions_convention_plane(name, cols, origin, codes, convention, plane):
    aff = _affine(cols, origin)
    assert "".join(axis_codes(aff, 3)) == codes
    text = convention_text(aff, (2, 0, 1), "nifti")
    assert text.startswith(convention), text
    assert slice_plane(aff, (2, 0, 1)) == plane


def test_scale_translate_are_signed_world_positions_in_layer_order():
    aff = _affine([(0, -1.5, 0), (-2.0, 0, 0), (0, 0, 3.0)], (77.5, 79, -72))  # P, L, S
    scale, translate = scale_translate(aff, (1.5, 2.0, 3.0), (2, 0, 1))
    assert scale == (3.0, 1.5, 2.0)
    # layer axes (S, P, L): translate = (+z0, -y0, -x0)
    assert translate == (-72.0, -79.0, -77.5)
    assert layer_axis_labels(aff, (2, 0, 1)) == ("I→S", "A→P", "R→L")


def test_layer_file_array_and_index_round_trip():
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 100, size=(4, 5, 3))
    meta = {"axis_order": [2, 0, 1], "spatial_shape": [4, 5, 3]}
    layer = np.moveaxis(vol, -1, 0)
    back = layer_to_file_array(layer, meta)
    assert np.array_equal(back, vol)
    for z in range(3):
        assert np.array_equal(layer[z], vol[:, :, z])
    assert file_to_layer_index((1, 2, 0), meta) == (0, 1, 2)
    assert layer_to_file_index((0, 1, 2), meta) == (1, 2, 0)
    with pytest.raises(UserError, match="shape"):
        layer_to_file_array(layer[0], meta)


def test_metadata_and_image_from_metadata():
    aff = _affine([(0, -1.5, 0), (-1.5, 0, 0), (0, 0, 1.5)], (77.5, 79, -72))
    img = Image(np.zeros((1, 4, 5, 3), np.int16), (1.5, 1.5, 1.5), aff, "/x/scan.nii.gz", format="nifti")
    meta = seg_explain_metadata(img)
    assert meta["axis_order"] == [2, 0, 1] and meta["spatial_shape"] == [4, 5, 3]
    assert meta["orientation"] == ["P", "L", "S"] and meta["oblique"] is False
    assert meta["convention"].startswith("radiological")
    like = image_from_metadata(meta)
    assert like.spatial_shape == (4, 5, 3) and np.allclose(like.affine, aff)
    data = np.arange(60).reshape(3, 4, 5)
    assert np.array_equal(image_from_metadata(meta, data).data[0][:, :, 2], data[2])


def test_geometry_kwargs_copy_metadata_deeply():
    class FakeLayer:
        scale = np.array([2.0, 1.0, 1.0])
        translate = np.array([5.0, 0.0, -1.0])
        axis_labels = ("I→S", "A→P", "R→L")
        units = ("millimeter",) * 3
        metadata = {"seg_explain": {"affine": [[1.0]], "axis_order": [2, 0, 1]}}

    kw = geometry_kwargs(FakeLayer)
    assert kw["scale"] == (2.0, 1.0, 1.0) and kw["translate"] == (5.0, 0.0, -1.0)
    kw["metadata"]["seg_explain"]["affine"][0][0] = 9.0
    assert FakeLayer.metadata["seg_explain"]["affine"] == [[1.0]]
