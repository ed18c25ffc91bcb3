"""nnU-Net v2 model folders: our segmentation agrees with nnUNetPredictor's own, PdCR and MiSuRe run on the
preprocessed grid through the command line, and the maps come back onto the scan's grid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the testing install")

from napari_seg_explain.cli import main  # noqa: E402
from napari_seg_explain.core.errors import ModelLoadError, UserError  # noqa: E402
from napari_seg_explain.core.images import read_image  # noqa: E402
from napari_seg_explain.core.job_inputs import job_from_files  # noqa: E402
from napari_seg_explain.core.models import load_model  # noqa: E402
from napari_seg_explain.core.models.nnunet import NNUNetModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nnunet_builder import SCAN, build_nnunet_folder, second_contrast  # noqa: E402

BOX = ["25", "20", "15", "33", "30", "25"]  # Z0 Y0 X0 Z1 Y1 X1 on the display grid: white matter


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nnunet")
    ras = root / "scan_ras.nii.gz"  # a voxel order unlike the display order, as most scanners write
    nib.save(nib.as_closest_canonical(nib.load(SCAN)), ras)
    other = root / "other.nii.gz"  # a second scan for the pool: the sample shifted by 2 voxels
    img = nib.load(SCAN)
    nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 2, axis=0), img.affine), other)
    return {"3d": build_nnunet_folder(root / "m3d", "3d_fullres", folds=(0, 1), steps=30),
            "2d": build_nnunet_folder(root / "m2d", "2d", steps=30), "scan": ras, "other": other, "root": root}


def nnunet_prediction(folder: Path, scan: Path, out: Path, folds: tuple[int, ...], mirroring: bool) -> np.ndarray:
    """nnU-Net's own prediction of a file (its reader, predictor and writer), read back on the display grid."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    p = nnUNetPredictor(use_mirroring=mirroring, device=torch.device("cpu"), perform_everything_on_device=False,
                        allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(folder), folds)
    out.mkdir(exist_ok=True)
    p.predict_from_files([[str(scan)]], [str(out / "case")], save_probabilities=False, overwrite=True,
                         num_processes_preprocessing=1, num_processes_segmentation_export=1)
    return read_image(out / "case.nii.gz").data[0].astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.slow
@pytest.mark.parametrize("config,folds,mirroring", [("3d", (0, 1), True), ("3d", (1,), False), ("2d", (0,), True)])
def test_segmentation_agrees_with_nnunet_predictor(folders, tmp_path, config, folds, mirroring) -> None:
    theirs = nnunet_prediction(folders[config], folders["scan"], tmp_path / "pred", folds, mirroring)
    model = load_model(folders[config], device="cpu", folds=list(folds), mirroring=mirroring)
    assert isinstance(model, NNUNetModel)
    ours = model.segment(read_image(folders["scan"]))
    assert ours.shape == theirs.shape
    for k in (1,):
        assert 0.05 < (theirs == k).mean() < 0.5, "the trained model segments some white matter (a test that can fail)"
        assert dice(ours == k, theirs == k) >= 0.99
    truth = read_image(SCAN.parent / "mni152_wm_label_3mm.nii.gz").data[0] > 0
    assert dice(ours == 1, truth) > 0.6  # a rough but real white-matter model


def test_summary_names_format_folds_patch_spacing_channels_classes(folders) -> None:
    model = load_model(folders["3d"], device="cpu")
    s = model.summary()
    assert s["format"] == "nnU-Net v2" and s["configuration"] == "3d_fullres" and s["folds"] == ["0", "1"]
    assert s["patch size"] == [32, 32, 32] and s["spacing (mm)"] == [4.0, 4.0, 4.0]
    assert s["channels"] == ["T1"] and s["classes"] == ["background", "white_matter"]
    assert model.card.in_channels == 1 and model.card.output_activation == "softmax"


def test_grid_mapping_round_trip(folders) -> None:
    model = load_model(folders["3d"], device="cpu", folds=[0])
    image = read_image(folders["scan"])
    arr, space = model.prepare(image)
    assert arr.shape[1:] == space.shape_preprocessed and arr.dtype == np.float32
    box = np.zeros(image.spatial_shape, bool)
    box[20:32, 15:30, 14:26] = True
    back = space.display(space.model(box))
    lo, hi = np.argwhere(back).min(0), np.argwhere(back).max(0)  # resampled 3 mm -> 4 mm -> 3 mm: the border
    assert np.abs(lo - [20, 15, 14]).max() <= 2 and np.abs(hi - [31, 29, 25]).max() <= 2  # moves by < 1 voxel
    assert dice(back, box) > 0.8
    planted = space.display(np.ones(space.shape_preprocessed, np.float32))
    assert np.isnan(planted).any() and np.isfinite(planted).any()  # NaN outside nnU-Net's non-zero crop
    assert (image.data[0][np.isnan(planted)] == 0).all()  # cut off: only empty voxels outside the crop


