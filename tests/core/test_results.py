"""Explanation save/load: map + extra maps + sidecar, all or nothing, geometry kept."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.images import read_image
from napari_seg_explain.core.results import Explanation


def _expl(shape=(6, 5)):
    amap = np.zeros(shape, np.float32)
    amap[0, 0], amap[1, 1] = -2.5, 1.0
    amap[2:4, 2:4] = np.nan
    roi = np.zeros(shape, bool)
    roi[2:4, 2:4] = True
    return Explanation("pdcr", amap, roi=roi, maps={"extra": np.ones(shape, np.uint8)},
                       stats={"M0": 90.0, "inf": float("inf")}, params={"n": 50}, provenance={"seed": 1},
                       deviations=["x"], geometry={"slice_index": 2})


def test_nifti_round_trip_with_volume_geometry(tmp_path):
    """A RAS source: the map is computed in display order and written back in the file's order and affine."""
    aff = np.diag([0.8, 0.9, 2.5, 1.0])
    aff[:3, 3] = [10, -20, 5]
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), aff), str(tmp_path / "src.nii.gz"))
    like = read_image(tmp_path / "src.nii.gz")
    assert like.spatial_shape == (5, 6, 4), "display orientation: rows A->P (file y), columns R->L (file x)"
    expl = _expl((5, 6))
    files = expl.save(tmp_path / "out.nii.gz", like=like, slice_index=2)
    assert {f.name for f in files} == {"out.nii.gz", "out_extra.nii.gz", "out_roi.nii.gz", "out.json"}
    img = nib.load(tmp_path / "out.nii.gz")
    assert img.shape == (6, 5, 4) and np.allclose(img.affine, aff)
    meta = json.loads((tmp_path / "out.json").read_text())
    assert meta["stats"]["inf"] is None, "non-finite numbers become null (valid JSON)"
    back = Explanation.load(tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(np.nan_to_num(back.map, nan=7), np.nan_to_num(expl.map, nan=7))
    assert back.roi.sum() == 4 and back.maps["extra"].shape == (5, 6) and back.params == {"n": 50}
    disp = nib.load(tmp_path / "out.nii.gz").get_fdata()  # file order: display (row, col) = file (y, x) flipped
    assert disp[5, 4, 2] == -2.5, "display pixel (0, 0): most anterior (file y 4), patient right (file x 5)"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_npy_round_trip(tmp_path):
    _expl().save(tmp_path / "m.npy")
    back = Explanation.load(tmp_path / "m.npy")
    assert back.method == "pdcr" and back.map.shape == (6, 5)


def test_failed_save_writes_nothing(tmp_path):
    with pytest.raises(UserError):
        _expl().save(tmp_path / "missing" / "m.nii.gz")
    with pytest.raises(UserError, match="format"):
        _expl().save(tmp_path / "m.png")
    bad = _expl()
    bad.maps["broken"] = np.zeros((3, 3))  # wrong shape for the source geometry
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.eye(4)), str(tmp_path / "src.nii.gz"))
    with pytest.raises(UserError, match="shape"):
        bad.save(tmp_path / "out.nii.gz", like=read_image(tmp_path / "src.nii.gz"), slice_index=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.nii.gz"], "all or nothing"


def test_sidecar_records_the_slice_without_geometry(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.diag([-1.0, -1.0, 1.0, 1.0])[[1, 0, 2, 3]]),
             str(tmp_path / "src.nii.gz"))
    like = read_image(tmp_path / "src.nii.gz")
    expl = _expl(like.spatial_shape[:2])
    expl.geometry = {}
    expl.save(tmp_path / "out.nii.gz", like=like, slice_index=3)
    back = Explanation.load(tmp_path / "out.nii.gz")
    assert back.map.shape == like.spatial_shape[:2]
