"""MONAI bundles: loaded from the folder, segmenting as the bundle's own inference does, mapped between the
display grid and the bundle's preprocessed grid, explained through the command line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_seg_explain.core.errors import ModelLoadError
from napari_seg_explain.core.images import read_image
from napari_seg_explain.core.models.bundle import BundleModel, is_bundle_dir, load_bundle
from napari_seg_explain.core.sample import SAMPLE_LABEL_3D, SAMPLE_VOLUME_3D, sample_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bundle_builder import build_bundle, run_bundle_inference  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "tiny_wm_bundle", steps=30)


@pytest.fixture(scope="module")
def model(bundle) -> BundleModel:
    return load_bundle(bundle, device="cpu")


@pytest.fixture(scope="module")
def ras_scan(tmp_path_factory) -> Path:
    """The sample stored in RAS voxel order: the file's order differs from the display order (P, L, S)."""
    path = tmp_path_factory.mktemp("ras") / "sample_ras.nii.gz"
    nib.save(nib.as_closest_canonical(nib.load(sample_path(SAMPLE_VOLUME_3D))), path)
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_bundle_folder_card_and_summary(bundle, model):
    assert is_bundle_dir(bundle) and not is_bundle_dir(bundle / "configs")
    card = model.card
    assert (card.name, card.spatial_dims, card.in_channels) == ("tiny-wm-unet3d", 3, 1)
    assert card.classes == ("background", "white matter")
    assert (card.output_activation, card.normalization, card.input_size) == ("softmax", "none", (32, 32, 32))
    assert model.format == "monai-bundle" and not model.net.training
    s = model.summary()
    assert s["spacing"] == [2.5, 2.5, 2.5] and s["patch size"] == [32, 32, 32] and s["channels"] == ["T1"]
    assert model._window_settings() == {"sw_batch_size": 4, "overlap": 0.25, "mode": "constant"}


@pytest.mark.parametrize("scan", ["sample", "ras"])
def test_segmentation_agrees_with_the_bundles_own_inference(bundle, model, ras_scan, tmp_path, scan):
    path = sample_path(SAMPLE_VOLUME_3D) if scan == "sample" else ras_scan
    written = run_bundle_inference(bundle, path, tmp_path / "eval")
    ref = read_image(written).data[0].astype(int)  # the bundle's own file, in display order
    image = read_image(path)
    ours = model.segment(image)
    assert ours.shape == ref.shape == image.spatial_shape
    for k in (1,):
        assert (ref == k).sum() > 500 and (ours == k).sum() > 500, "the class must be present for Dice to mean anything"
        d = dice(ours == k, ref == k)
        print(f"Dice class {k} ({scan}): {d:.4f}")
        assert d >= 0.99
    truth = read_image(sample_path(SAMPLE_LABEL_3D)).data[0] > 0
    if scan == "sample":
        assert 0.2 < dice(ours == 1, truth) < 0.99, "a briefly trained model: related to the truth, not equal to it"


def test_prepare_matches_the_bundles_preprocessing_of_the_file(bundle, model, ras_scan):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    ref = parser.get_parsed_content("preprocessing")({"image": str(ras_scan)})["image"]
    x, space = model.prepare(read_image(ras_scan))
    assert x.dtype == np.float32 and x.shape == tuple(ref.shape)
    np.testing.assert_allclose(x, ref.numpy(), atol=1e-5)
    assert space.model_shape == x.shape[1:] and "2.5x2.5x2.5" in space.codes


def _box(shape: tuple[int, ...]) -> np.ndarray:
    box = np.zeros(shape, bool)
    box[20:40, 15:35, 20:38] = True
    return box


@pytest.mark.parametrize("scan", ["sample", "ras"])
def test_space_box_goes_to_the_model_grid_and_back(model, ras_scan, scan):
    image = read_image(sample_path(SAMPLE_VOLUME_3D) if scan == "sample" else ras_scan)
    x, space = model.prepare(image)
    box = _box(image.spatial_shape)
    on_model = space.model(box)
    assert on_model.dtype == bool and on_model.shape == x.shape[1:]
    assert abs(on_model.sum() * 2.5 ** 3 / (box.sum() * 3.0 ** 3) - 1) < 0.15  # same volume in mm^3
    back = space.display(on_model)
    assert back.dtype == bool and back.shape == box.shape
    inner, outer = ndimage.binary_erosion(box), ndimage.binary_dilation(box)
    assert back[inner].all() and not back[~outer].any(), "only the box's one-voxel border may change"
    labels = space.display(on_model.astype(np.uint8) * 3)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 3}


