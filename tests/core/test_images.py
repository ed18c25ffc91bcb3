"""Reading/writing images with geometry: real files made in tmp_path, no mocks."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_seg_explain.core.errors import ImageReadError, UserError
from napari_seg_explain.core.images import DISPLAY_ORIENTATION, Image, read_image, spatial_geometry, write_map


def read_file_order(path):
    """These tests check reading in the file's own voxel order (display reorientation is tested below)."""
    return read_image(path, orientation=None)

AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def _ramp(shape, dtype=np.float32):
    return np.arange(np.prod(shape), dtype=np.float64).reshape(shape).astype(dtype)


def _itk_ras(img: sitk.Image, idx) -> np.ndarray:
    return LPS_RAS @ np.array(img.TransformIndexToPhysicalPoint([int(i) for i in idx]))


# --------------------------------------------------------------------------- NIfTI

@pytest.mark.parametrize(
    "shape, name, dtype",
    [((6, 5), "a.nii", np.float32), ((6, 5, 4), "a.nii.gz", np.float32),
     ((6, 5, 4), "a.nii", np.int16), ((6, 5, 4, 3), "a.nii.gz", np.float32)],
)
def test_read_nifti(tmp_path, shape, name, dtype):
    arr = _ramp(shape, dtype)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(arr, AFFINE), path)
    img = read_file_order(path)
    nsp = min(len(shape), 3)
    assert img.format == "nifti" and img.source == str(path) and img.header is not None
    assert img.spatial_ndim == nsp and img.spatial_shape == shape[:nsp]
    assert img.n_channels == (shape[3] if len(shape) == 4 else 1)
    assert img.data.dtype == dtype
    assert img.spacing == pytest.approx((0.8, 0.9, 2.5)[:nsp])
    np.testing.assert_allclose(img.affine, AFFINE)
    vox = (3, 2, 1)[:nsp]
    np.testing.assert_array_equal(img.data[(slice(None), *vox)], np.atleast_1d(arr[vox]))  # channels last -> first
    assert img.channel_names == tuple(str(c) for c in range(img.n_channels))
    assert img.n_slices == (shape[2] if nsp == 3 else 1)


def test_read_nifti_applies_scaling(tmp_path):
    arr = np.linspace(-1.0, 1.0, 60).reshape(5, 4, 3)
    nimg = nib.Nifti1Image(arr, AFFINE)
    nimg.set_data_dtype(np.int16)  # nibabel stores with scl_slope/inter
    nib.save(nimg, tmp_path / "s.nii")
    img = read_file_order(tmp_path / "s.nii")
    assert img.data.dtype == np.float32
    np.testing.assert_allclose(img.data[0], arr, atol=1e-3)


# --------------------------------------------------------------------------- pictures

def test_read_png_gray_and_rgb(tmp_path):
    gray = np.zeros((7, 9), np.uint8)
    gray[2, 5] = 200
    sitk.WriteImage(sitk.GetImageFromArray(gray), str(tmp_path / "g.png"))
    img = read_file_order(tmp_path / "g.png")
    assert img.format == "png" and img.data.shape == (1, 7, 9) and img.data[0, 2, 5] == 200
    assert img.spacing == (1.0, 1.0) and not img.is_oblique()

    rgba = np.zeros((7, 9, 4), np.uint8)
    rgba[2, 5] = (10, 20, 30, 255)
    for name, pixels in (("rgb.png", rgba[..., :3]), ("rgba.png", rgba)):
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(pixels), isVector=True), str(tmp_path / name))
        img = read_file_order(tmp_path / name)
        assert img.data.shape == (3, 7, 9) and img.channel_names == ("R", "G", "B")
        assert tuple(img.data[:, 2, 5]) == (10, 20, 30) and img.data[:, 0, 0].sum() == 0
    np.testing.assert_allclose(img.slice2d(), img.data.astype(np.float32))


@pytest.mark.parametrize("name, fmt, rgb", [("a.jpg", "jpeg", True), ("a.tif", "tiff", False),
                                            ("a.bmp", "bmp", True), ("b.bmp", "bmp", False)])
