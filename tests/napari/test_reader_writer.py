"""Reader, writer and sample data through real napari viewers (pytest-qt, Xvfb), on files made here.

The reader shows every volume in the display orientation (rows anterior -> posterior, columns the patient's
right -> left, slices inferior -> superior) whatever the file's voxel order. The tests check it without
trusting the reader's own geometry: marker voxels at the file's anterior-right-superior and
posterior-left-inferior corners must land at ``layer.data[-1, 0, 0]`` and ``layer.data[0, -1, -1]``, and
every layer voxel, taken through napari's ``scale``/``translate`` to millimetres ``(S, P, L)`` and back
through the FILE's affine (computed here from what was written), must hold the file's value.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_seg_explain.core.errors import ImageReadError, UserError
from napari_seg_explain.napari.geometry import ObliqueAffineWarning, layer_to_file_index
from napari_seg_explain.napari.reader import get_reader, has_few_values, is_label_name, read_layers
from napari_seg_explain.napari.writer import write_layer

PLUGIN = "napari-seg-explain"
META_KEYS = {"source", "format", "affine", "spatial_shape", "spacing", "axis_order", "orientation",
             "file_affine", "file_orientation", "to_file", "oblique", "convention", "slice_plane", "channel"}
DISPLAY = ["P", "L", "S"]
AXIAL_LABELS = ("I→S", "A→P", "R→L")
ARS, PLI = 5000, 3000  # marker values (volumes hold 0..999 elsewhere)
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def _affine(cols, origin) -> np.ndarray:
    """4x4 affine whose column f (world direction * spacing of voxel axis f) is ``cols[f]``."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(cols, float).T
    a[:3, 3] = origin
    return a