def test_space_map_is_nan_outside_the_models_field(model):
    image = read_image(sample_path(SAMPLE_VOLUME_3D))
    x, space = model.prepare(image)
    back = space.display(np.full(x.shape[1:], 7.0, np.float32))
    assert back.shape == image.spatial_shape
    outside = np.isnan(back)
    assert outside.any() and (back[~outside] == 7.0).all()
    vol = image.data[0]
    assert (vol[outside] < 0.25 * vol.max()).all(), "the foreground crop removed only background"
    assert not outside[vol > 0.3 * vol.max()].any()
    # a model-grid gradient comes back monotonic along the inferior->superior (display slices) axis
    ramp = np.broadcast_to(np.arange(x.shape[3], dtype=np.float32), x.shape[1:]).copy()
    col = space.display(ramp)[32, 26]
    col = col[np.isfinite(col)]
    assert len(col) > 20 and (np.diff(col) >= 0).all()


def test_yaml_bundle_without_postprocessing_inverts_probabilities_as_bundles_do(bundle, tmp_path):
    import yaml

    bare = tmp_path / "bare"
    shutil.copytree(bundle, bare)
    cfg = json.loads((bare / "configs" / "inference.json").read_text())
    del cfg["postprocessing"], cfg["evaluator"], cfg["run"]
    (bare / "configs" / "inference.json").unlink()
    (bare / "configs" / "inference.yaml").write_text(yaml.safe_dump(cfg))
    assert is_bundle_dir(bare)
    written = run_bundle_inference(bundle, sample_path(SAMPLE_VOLUME_3D), tmp_path / "eval")
    ref = read_image(written).data[0].astype(int)
    ours = load_bundle(bare, "cpu").segment(read_image(sample_path(SAMPLE_VOLUME_3D)))
    assert (ref == 1).sum() > 500 and dice(ours == 1, ref == 1) >= 0.99


def test_torchscript_bundle_and_safe_loading(bundle, model, tmp_path):
    ts = tmp_path / "ts_bundle"
    shutil.copytree(bundle, ts)
    (ts / "models" / "model.pt").unlink()
    torch.jit.script(model.net.cpu()).save(str(ts / "models" / "model.ts"))
    image = read_image(sample_path(SAMPLE_VOLUME_3D))
    assert np.array_equal(load_bundle(ts, "cpu").segment(image), model.segment(image))
    # a state dict wrapped under "model" loads; a pickle with code does not
    wrapped = tmp_path / "wrapped"
    shutil.copytree(bundle, wrapped)
    torch.save({"model": torch.load(bundle / "models" / "model.pt", weights_only=True)},
               wrapped / "models" / "model.pt")
    assert load_bundle(wrapped, "cpu").sha256 != model.sha256
    torch.save({"model": ModelLoadError("code")}, wrapped / "models" / "model.pt")
    with pytest.raises(ModelLoadError):
        load_bundle(wrapped, "cpu")
    with pytest.raises(ModelLoadError):
        load_bundle(tmp_path, "cpu")


def test_cli_pdcr_and_misure_on_a_bundle(bundle, model, tmp_path, capsys):
    from napari_seg_explain.cli import main

    scan = sample_path(SAMPLE_VOLUME_3D)
    from napari_seg_explain.core.sample import pick_bounds

    (r0, c0, s0), (r1, c1, s1) = pick_bounds(model.segment(read_image(scan)) == 1, size=8, step=4)
    roi = [str(v) for v in (s0, r0, c0, s1, r1, c1)]  # display Z0 Y0 X0 Z1 Y1 X1 over predicted white matter
    pool = tmp_path / "pool"
    pool.mkdir()
    src = nib.load(scan)  # another "subject": the sample shifted by 4 voxels
    nib.save(nib.Nifti1Image(np.roll(np.asarray(src.dataobj), 4, axis=2), src.affine), pool / "other.nii.gz")
    out = tmp_path / "pdcr.nii.gz"
    code = main(["--quiet", "explain", "pdcr", str(scan), "--model", str(bundle), "--roi-box", *roi,
                 "--pool", str(pool), "--patch", "8", "--n", "2", "--screen", "1", "--screening", "exact",
                 "--device", "cpu", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    ate = read_image(out).data[0]
    assert ate.shape == read_image(scan).spatial_shape
    assert np.isfinite(ate).any()
    meta = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    assert meta["provenance"]["model"]["format"] == "monai-bundle"
    assert meta["geometry"]["model_space"].startswith("MONAI bundle preprocessed")
    assert meta["stats"]["n_blocks"] > 0
    out = tmp_path / "misure.nii.gz"
    code = main(["--quiet", "explain", "misure", str(scan), "--model", str(bundle), "--roi-box", *roi,
                 "--iterations", "5", "--device", "cpu", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert read_image(out).data[0].shape == read_image(scan).spatial_shape