def test_read_other_pictures(tmp_path, name, fmt, rgb):
    arr = np.zeros((8, 10, 3) if rgb else (8, 10), np.uint8)
    arr[2, 5] = 180
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=rgb), str(tmp_path / name))
    img = read_file_order(tmp_path / name)
    assert img.format == fmt and img.data.shape == ((3,) if rgb else (1,)) + (8, 10)
    assert abs(int(img.data[0, 2, 5]) - 180) < 40 and abs(int(img.data[0, 6, 1])) < 40  # JPEG is lossy


# --------------------------------------------------------------------------- ITK volumes

def _itk_volume(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    vol = sitk.GetImageFromArray(_ramp((4, 5, 6), np.int16))  # (z, y, x) -> size (6, 5, 4)
    vol.SetSpacing((0.8, 0.9, 2.5))
    vol.SetOrigin((10.0, -20.0, 30.0))
    vol.SetDirection(direction)
    return vol


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 1, 0, -1, 0, 0, 0, 0, 1)])
def test_itk_volume_geometry_matches_nibabel(tmp_path, ext, direction):
    vol = _itk_volume(direction)
    sitk.WriteImage(vol, str(tmp_path / f"v{ext}"))
    sitk.WriteImage(vol, str(tmp_path / "v.nii.gz"))  # ITK's own LPS->RAS conversion, read by nibabel
    img, ref = read_file_order(tmp_path / f"v{ext}"), read_file_order(tmp_path / "v.nii.gz")
    assert img.spatial_shape == (6, 5, 4) and img.spacing == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    np.testing.assert_array_equal(img.data, ref.data)
    for idx in [(0, 0, 0), (5, 1, 3), (2, 4, 1)]:
        np.testing.assert_allclose(img.affine @ [*idx, 1], [*_itk_ras(vol, idx), 1], atol=1e-5)
        assert img.data[(0, *idx)] == vol[idx]


def test_dicom_series_folder(tmp_path):
    vol = _itk_volume()
    sitk.WriteImage(vol, str(tmp_path / "v.mha"))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(vol.GetDepth()):
        s = vol[:, :, k]
        for tag, value in [("0008|0060", "CT"), ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"),
                           ("0020|0032", "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "0.9\\0.8"),
                           ("0018|0050", "2.5"), ("0020|0013", str(k + 1))]:
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k}.dcm"))
        writer.Execute(s)
    img, ref = read_file_order(folder), read_file_order(tmp_path / "v.mha")
    assert img.format == "dicom" and img.spatial_shape == (6, 5, 4) and img.n_slices == 4
    assert img.spacing == pytest.approx((0.8, 0.9, 2.5), abs=1e-4)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(img.data, ref.data)


@pytest.mark.parametrize("shape, expect", [((7, 9), (1, 7, 9)), ((3, 7, 9), (3, 7, 9)), ((6, 5, 4), (1, 6, 5, 4))])
def test_read_npy(tmp_path, shape, expect):
    np.save(tmp_path / "a.npy", _ramp(shape, np.float64))
    img = read_file_order(tmp_path / "a.npy")
    assert img.format == "npy" and img.data.shape == expect and img.data.dtype == np.float32
    assert img.spacing == (1.0,) * (len(expect) - 1)
    np.testing.assert_array_equal(img.affine, np.eye(4))


# --------------------------------------------------------------------------- writing

def _nifti_like(tmp_path, shape=(6, 5, 4)) -> Image:
    nimg = nib.Nifti1Image(_ramp(shape), AFFINE)
    nimg.set_qform(AFFINE, code=1)
    nib.save(nimg, tmp_path / "in.nii.gz")
    return read_file_order(tmp_path / "in.nii.gz")