# RAS (the usual NIfTI), spacing (2, 1.5, 3), non-zero origin
RAS_AFFINE = _affine([(2.0, 0, 0), (0, 1.5, 0), (0, 0, 3.0)], (-30.0, -40.0, -50.0))
# P, L, S voxel axes: already the display orientation (like the sample), so nothing is reoriented
PLS_AFFINE = _affine([(0, -1.5, 0), (-2.0, 0, 0), (0, 0, 3.0)], (30.0, 40.0, -50.0))
NIFTI_AFFINES = {
    "RAS": RAS_AFFINE,
    "LAS": _affine([(-2.0, 0, 0), (0, 1.5, 0), (0, 0, 3.0)], (30.0, -40.0, -50.0)),
    "LPS": _affine([(-2.0, 0, 0), (0, -1.5, 0), (0, 0, 3.0)], (30.0, 40.0, -50.0)),
    "PLS": PLS_AFFINE,
    "sagittal ASL": _affine([(0, 1.5, 0), (0, 0, 3.0), (-2.0, 0, 0)], (10.0, -40.0, -50.0)),
    "coronal LIP": _affine([(-2.0, 0, 0), (0, 0, -3.0), (0, -1.5, 0)], (30.0, 5.0, 20.0)),
}
SHAPE = (6, 5, 4)  # file voxel shape


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray = RAS_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _volume(dtype=np.int16, shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(dtype)


def _ras_layer(vol: np.ndarray) -> np.ndarray:
    """The layer a RAS file ``vol[i, j, k]`` must give, written out by hand: slice k, rows posterior-going
    (reversed j), columns towards the patient's left (reversed i)."""
    return np.stack([vol[::-1, ::-1, k].T for k in range(vol.shape[2])])


def _open(viewer, path):
    return viewer.open(str(path), plugin=PLUGIN)


def _kind(layer) -> str:
    """'labels' or 'image' (public layer classes, no private attributes)."""
    from napari.layers import Image, Labels

    return "labels" if isinstance(layer, Labels) else "image" if isinstance(layer, Image) else type(layer).__name__


def _corners(shape, affine) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """File voxel indices of the corner nearest the anterior-right-superior and the one nearest the
    posterior-left-inferior of the patient (world RAS+: +x right, +y anterior, +z superior)."""
    corners = list(itertools.product(*[(0, n - 1) for n in shape]))
    score = [float(np.sum(affine[:3, :3] @ c + affine[:3, 3])) for c in corners]
    return corners[int(np.argmax(score))], corners[int(np.argmin(score))]


def _mark(vol: np.ndarray, affine: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ars, pli = _corners(vol.shape, affine)
    vol[ars], vol[pli] = ARS, PLI
    return ars, pli


def _napari_mm(ras) -> np.ndarray:
    """napari world coordinates of a volume layer for a world RAS+ point: millimetres towards (S, P, L)."""
    x, y, z = np.asarray(ras, float)[:3]
    return np.array([z, -y, -x])


def _check_display(data, scale, translate, meta, file_vol, file_affine, data_to_world=None) -> None:
    """The layer is the file shown axial, anterior up, radiological, with exact millimetres.

    ``file_vol`` / ``file_affine``: the file's voxel array and RAS affine, as written by the test (not as
    read by the reader); the volume holds the ARS/PLI markers at its corners (see :func:`_mark`).
    """
    data = np.asarray(data)
    assert data[-1, 0, 0] == ARS, "anterior-right-superior corner: last slice, top row, left column"
    assert data[0, -1, -1] == PLI, "posterior-left-inferior corner: first slice, bottom row, right column"
    assert (data == ARS).sum() == 1 and (data == PLI).sum() == 1
    # every layer voxel -> napari mm (S, P, L) via scale/translate -> RAS -> the file's voxel: same value
    idx = np.indices(data.shape).reshape(3, -1).T
    mm = np.asarray(translate, float) + idx * np.asarray(scale, float)
    ras = np.stack([-mm[:, 2], -mm[:, 1], mm[:, 0], np.ones(len(mm))])
    fidx = (np.linalg.inv(file_affine) @ ras)[:3]
    np.testing.assert_allclose(fidx, np.rint(fidx), atol=1e-6)
    fidx = np.rint(fidx).astype(int)
    np.testing.assert_array_equal(file_vol[tuple(fidx)], data.reshape(-1))
    # the metadata's (display-order) affine maps the layer's voxels to the same world points
    for lidx in ((data.shape[0] - 1, 0, 0), (0, data.shape[1] - 1, data.shape[2] - 1), (1, 2, 3)):
        world = np.asarray(meta["affine"]) @ (*layer_to_file_index(lidx, meta), 1.0)
        np.testing.assert_allclose(_napari_mm(world), np.asarray(translate) + np.asarray(lidx) * scale, atol=1e-9)
        if data_to_world is not None:  # napari's own data -> world transform agrees
            np.testing.assert_allclose(data_to_world(lidx), _napari_mm(world), atol=1e-9)
    assert meta["orientation"] == DISPLAY and meta["axis_order"] == [2, 0, 1]
    assert meta["spatial_shape"] == [data.shape[1], data.shape[2], data.shape[0]]
    np.testing.assert_allclose(meta["file_affine"], file_affine, atol=1e-9)
    assert meta["file_orientation"] == list(nib.aff2axcodes(file_affine))
    assert (meta["to_file"] is None) == (meta["file_orientation"] == DISPLAY)
    assert meta["convention"].startswith("radiological convention") and meta["slice_plane"] == "axial"
    assert "anterior at the top" in meta["convention"]
    json.dumps(meta)  # plain JSON: survives napari sessions and results.json


def _write_back(tmp_path, data, attributes, file_vol, file_affine) -> None:
    """The plugin writer gives back the file: same voxel order, values and affine."""
    out = tmp_path / "written_back.nii.gz"
    assert write_layer(str(out), data, attributes) == [str(out)]
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, file_affine, atol=1e-5)
    assert back.shape == file_vol.shape
    np.testing.assert_array_equal(np.asarray(back.dataobj), file_vol)


def test_nifti_volume_opens_axial_with_geometry(make_napari_viewer, tmp_path):
    vol = _volume()
    path = _nifti(tmp_path / "scan.nii.gz", vol)  # RAS: shown reoriented to P, L, S
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, path)
    assert _kind(layer) == "image" and layer.name == "scan"
    assert layer.data.shape == (4, 5, 6)  # (slices S, rows P, cols L)
    np.testing.assert_array_equal(layer.data, _ras_layer(vol))
    for z in range(4):  # row 0 is the file's most anterior j, column 0 its rightmost i
        np.testing.assert_array_equal(layer.data[z][0], vol[::-1, -1, z])
        np.testing.assert_array_equal(layer.data[z][:, 0], vol[-1, ::-1, z])
    np.testing.assert_allclose(layer.scale, (3.0, 1.5, 2.0))
    # voxel 0 of the layer is file voxel (5, 4, 0) at RAS (-20, -34, -50): mm towards (S, P, L)
    np.testing.assert_allclose(layer.translate, (-50.0, 34.0, 20.0))
    assert tuple(layer.axis_labels) == AXIAL_LABELS
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert layer.colormap.name == "gray"
    lo, hi = np.percentile(vol, [0.5, 99.5])
    np.testing.assert_allclose(layer.contrast_limits, (lo, hi))
    meta = layer.metadata["seg_explain"]
    assert META_KEYS <= meta.keys()
    assert meta["source"] == str(path) and meta["format"] == "nifti"
    np.testing.assert_allclose(meta["affine"], _affine([(0, -1.5, 0), (-2.0, 0, 0), (0, 0, 3.0)],
                                                       (-20.0, -34.0, -50.0)))
    np.testing.assert_allclose(meta["file_affine"], RAS_AFFINE)
    assert meta["spatial_shape"] == [5, 6, 4] and meta["spacing"] == [1.5, 2.0, 3.0]
    assert meta["axis_order"] == [2, 0, 1]
    assert meta["orientation"] == DISPLAY and meta["file_orientation"] == ["R", "A", "S"]
    assert meta["oblique"] is False and meta["channel"] is None
    # to_file takes the Image order back to the file's voxel order
    image_order = np.transpose(layer.data, (1, 2, 0))
    np.testing.assert_array_equal(nib.orientations.apply_orientation(image_order, np.asarray(meta["to_file"])), vol)
    assert meta["convention"].startswith("radiological")
    assert viewer.dims.ndisplay == 2 and viewer.dims.not_displayed == (0,)  # slider over the axial axis


