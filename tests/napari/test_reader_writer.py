"""Reader, writer and sample data through real napari viewers (pytest-qt, Xvfb), on files made here."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_seg_explain.core.errors import ImageReadError, UserError
from napari_seg_explain.napari.geometry import ObliqueAffineWarning
from napari_seg_explain.napari.reader import get_reader, read_layers
from napari_seg_explain.napari.writer import write_layer

PLUGIN = "napari-seg-explain"
META_KEYS = {"source", "format", "affine", "spatial_shape", "axis_order", "orientation", "oblique",
             "convention", "channel"}
# P, L, S voxel axes (like the sample), anisotropic spacing, non-zero origin
PLS_AFFINE = np.array([[0.0, -2.0, 0.0, 30.0],
                       [-1.5, 0.0, 0.0, 40.0],
                       [0.0, 0.0, 3.0, -50.0],
                       [0.0, 0.0, 0.0, 1.0]])
SHAPE = (6, 5, 4)  # (I, J, K) -> layer (K, I, J)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray = PLS_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _volume(dtype=np.int16, shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(dtype)


def _open(viewer, path):
    return viewer.open(str(path), plugin=PLUGIN)


def test_nifti_volume_opens_axial_with_geometry(make_napari_viewer, tmp_path):
    vol = _volume()
    path = _nifti(tmp_path / "scan.nii.gz", vol)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, path)
    assert layer._type_string == "image" and layer.name == "scan"
    assert layer.data.shape == (4, 6, 5)
    for z in range(4):
        np.testing.assert_array_equal(layer.data[z], vol[:, :, z])
    np.testing.assert_allclose(layer.scale, (3.0, 1.5, 2.0))
    # layer axes run S, P, L: translate = (+z0, -y0, -x0)
    np.testing.assert_allclose(layer.translate, (-50.0, -40.0, -30.0))
    assert tuple(layer.axis_labels) == ("I→S", "A→P", "R→L")
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert layer.colormap.name == "gray"
    lo, hi = np.percentile(vol, [0.5, 99.5])
    np.testing.assert_allclose(layer.contrast_limits, (lo, hi))
    meta = layer.metadata["seg_explain"]
    assert META_KEYS <= meta.keys()
    assert meta["source"] == str(path) and meta["format"] == "nifti"
    np.testing.assert_allclose(meta["affine"], PLS_AFFINE)
    assert meta["spatial_shape"] == [6, 5, 4] and meta["axis_order"] == [2, 0, 1]
    assert meta["orientation"] == ["P", "L", "S"] and meta["oblique"] is False and meta["channel"] is None
    assert meta["convention"].startswith("radiological")
    assert viewer.dims.ndisplay == 2 and viewer.dims.not_displayed == (0,)  # slider over the axial axis


def test_four_d_nifti_gives_one_layer_per_contrast(make_napari_viewer, tmp_path):
    data = np.stack([_volume(np.float32, seed=1), _volume(np.float32, seed=2) * 2], axis=-1)
    path = _nifti(tmp_path / "t1_t2.nii.gz", data)
    viewer = make_napari_viewer()
    layers = _open(viewer, path)
    assert [ly.name for ly in layers] == ["t1_t2 [0]", "t1_t2 [1]"]
    for c, layer in enumerate(layers):
        assert layer.data.shape == (4, 6, 5)
        np.testing.assert_array_equal(layer.data, np.moveaxis(data[..., c], -1, 0))
        np.testing.assert_allclose(layer.scale, layers[0].scale)
        np.testing.assert_allclose(layer.translate, layers[0].translate)
        assert layer.metadata["seg_explain"]["channel"] == str(c)


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
    assert g.metadata["seg_explain"]["axis_order"] == [0, 1]
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
    assert layer._type_string == kind
    np.testing.assert_allclose(layer.scale, (3.0, 1.5, 2.0))
    np.testing.assert_allclose(layer.data, np.moveaxis(data, -1, 0))


def _write_dicom_series(folder: Path, vol_zyx: np.ndarray) -> None:
    import SimpleITK as sitk

    folder.mkdir()
    img = sitk.GetImageFromArray(vol_zyx)
    img.SetSpacing((0.8, 0.7, 2.5))
    img.SetOrigin((-10.0, -20.0, 5.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for z in range(vol_zyx.shape[0]):
        s = img[:, :, z]
        pos = "\\".join(str(c) for c in img.TransformIndexToPhysicalPoint((0, 0, z)))
        for key, value in {"0008|0060": "CT", "0020|000d": f"{uid}.1", "0020|000e": f"{uid}.2",
                           "0008|0018": f"{uid}.3.{z}", "0020|0032": pos, "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(z + 1), "0018|0050": "2.5"}.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(s)


def test_dicom_folder(make_napari_viewer, tmp_path):
    vol = (np.arange(3 * 5 * 4).reshape(3, 5, 4) * 7).astype(np.int16)  # (z, y, x) as ITK stores it
    _write_dicom_series(tmp_path / "ct_series", vol)
    assert get_reader(str(tmp_path / "ct_series")) is not None
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, tmp_path / "ct_series")
    meta = layer.metadata["seg_explain"]
    assert meta["format"] == "dicom" and meta["spatial_shape"] == [4, 5, 3]
    # file order is ITK (x, y, z); the layer is (z, x, y): slice z is the DICOM pixel array transposed
    assert layer.data.shape == (3, 4, 5)
    np.testing.assert_array_equal(layer.data[1], vol[1].T)
    np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.7))
    assert meta["orientation"] == ["L", "P", "S"]


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
    np.testing.assert_allclose(meta["affine"], aff)
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
    np.testing.assert_allclose(back.affine, PLS_AFFINE)
    np.testing.assert_array_equal(np.asarray(back.dataobj), vol)  # file voxel order again
    np.testing.assert_array_equal(layer.data, before)  # the user's layer is unchanged
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_writer_labels_layer_and_missing_extension(make_napari_viewer, tmp_path):
    mask = (_volume(seed=7) > 500).astype(np.uint8)
    path = _nifti(tmp_path / "mask.nii.gz", mask)
    viewer = make_napari_viewer()
    (labels,) = _open(viewer, path)
    assert labels._type_string == "labels"
    labels.data[0, 0, 0] = 2  # the user painted
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(tmp_path / "edited_mask"), selected=True, plugin=PLUGIN)
    assert [Path(p).name for p in written] == ["edited_mask.nii.gz"]
    back = np.asarray(nib.load(written[0]).dataobj)
    expected = mask.copy()
    expected[0, 0, 0] = 2  # layer (k=0, i=0, j=0) is file (0, 0, 0)
    np.testing.assert_array_equal(back, expected)


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
    assert layer._type_string == kind and layer.data.shape == shape
    meta = layer.metadata["seg_explain"]
    assert META_KEYS <= meta.keys()
    if key != "sample_label":
        assert Path(meta["model"]).name == "mni152_wm_unet.yaml"
    if key == "sample_scan":
        assert meta["convention"].startswith("radiological")
        assert meta["orientation"] == ["P", "L", "S"]
        np.testing.assert_allclose(layer.scale, (1.5, 1.5, 1.5))


def test_read_layers_accepts_a_list(tmp_path):
    a = _nifti(tmp_path / "a.nii", _volume(seed=8))
    b = _nifti(tmp_path / "b.nii", _volume(seed=9))
    assert [kw["name"] for _, kw, _ in read_layers([a, b])] == ["a", "b"]


@pytest.mark.parametrize("ext", ["nrrd", "nhdr", "mha", "mhd"])
def test_itk_volumes_open_with_geometry_and_write_back(tmp_path, ext):
    import SimpleITK as sitk

    vol = np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4)  # ITK (z, y, x)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.8, 0.7, 2.5))
    img.SetOrigin((1.0, 2.0, 3.0))  # LPS
    sitk.WriteImage(img, str(tmp_path / f"vol.{ext}"))
    ((data, kwargs, kind),) = read_layers(tmp_path / f"vol.{ext}")
    assert kind == "image" and data.shape == (3, 4, 5)  # (z, x, y): file order is ITK (x, y, z)
    np.testing.assert_array_equal(data[1], vol[1].T)
    assert kwargs["scale"] == (2.5, 0.8, 0.7)
    assert kwargs["translate"] == (3.0, 1.0, 2.0)  # mm towards S, L, P: ITK's LPS origin
    out = tmp_path / "back.nii.gz"
    write_layer(str(out), data, kwargs)
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), vol.transpose(2, 1, 0))
    np.testing.assert_allclose(back.affine, kwargs["metadata"]["seg_explain"]["affine"])


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
