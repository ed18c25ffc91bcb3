"""The reader on files built here with nibabel: 4-D time series, few-contrast files, FreeSurfer MGZ, Analyze."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_seg_explain.core.images import read_image
from napari_seg_explain.napari.reader import get_reader

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def _vol(shape=(12, 10, 8), seed=0):
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def _layers(path):
    reader = get_reader(str(path))
    assert reader is not None, f"the plugin claims {path.name}"
    return reader(str(path))


def test_time_series_opens_as_one_4d_layer_with_a_time_axis(tmp_path):
    data = np.stack([_vol(seed=t) for t in range(20)], axis=-1)  # (X, Y, Z, T), a short fMRI run
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.5  # TR
    path = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(img, path)
    layers = _layers(path)
    assert len(layers) == 1
    arr, kw, kind = layers[0]
    assert kind == "image" and arr.shape[0] == 20 and arr.ndim == 4
    assert kw["scale"][0] == 2.5 and kw["units"][0] == "s" and kw["axis_labels"][0] == "t"
    assert kw["metadata"]["seg_explain"]["series"] == "time" and kw["metadata"]["seg_explain"]["n_volumes"] == 20
    first = _layers_of_3d(tmp_path, data[..., 0])
    np.testing.assert_array_equal(arr[0], first), "each volume is laid out as a 3-D file would be"


def _layers_of_3d(tmp_path, vol):
    path = tmp_path / "one_volume.nii.gz"
    nib.save(nib.Nifti1Image(vol, AFFINE), path)
    return _layers(path)[0][0]


def test_many_volumes_without_a_time_step_are_one_layer_and_few_contrasts_stay_apart(tmp_path):
    many = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_vol(seed=t) for t in range(12)], axis=-1), AFFINE), many)
    (arr, kw, _), = _layers(many)
    assert arr.shape[0] == 12 and kw["axis_labels"][0] == "volume" and kw["scale"][0] == 1.0
    few = tmp_path / "t1_t2_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_vol(seed=t) for t in range(3)], axis=-1), AFFINE), few)
    layers = _layers(few)
    assert [kw["name"] for _, kw, _ in layers] == ["t1_t2_flair [0]", "t1_t2_flair [1]", "t1_t2_flair [2]"]
    assert read_image(few).series == "contrast" and read_image(many).series == "time"


@pytest.mark.parametrize("suffix, cls", [(".mgz", nib.MGHImage), (".mgh", nib.MGHImage),
                                         (".hdr", nib.AnalyzeImage), (".img", nib.AnalyzeImage)])
def test_freesurfer_and_analyze_files_open_like_nifti(tmp_path, suffix, cls):
    """Same voxels and geometry as a NIfTI of the file's affine (Analyze stores no orientation: nibabel gives
    it the format's conventional radiological affine, x flipped, which the reader then honours)."""
    vol = _vol()
    path = tmp_path / f"brain{suffix}"
    nib.save(cls(vol, AFFINE), path)
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(vol, nib.load(path).affine), ref)
    (arr, kw, kind), = _layers(path)
    (ref_arr, ref_kw, _), = _layers(ref)
    assert kind == "image" and kw["name"] == "brain"
    np.testing.assert_allclose(arr, ref_arr)
    np.testing.assert_allclose(kw["scale"], ref_kw["scale"])
    np.testing.assert_allclose(kw["translate"], ref_kw["translate"])
    img = read_image(path)
    assert img.format == ("mgh" if cls is nib.MGHImage else "analyze")
    np.testing.assert_allclose(img.affine, read_image(ref).affine)