@pytest.mark.parametrize("orient", list(NIFTI_AFFINES))
def test_nifti_any_orientation_opens_axial_anterior_up_radiological(make_napari_viewer, tmp_path, orient):
    aff = NIFTI_AFFINES[orient]
    vol = _volume(seed=11)
    _mark(vol, aff)
    path = _nifti(tmp_path / "scan.nii.gz", vol, aff)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, path)
    assert sorted(layer.data.shape) == sorted(SHAPE)
    assert tuple(layer.axis_labels) == AXIAL_LABELS
    meta = layer.metadata["seg_explain"]
    _check_display(layer.data, layer.scale, layer.translate, meta, vol, aff, layer.data_to_world)
    # spacing follows the anatomy: 3 mm along S, 1.5 mm along A/P, 2 mm along R/L in every file above
    np.testing.assert_allclose(layer.scale, (3.0, 1.5, 2.0))
    _write_back(tmp_path, layer.data, {"metadata": layer.metadata}, vol, aff)


def test_four_d_nifti_gives_one_layer_per_contrast(make_napari_viewer, tmp_path):
    data = np.stack([_volume(np.float32, seed=1), _volume(np.float32, seed=2) * 2], axis=-1)
    path = _nifti(tmp_path / "t1_t2.nii.gz", data)
    viewer = make_napari_viewer()
    layers = _open(viewer, path)
    assert [ly.name for ly in layers] == ["t1_t2 [0]", "t1_t2 [1]"]
    for c, layer in enumerate(layers):
        assert layer.data.shape == (4, 5, 6)
        np.testing.assert_array_equal(layer.data, _ras_layer(data[..., c]))
        np.testing.assert_allclose(layer.scale, layers[0].scale)
        np.testing.assert_allclose(layer.translate, layers[0].translate)
        meta = layer.metadata["seg_explain"]
        assert meta["channel"] == str(c) and meta["orientation"] == DISPLAY
        np.testing.assert_allclose(meta["file_affine"], RAS_AFFINE)
        out = tmp_path / f"contrast{c}.nii.gz"
        write_layer(str(out), layer.data, {"metadata": layer.metadata})
        np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), data[..., c])


def test_png_gray_and_rgb(make_napari_viewer, tmp_path):
    from PIL import Image as PILImage

    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, size=(7, 9), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    PILImage.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    PILImage.fromarray(rgb, mode="RGB").save(tmp_path / "colour.png")
    viewer = make_napari_viewer()
    (g,) = _open(viewer, tmp_path / "gray.png")
    assert g.data.shape == (7, 9) and not g.rgb
    np.testing.assert_array_equal(g.data, gray)
    gmeta = g.metadata["seg_explain"]
    assert gmeta["axis_order"] == [0, 1] and gmeta["to_file"] is None  # 2-D images are never reoriented
    assert gmeta["file_affine"] == gmeta["affine"] and gmeta["file_orientation"] == gmeta["orientation"]
    assert g.metadata["seg_explain"]["convention"].startswith("no patient orientation")
    (c,) = _open(viewer, tmp_path / "colour.png")
    assert c.rgb and c.data.shape == (7, 9, 3)
    np.testing.assert_array_equal(c.data, rgb)