def test_write_map_nifti_round_trip(tmp_path):
    like = _nifti_like(tmp_path)
    heat = _ramp(like.spatial_shape, np.float64) / 7
    out = write_map(tmp_path / "heat.nii.gz", heat, like)
    back = nib.load(out)
    assert back.shape == like.spatial_shape and back.get_data_dtype() == np.float32
    np.testing.assert_allclose(back.affine, like.affine)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    np.testing.assert_allclose(back.get_fdata(), heat, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.nii.gz", "in.nii.gz"]  # no temp files


def test_write_map_slice_embedding_and_labels(tmp_path):
    like = _nifti_like(tmp_path)
    sl = np.ones((6, 5), np.float32)
    back = nib.load(write_map(tmp_path / "s.nii", sl, like, slice_index=2)).get_fdata()
    assert back.shape == (6, 5, 4) and np.all(back[:, :, 2] == 1)
    assert np.isnan(np.delete(back, 2, axis=2)).all()
    mask = np.zeros((6, 5), bool)
    mask[1, 2] = True
    m = nib.load(write_map(tmp_path / "m.nii.gz", mask, like, slice_index=3))
    assert m.get_data_dtype() == np.uint8 and np.asarray(m.dataobj).sum() == 1 and m.dataobj[1, 2, 3] == 1
    labels = np.zeros(like.spatial_shape, np.int64)
    labels[0, 0, 0] = 300
    assert nib.load(write_map(tmp_path / "l.nii.gz", labels, like)).get_data_dtype() == np.int16


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".npy"])
def test_write_map_other_formats_round_trip(tmp_path, ext):
    like = _nifti_like(tmp_path)
    heat = _ramp(like.spatial_shape)
    back = read_file_order(write_map(tmp_path / f"h{ext}", heat, like))
    np.testing.assert_array_equal(back.data[0], heat)
    if ext != ".npy":
        np.testing.assert_allclose(back.affine, like.affine, atol=1e-5)


def test_write_map_2d_png_and_tif(tmp_path):
    like = read_file_order(_write_png(tmp_path))
    mask = np.zeros(like.spatial_shape, np.uint8)
    mask[2, 5] = 1
    assert read_file_order(write_map(tmp_path / "m.png", mask, like)).data[0, 2, 5] == 1
    back = read_file_order(write_map(tmp_path / "h.tif", mask.astype(float) / 2, like))
    assert back.data.shape == (1, 7, 9) and back.data[0, 2, 5] == pytest.approx(0.5)
    with pytest.raises(UserError, match="PNG"):
        write_map(tmp_path / "h.png", mask.astype(float), like)


def test_itk_2d_geometry_and_round_trip(tmp_path):
    plane = sitk.GetImageFromArray(_ramp((4, 5), np.int16))  # 4 rows (y), 5 cols (x)
    plane.SetSpacing((0.5, 0.7))
    plane.SetOrigin((3.0, 4.0))
    plane.SetDirection((0, 1, -1, 0))
    sitk.WriteImage(plane, str(tmp_path / "p.mha"))
    img = read_file_order(tmp_path / "p.mha")
    assert img.spatial_shape == (4, 5) and img.spacing == pytest.approx((0.7, 0.5))  # (row, col)
    for row, col in [(0, 0), (1, 2), (3, 4)]:
        world = LPS_RAS[:2, :2] @ plane.TransformIndexToPhysicalPoint((col, row))
        np.testing.assert_allclose((img.affine @ [row, col, 0, 1])[:2], world)
        assert img.data[0, row, col] == plane[col, row]
    back = read_file_order(write_map(tmp_path / "o.nrrd", img.data[0], img))
    np.testing.assert_allclose(back.affine, img.affine)
    np.testing.assert_array_equal(back.data, img.data)


def _write_png(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((7, 9), np.uint8)), str(tmp_path / "in.png"))
    return tmp_path / "in.png"


def test_write_map_is_atomic(tmp_path):
    like = _nifti_like(tmp_path)
    good = _ramp(like.spatial_shape)
    with pytest.raises(UserError, match="does not exist"):
        write_map(tmp_path / "missing" / "x.nii.gz", good, like)
    assert not (tmp_path / "missing").exists()
    target = write_map(tmp_path / "out.nii.gz", good, like)
    before = target.read_bytes()
    with pytest.raises(UserError, match="shape"):
        write_map(target, np.zeros((3, 3)), like)
    (tmp_path / "dir.nii.gz").mkdir()  # os.replace onto a folder fails after the temp file was written
    with pytest.raises(UserError, match="could not write"):
        write_map(tmp_path / "dir.nii.gz", good, like)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.nii.gz", "in.nii.gz", "out.nii.gz"]


# --------------------------------------------------------------------------- errors and helpers

def test_read_errors_are_helpful(tmp_path):
    with pytest.raises(ImageReadError, match="not found.*nii"):
        read_file_order(tmp_path / "nope.nii.gz")
    (tmp_path / "a.xyz").write_text("hi")
    with pytest.raises(ImageReadError, match="unknown image type.*\\.nii\\.gz"):
        read_file_order(tmp_path / "a.xyz")
    (tmp_path / "bad.nii.gz").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ImageReadError, match="could not read.*damaged") as info:
        read_file_order(tmp_path / "bad.nii.gz")
    assert info.value.__cause__ is not None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_file_order(tmp_path / "empty")


