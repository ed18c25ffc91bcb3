"""Pure geometry of the layer contract (no viewer): axis order, scale/translate, labels, convention, and the
metadata that takes a display-oriented layer back to its file."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.images import DISPLAY_ORIENTATION, Image, read_image, write_map
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
    """The functions describe any affine as given (file order here)."""
    aff = _affine(cols, origin)
    assert "".join(axis_codes(aff, 3)) == codes
    text = convention_text(aff, (2, 0, 1), "nifti")
    assert text.startswith(convention), text
    assert slice_plane(aff, (2, 0, 1)) == plane


@pytest.mark.parametrize("name,cols,origin,codes,convention,plane", CASES, ids=[c[0] for c in CASES])
def test_every_file_read_for_display_is_axial_radiological(tmp_path, name, cols, origin, codes, convention,
                                                           plane):
    """Read as the reader reads (display orientation): the same files all show axial, anterior at the top,
    radiological, and the metadata remembers the file's own affine and axis codes."""
    aff = _affine(cols, origin)
    vol = np.random.default_rng(1).integers(0, 100, size=(4, 5, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, aff), str(tmp_path / "f.nii.gz"))
    img = read_image(tmp_path / "f.nii.gz")
    meta = seg_explain_metadata(img)
    assert meta["orientation"] == list(DISPLAY_ORIENTATION) == ["P", "L", "S"]
    assert meta["convention"].startswith("radiological convention"), meta["convention"]
    assert "anterior at the top" in meta["convention"] and meta["slice_plane"] == "axial"
    assert layer_axis_labels(img.affine, meta["axis_order"]) == ("I→S", "A→P", "R→L")
    assert "".join(meta["file_orientation"]) == codes
    np.testing.assert_allclose(meta["file_affine"], aff)
    assert (meta["to_file"] is None) == (codes == "PLS")


def test_metadata_of_a_reoriented_volume_writes_back_the_file(tmp_path):
    aff = _affine([(2.0, 0, 0), (0, 1.5, 0), (0, 0, 3.0)], (-30, -40, -50))  # RAS
    vol = np.random.default_rng(2).integers(0, 100, size=(6, 5, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, aff), str(tmp_path / "ras.nii.gz"))
    img = read_image(tmp_path / "ras.nii.gz")
    assert img.to_file is not None and img.spatial_shape == (5, 6, 4)
    meta = json.loads(json.dumps(seg_explain_metadata(img)))  # as it survives a session / results.json
    np.testing.assert_allclose(meta["affine"], img.affine)
    np.testing.assert_allclose(meta["file_affine"], aff)
    assert meta["file_orientation"] == ["R", "A", "S"] and meta["orientation"] == ["P", "L", "S"]
    assert meta["spatial_shape"] == [5, 6, 4] and meta["spacing"] == [1.5, 2.0, 3.0]
    assert all(len(pair) == 2 and all(isinstance(v, int) for v in pair) for pair in meta["to_file"])
    # scale/translate: napari mm towards (S, P, L) of the display voxel 0 = file voxel (5, 4, 0)
    scale, translate = scale_translate(meta["affine"], meta["spacing"], meta["axis_order"])
    assert scale == (3.0, 1.5, 2.0) and translate == (-50.0, 34.0, 20.0)

    layer = np.moveaxis(img.data[0], -1, 0)
    like = image_from_metadata(meta)
    np.testing.assert_array_equal(like.to_file, img.to_file)
    np.testing.assert_array_equal(like.file_affine, aff)
    assert isinstance(like.to_file, np.ndarray) and isinstance(like.file_affine, np.ndarray)
    np.testing.assert_allclose(like.affine, img.affine)
    np.testing.assert_array_equal(image_from_metadata(meta, layer).data, img.data)
    out = write_map(tmp_path / "back.nii.gz", layer_to_file_array(layer, meta), like)
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), vol)
    np.testing.assert_array_equal(back.affine, aff)
    # a slice map (what the widgets write) lands on the file's slice, in the file's voxel order
    write_map(tmp_path / "slice.nii.gz", layer[2].astype(np.float32), like, slice_index=2)
    sl = np.asarray(nib.load(str(tmp_path / "slice.nii.gz")).dataobj)
    np.testing.assert_array_equal(sl[:, :, 2], vol[:, :, 2])
    assert np.isnan(sl[:, :, [0, 1, 3]]).all()

    with pytest.raises(UserError, match="to_file"):
        image_from_metadata(dict(meta, to_file=[[0, 1], [0, 1], [2, 1]]))
    with pytest.raises(UserError, match="file_affine"):
        image_from_metadata(dict(meta, file_affine=None))


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
    # an Image already in display order (or read in file order): no transform, the file's affine is its own
    assert meta["to_file"] is None and meta["file_affine"] == meta["affine"]
    assert meta["file_orientation"] == ["P", "L", "S"] and meta["spacing"] == [1.5, 1.5, 1.5]
    like = image_from_metadata(meta)
    assert like.spatial_shape == (4, 5, 3) and np.allclose(like.affine, aff)
    assert like.to_file is None and like.file_affine is None
    data = np.arange(60).reshape(3, 4, 5)
    assert np.array_equal(image_from_metadata(meta, data).data[0][:, :, 2], data[2])
    # metadata written before file_affine/to_file existed still gives an Image written with its affine
    old = {k: v for k, v in meta.items() if k not in ("file_affine", "to_file", "file_orientation")}
    like = image_from_metadata(old)
    assert like.to_file is None and np.allclose(like.affine, aff)


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