@pytest.mark.parametrize("name,dtype,kind", [
    ("brain_mask.nii.gz", np.uint8, "labels"),
    ("Tumour-SEG.nii", np.int16, "labels"),
    ("lesion_label.nii.gz", np.float32, "labels"),   # whole numbers stored as float
    ("label_probability.nii.gz", np.float32, "image"),  # real values: not labels
    ("scan.nii.gz", np.uint8, "image"),
])
def test_label_files_open_as_labels(make_napari_viewer, tmp_path, name, dtype, kind):
    data = (_volume(seed=4) % 3).astype(dtype)
    if name.startswith("label_probability"):
        data = data / 3.0
    path = _nifti(tmp_path / name, data)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, path)
    assert _kind(layer) == kind
    np.testing.assert_allclose(layer.scale, (3.0, 1.5, 2.0))
    np.testing.assert_allclose(layer.data, _ras_layer(data))


@pytest.mark.parametrize("name,dtype,kind", [
    ("sub-01_T1w_masked.nii.gz", np.int16, "image"),     # 'masked' is not the token 'mask'
    ("ct_pre_segmentation.nii.gz", np.int16, "image"),   # label word, but a CT: hundreds of values
    ("mni152_wm_label.nii.gz", np.uint8, "labels"),
    ("sub-01_desc-aseg_dseg.nii.gz", np.int32, "labels"),  # FreeSurfer-like label values
])
def test_label_words_are_whole_name_tokens_and_labels_have_few_values(make_napari_viewer, tmp_path, name, dtype,
                                                                      kind):
    rng = np.random.default_rng(5)
    shape = (16, 18, 12)
    if kind == "image":  # an integer scan (CT in HU / MR intensities)
        data = rng.integers(-1000, 2000, size=shape).astype(dtype)
    elif dtype == np.int32:
        data = rng.choice(np.array([0, 2, 4, 41, 43, 1035, 2035]), size=shape).astype(dtype)
    else:
        data = (rng.uniform(size=shape) > 0.6).astype(dtype)
    path = _nifti(tmp_path / name, data)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, path)
    assert _kind(layer) == kind
    np.testing.assert_array_equal(layer.data, _ras_layer(data))


def test_label_name_tokens_and_value_counts():
    assert not is_label_name("sub-01_T1w_masked.nii.gz") and not is_label_name("segmental.nii")
    assert all(is_label_name(n) for n in ("ct_pre_segmentation.nii.gz", "mni152_wm_label.nii.gz", "brain-MASK.nrrd",
                                          "aparc+aseg.nii", "case 3 gt.png", "labels.tif"))
    ramp = np.arange(-1000, 2000, dtype=np.int16)
    assert not has_few_values(ramp) and has_few_values(ramp[:256]) and not has_few_values(ramp[:257])
    assert has_few_values(np.zeros((4, 4), np.uint8)) and not has_few_values(np.zeros(3, np.float32))
    wide = np.repeat(np.array([0, 7, 10**9], np.int64), 5)  # few values over a wide range
    assert has_few_values(wide) and not has_few_values(np.arange(300, dtype=np.int64) * 10**7)


def _itk_ras_affine(img) -> np.ndarray:
    """A SimpleITK image's voxel (x, y, z) -> world RAS+ affine, computed here from its LPS geometry."""
    aff = np.eye(4)
    aff[:3, :3] = _LPS_RAS @ np.reshape(img.GetDirection(), (3, 3)) @ np.diag(img.GetSpacing())
    aff[:3, 3] = _LPS_RAS @ np.asarray(img.GetOrigin())
    return aff


def _itk_image(vol_zyx: np.ndarray, direction, spacing=(0.8, 0.7, 2.5), origin=(-10.0, -20.0, 5.0)):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(vol_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)  # LPS
    img.SetDirection([float(v) for v in np.asarray(direction, float).ravel()])
    return img