@pytest.mark.slow
def test_pdcr_and_misure_through_the_cli(folders, tmp_path, capsys) -> None:
    out = tmp_path / "pdcr.nii.gz"
    assert main(["explain", "pdcr", str(folders["scan"]), "--model", str(folders["3d"]), "--folds", "0",
                 "--roi-box", *BOX, "--n", "3", "--screen", "1", "--pool", str(folders["other"]),
                 "--seed", "1", "-o", str(out)]) == 0
    meta = json.loads((tmp_path / "pdcr.json").read_text())
    pdcr = read_image(out).data[0]
    assert pdcr.shape == read_image(folders["scan"]).spatial_shape
    assert np.isfinite(pdcr).sum() > 1000 and np.isnan(pdcr).sum() > 1000  # the context box only
    assert np.nanmax(np.abs(pdcr)) > 0
    assert any("nnU-Net's preprocessed grid" in d for d in meta["deviations"])
    assert meta["geometry"]["model_space"].startswith("nnU-Net preprocessed grid (3d_fullres")
    roi = read_image(tmp_path / "pdcr_roi.nii.gz").data[0] > 0  # the RoI came back where it was drawn
    drawn = np.zeros_like(roi)
    drawn[20:30, 15:25, 25:33] = True
    assert dice(roi, drawn) > 0.8
    assert main(["explain", "misure", str(folders["scan"]), "--model", str(folders["3d"]), "--roi-box", *BOX,
                 "--mirroring", "-o", str(tmp_path / "misure.nii.gz")]) == 0
    mis = json.loads((tmp_path / "misure.json").read_text())
    assert mis["stats"]["dilations"] >= 0 and any("fold 0 only" in d for d in mis["deviations"])


def test_2d_configuration_explains_the_plane_of_the_roi(folders, tmp_path) -> None:
    out = tmp_path / "p2.nii.gz"
    assert main(["explain", "pdcr", str(SCAN), "--model", str(folders["2d"]), "--slice", "30",
                 "--roi-box", "25", "15", "35", "30", "--n", "2", "--screen", "1", "-o", str(out)]) == 0
    m = read_image(out).data[0]
    assert set(np.nonzero(np.isfinite(m))[2]) == {30}  # one axial plane, the one the RoI was drawn on


def test_ensemble_explanation_records_no_fold_or_mirror_deviation(folders) -> None:
    model = load_model(folders["3d"], device="cpu", ensemble=True)
    assert not any("fold" in d or "mirror" in d for d in model.explain_deviations)
    job = job_from_files(model, read_image(SCAN), "pdcr", roi_box=[int(b) for b in BOX])
    assert job.image.shape[1:] == (32, 32, 32)  # one patch of the plans' patch size


def test_clear_errors(folders, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="fold"):
        load_model(folders["3d"], device="cpu", folds=[3])
    with pytest.raises(ModelLoadError, match="neither an nnU-Net"):
        load_model(tmp_path, device="cpu")
    model = load_model(folders["2d"], device="cpu")
    with pytest.raises(UserError, match="spans"):  # a box over several planes of a 2-D configuration
        job_from_files(model, read_image(SCAN), "pdcr", roi_box=[int(b) for b in BOX])
    with pytest.raises(UserError, match="outside what the model sees"):
        job_from_files(load_model(folders["3d"], device="cpu", folds=[0]), read_image(SCAN), "pdcr",
                       roi_box=[0, 0, 0, 2, 2, 2])


def test_contrast_names_come_from_dataset_json(folders, tmp_path) -> None:
    folder = build_nnunet_folder(tmp_path / "mc", "3d_fullres", steps=10, channels=("T1", "T2"))
    t2 = second_contrast(SCAN, tmp_path / "scan_t2.nii.gz")
    out = tmp_path / "shap.json"
    assert main(["shapley", str(SCAN), "--contrasts", str(t2), "--model", str(folder), "--roi-box", *BOX,
                 "--metric", "soft-dice", "-o", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["contrasts"] == ["T1", "T2"] and sorted(res["ranking"]) == [0, 1]
    stats = res["explanation"]["stats"]
    assert abs(sum(res["shapley"]) - (stats["v_all"] - stats["v_none"])) < 1e-6