def test_slice2d_and_oblique(tmp_path):
    like = _nifti_like(tmp_path)
    s = like.slice2d(3)
    assert s.shape == (1, 6, 5) and s.dtype == np.float32
    np.testing.assert_array_equal(s[0], like.data[0, :, :, 3])
    s[:] = -1
    assert like.data.min() >= 0  # a copy
    assert like.slice2d().shape == (1, 6, 5)
    with pytest.raises(UserError, match="0..3"):
        like.slice2d(4)
    assert not like.is_oblique()
    c, s_ = np.cos(0.3), np.sin(0.3)
    rot = AFFINE.copy()
    rot[:3, :3] = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ AFFINE[:3, :3]
    assert Image(like.data, like.spacing, rot).is_oblique()


def test_spatial_geometry_is_json(tmp_path):
    geo = spatial_geometry(_nifti_like(tmp_path))
    geo = json.loads(json.dumps(geo))
    assert geo["orientation"] == ["R", "A", "S"] and geo["spatial_shape"] == [6, 5, 4]
    assert geo["spacing"] == pytest.approx([0.8, 0.9, 2.5]) and geo["format"] == "nifti"
    np.testing.assert_allclose(geo["affine"], AFFINE)



# --------------------------------------------------------------------- display orientation
RAS_AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [RAS_AFFINE, np.diag([-1.0, -1.0, 2.0, 1.0]), np.diag([-1.0, 1.0, 1.0, 1.0])],
                         ids=["RAS", "LPS", "LAS"])
def test_volumes_open_in_display_orientation_with_world_positions_kept(tmp_path, affine):
    arr = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)  # unique values find each voxel again
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "v.nii.gz")
    img = read_image(tmp_path / "v.nii.gz")
    assert nib.aff2axcodes(img.affine) == DISPLAY_ORIENTATION
    assert np.allclose(img.file_affine, affine)
    for idx in [(0, 0, 0), (5, 1, 3), (2, 4, 1)]:
        value = arr[idx]
        where = np.argwhere(img.data[0] == value)[0]
        world_file = affine @ np.r_[idx, 1]
        world_disp = img.affine @ np.r_[where, 1]
        assert np.allclose(world_file, world_disp), "reorientation moves no voxel in the world"
    assert sorted(img.spacing) == pytest.approx(sorted(np.abs(np.diag(affine)[:3]).tolist()))


def test_display_orientation_maps_are_written_back_in_file_order(tmp_path):
    arr = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    nib.save(nib.Nifti1Image(arr, RAS_AFFINE), tmp_path / "v.nii.gz")
    img = read_image(tmp_path / "v.nii.gz")
    write_map(tmp_path / "full.nii.gz", img.data[0], img)
    back = nib.load(tmp_path / "full.nii.gz")
    assert np.allclose(back.affine, RAS_AFFINE) and np.array_equal(np.asarray(back.dataobj), arr)
    z = 1  # a display slice, embedded and written back at the same world positions
    write_map(tmp_path / "slice.nii.gz", img.data[0][:, :, z], img, slice_index=z)
    out = np.asarray(nib.load(tmp_path / "slice.nii.gz").dataobj)
    finite = np.isfinite(out)
    assert finite.sum() == img.data[0][:, :, z].size
    assert np.array_equal(out[finite], arr[finite]), "each value lands on its own voxel of the file"


def test_sample_volume_is_already_in_display_orientation():
    from sample_paths import SAMPLE_DIR

    img = read_image(SAMPLE_DIR / "mni152_t1.nii.gz")
    assert img.to_file is None and nib.aff2axcodes(img.affine) == DISPLAY_ORIENTATION


def test_single_non_axial_plane_stored_as_3d_is_not_turned_into_slivers(tmp_path):
    arr = np.arange(64 * 48, dtype=np.float32).reshape(1, 64, 48)  # one sagittal plane, RAS
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "plane.nii.gz")
    img = read_image(tmp_path / "plane.nii.gz")
    assert img.spatial_shape == (1, 64, 48) and img.to_file is None