def _mark_itk(vol_zyx: np.ndarray, img) -> None:
    """ARS/PLI markers at the corners of ``vol_zyx`` (ITK (z, y, x) array of ``img``'s geometry)."""
    ars, pli = _corners(img.GetSize(), _itk_ras_affine(img))  # ITK (x, y, z) indices
    vol_zyx[ars[::-1]], vol_zyx[pli[::-1]] = ARS, PLI


# ITK direction matrices (columns: LPS direction of index x, y, z), all right-handed like DICOM stacks
ITK_DIRECTIONS = {
    "LPS axial": np.eye(3),
    "RAS axial": np.diag([-1.0, -1.0, 1.0]),
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),  # x -> L, y -> I, slices -> P
    "sagittal": np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]]),  # x -> P, y -> I, slices -> R
}


def _write_dicom_series(folder: Path, vol_zyx: np.ndarray, direction=np.eye(3)):
    """One DICOM file per ITK z-slice, with the position and orientation of ``_itk_image``'s geometry."""
    import SimpleITK as sitk

    folder.mkdir()
    ref = _itk_image(vol_zyx, direction)
    d = np.asarray(direction, float)
    iop = "\\".join(f"{v:g}" for v in (*d[:, 0], *d[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for z in range(vol_zyx.shape[0]):
        s = sitk.GetImageFromArray(vol_zyx[z])
        s.SetSpacing(ref.GetSpacing()[:2])
        pos = "\\".join(f"{c:g}" for c in ref.TransformIndexToPhysicalPoint((0, 0, z)))
        for key, value in {"0008|0060": "CT", "0020|000d": f"{uid}.1", "0020|000e": f"{uid}.2",
                           "0008|0018": f"{uid}.3.{z}", "0020|0032": pos, "0020|0037": iop,
                           "0020|0013": str(z + 1), "0018|0050": f"{ref.GetSpacing()[2]:g}"}.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(s)
    return ref


@pytest.mark.parametrize("orient", ["LPS axial", "RAS axial", "coronal"])
def test_dicom_folder(make_napari_viewer, tmp_path, orient):
    import SimpleITK as sitk

    vol = (np.arange(3 * 5 * 4).reshape(3, 5, 4) * 7).astype(np.int16)  # (z, y, x) as ITK stores it
    ref = _itk_image(vol, ITK_DIRECTIONS[orient])
    _mark_itk(vol, ref)
    _write_dicom_series(tmp_path / "ct_series", vol, ITK_DIRECTIONS[orient])
    assert get_reader(str(tmp_path / "ct_series")) is not None
    # the file as GDCM reads it, in ITK (x, y, z) voxel order, and its affine computed here
    series = sitk.ImageSeriesReader()
    series.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "ct_series")))
    stored = series.Execute()
    np.testing.assert_allclose(stored.GetDirection(), ref.GetDirection(), atol=1e-6)  # the series is as meant
    file_vol = sitk.GetArrayFromImage(stored).transpose(2, 1, 0)
    file_aff = _itk_ras_affine(stored)

    viewer = make_napari_viewer()
    (layer,) = _open(viewer, tmp_path / "ct_series")
    meta = layer.metadata["seg_explain"]
    assert meta["format"] == "dicom"
    assert tuple(layer.axis_labels) == AXIAL_LABELS
    _check_display(layer.data, layer.scale, layer.translate, meta, file_vol, file_aff, layer.data_to_world)
    if orient == "LPS axial":
        # the usual CT: ITK x runs R->L and y A->P already, so the layer IS the DICOM pixel arrays, and
        # napari's millimetres are DICOM's LPS (z, y, x)
        assert meta["file_orientation"] == ["L", "P", "S"]
        assert meta["to_file"] == [[1, 1], [0, 1], [2, 1]]  # a transpose back to ITK (x, y, z), no flip
        np.testing.assert_array_equal(layer.data, vol)
        np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.8))
        np.testing.assert_allclose(layer.translate, (5.0, -20.0, -10.0))
    elif orient == "RAS axial":
        np.testing.assert_array_equal(layer.data, vol[:, ::-1, ::-1])
        np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.8))
    else:  # coronal stack: DICOM rows run superior -> inferior; shown axial all the same
        assert layer.data.shape == (5, 3, 4)
        np.testing.assert_allclose(layer.scale, (0.7, 2.5, 0.8))
    _write_back(tmp_path, layer.data, {"metadata": layer.metadata}, file_vol, file_aff)


def test_reader_declines_what_it_cannot_handle_and_raises_on_claimed_failures(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "plain_folder").mkdir()
    (tmp_path / "plain_folder" / "a.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "plain_folder")) is None
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "x.nii")]) is None
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti at all")
    reader = get_reader(str(broken))
    assert reader is not None
    with pytest.raises(ImageReadError, match="broken.nii.gz"):
        reader(str(broken))
    assert broken.read_bytes() == b"not a nifti at all"  # never touched


def test_viewer_reports_a_broken_claimed_file(make_napari_viewer, tmp_path):
    broken = tmp_path / "broken.nii"
    broken.write_bytes(b"garbage")
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:  # napari wraps it in ReaderPluginError
        _open(viewer, broken)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, ImageReadError) for e in chain)
    assert len(viewer.layers) == 0


def test_oblique_affine_warns_and_writes_back_true_affine(make_napari_viewer, tmp_path):
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 1.2, 2.0])
    aff[:3, 3] = (3.0, -4.0, 5.0)
    vol = _volume(seed=5)
    path = _nifti(tmp_path / "oblique.nii.gz", vol, aff)
    viewer = make_napari_viewer()
    with pytest.warns(ObliqueAffineWarning, match="axis-aligned"):
        (layer,) = _open(viewer, path)
    meta = layer.metadata["seg_explain"]
    assert meta["oblique"] is True
    np.testing.assert_allclose(meta["file_affine"], aff)
    assert meta["file_orientation"] == ["R", "A", "S"] and meta["orientation"] == DISPLAY
    assert meta["convention"].startswith("radiological")
    # shown along the nearest anatomical axes (like a RAS file), the display affine still oblique
    np.testing.assert_array_equal(layer.data, _ras_layer(vol))
    disp = np.asarray(meta["affine"])
    np.testing.assert_allclose(disp[:3, :3] @ [1, 0, 0] / 1.2, rot @ [0, -1, 0], atol=1e-12)  # rows: -j
    np.testing.assert_allclose(disp @ (*layer_to_file_index((0, 0, 0), meta), 1), aff @ (5, 4, 0, 1))
    np.testing.assert_allclose(layer.scale, (2.0, 1.2, 1.2))
    out = tmp_path / "oblique_out.nii.gz"
    assert write_layer(str(out), layer.data, {"metadata": layer.metadata}) == [str(out)]
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.dataobj), vol)


def test_writer_round_trip_through_viewer(make_napari_viewer, tmp_path):
    vol = _volume(np.float32, seed=6)
    path = _nifti(tmp_path / "map_source.nii.gz", vol)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, path)
    before = layer.data.copy()
    out = tmp_path / "saved.nii.gz"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert [Path(p) for p in written] == [out]
    back = nib.load(str(out))
    np.testing.assert_array_equal(back.affine, RAS_AFFINE)  # the file's affine, not the display one
    assert back.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(back.dataobj), vol)  # file voxel order again
    np.testing.assert_array_equal(layer.data, before)  # the user's layer is unchanged
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_writer_labels_layer_and_missing_extension(make_napari_viewer, tmp_path):
    mask = (_volume(seed=7) > 500).astype(np.uint8)
    path = _nifti(tmp_path / "mask.nii.gz", mask)
    viewer = make_napari_viewer()
    (labels,) = _open(viewer, path)
    assert _kind(labels) == "labels"
    labels.data[0, 0, 0] = 2  # the user painted
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(tmp_path / "edited_mask"), selected=True, plugin=PLUGIN)
    assert [Path(p).name for p in written] == ["edited_mask.nii.gz"]
    back = np.asarray(nib.load(written[0]).dataobj)
    expected = mask.copy()
    # layer (slice 0, top row, left column) = inferior, most anterior, rightmost voxel of the RAS file
    expected[-1, -1, 0] = 2
    np.testing.assert_array_equal(back, expected)
    np.testing.assert_array_equal(nib.load(written[0]).affine, RAS_AFFINE)


def test_writer_without_metadata_uses_scale_and_translate(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = tmp_path / "plain.nii"
    write_layer(str(out), data, {"scale": (2.0, 0.5), "translate": (10.0, -3.0), "metadata": {}})
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine[:2, :2], np.diag([2.0, 0.5]))
    np.testing.assert_allclose(back.affine[:2, 3], (10.0, -3.0))
    with pytest.raises(UserError, match="RGB"):
        write_layer(str(out), np.zeros((3, 4, 3), np.uint8), {"rgb": True, "name": "photo"})
    with pytest.raises(UserError, match="shape"):
        meta = {"affine": PLS_AFFINE.tolist(), "spatial_shape": [6, 5, 4], "axis_order": [2, 0, 1]}
        write_layer(str(out), np.zeros((6, 5)), {"metadata": {"seg_explain": meta}})


@pytest.mark.parametrize("key,kind,shape", [
    ("sample_scan", "image", (107, 128, 104)),
    ("sample_label", "labels", (107, 128, 104)),
    ("sample_slice", "image", (128, 104)),
])
def test_samples_open(make_napari_viewer, key, kind, shape):
    viewer = make_napari_viewer()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObliqueAffineWarning)
        viewer.open_sample(PLUGIN, key)
    (layer,) = viewer.layers
    assert _kind(layer) == kind and layer.data.shape == shape
    meta = layer.metadata["seg_explain"]
    assert META_KEYS <= meta.keys()
    if key != "sample_label":
        assert Path(meta["model"]).name == "mni152_wm_unet.yaml"
    if key != "sample_slice":
        assert meta["convention"].startswith("radiological")
        assert meta["orientation"] == DISPLAY and meta["file_orientation"] == DISPLAY  # stored P, L, S
        assert meta["to_file"] is None and meta["file_affine"] == meta["affine"]
        assert tuple(layer.axis_labels) == AXIAL_LABELS
        np.testing.assert_allclose(layer.scale, (1.5, 1.5, 1.5))
    else:
        assert meta["to_file"] is None and meta["axis_order"] == [0, 1]


def test_read_layers_accepts_a_list(tmp_path):
    a = _nifti(tmp_path / "a.nii", _volume(seed=8))
    b = _nifti(tmp_path / "b.nii", _volume(seed=9))
    assert [kw["name"] for _, kw, _ in read_layers([a, b])] == ["a", "b"]


@pytest.mark.parametrize("orient", list(ITK_DIRECTIONS))
@pytest.mark.parametrize("ext", ["nrrd", "nhdr", "mha", "mhd"])
def test_itk_volumes_open_with_geometry_and_write_back(tmp_path, ext, orient):
    import SimpleITK as sitk

    vol = (np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4) * 3) % 997  # ITK (z, y, x)
    img = _itk_image(vol, ITK_DIRECTIONS[orient], origin=(1.0, 2.0, 3.0))
    _mark_itk(vol, img)
    img = _itk_image(vol, ITK_DIRECTIONS[orient], origin=(1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / f"vol.{ext}"))
    file_vol, file_aff = vol.transpose(2, 1, 0), _itk_ras_affine(img)  # the file: ITK (x, y, z) order
    ((data, kwargs, kind),) = read_layers(tmp_path / f"vol.{ext}")
    assert kind == "image"
    assert kwargs["axis_labels"] == AXIAL_LABELS and kwargs["units"] == ("mm",) * 3
    meta = kwargs["metadata"]["seg_explain"]
    _check_display(data, kwargs["scale"], kwargs["translate"], meta, file_vol, file_aff)
    if orient == "LPS axial":  # ITK's default geometry is already R->L, A->P: the layer is the ITK array
        np.testing.assert_array_equal(data, vol)
        assert kwargs["scale"] == (2.5, 0.7, 0.8)
        assert kwargs["translate"] == (3.0, 2.0, 1.0)  # mm towards S, P, L: ITK's LPS origin (z, y, x)
    _write_back(tmp_path, data, kwargs, file_vol, file_aff)


@pytest.mark.parametrize("ext", ["jpg", "bmp", "tif"])
def test_other_pictures(tmp_path, ext):
    from PIL import Image as PILImage

    rng = np.random.default_rng(10)
    PILImage.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(tmp_path / f"c.{ext}")
    PILImage.fromarray(rng.integers(0, 256, (6, 7), dtype=np.uint8)).save(tmp_path / f"g.{ext}")
    ((c, ckw, _),) = read_layers(tmp_path / f"c.{ext}")
    ((g, gkw, _),) = read_layers(tmp_path / f"g.{ext}")
    assert c.shape == (6, 7, 3) and ckw["rgb"] is True
    assert g.shape == (6, 7) and gkw["rgb"] is False
