"""3-D models, known answers by construction: a cue in the slices above the RoI supports it (negative ATE), a
suppressor below it works against it (positive), every other block is exactly 0, the RoI is NaN -- through the
command line, on a RAS file whose voxel order differs from the display order."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from torch import nn

from napari_seg_explain.cli import main
from napari_seg_explain.core.explainers.misure import MiSuReConfig, explain_misure
from napari_seg_explain.core.modelcard import ModelCard
from napari_seg_explain.core.models import SegmentationModel

N = 24
OBJ = (slice(8, 16), slice(8, 16), slice(8, 12))  # model (file, RAS) voxel order: i, j, k (k = superior)
CUE = (slice(8, 16), slice(8, 16), slice(16, 20))  # above the object
SUPP = (slice(8, 16), slice(8, 16), slice(0, 4))  # below it


class Cue3DModel(nn.Module):
    """logit = gain (x - 0.5) + w mean(cue) - w mean(suppressor); two classes."""

    def __init__(self, gain: float = 10.0, cue_w: float = 6.0, supp_w: float = 6.0):
        super().__init__()
        self.register_buffer("w", torch.tensor([gain, cue_w, supp_w]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cue = x[:, :, 8:16, 8:16, 16:20].mean(dim=(1, 2, 3, 4))[:, None, None, None, None]
        supp = x[:, :, 8:16, 8:16, 0:4].mean(dim=(1, 2, 3, 4))[:, None, None, None, None]
        logit = self.w[0] * (x[:, :1] - 0.5) + self.w[1] * cue - self.w[2] * supp
        return torch.cat([torch.zeros_like(logit), logit], dim=1)


def scene(object_value: float | None = None, context: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    vol = np.zeros((N, N, N), np.float32)
    ramp = np.linspace(0.3, 0.9, 8, dtype=np.float32)
    vol[OBJ] = ramp[:, None, None] if object_value is None else object_value
    vol[CUE] = vol[SUPP] = context
    label = np.zeros((N, N, N), np.uint8)
    label[OBJ] = 1
    return vol, label


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cue3d")
    vol, label = scene()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), d / "scan.nii.gz")  # RAS: display (P, L, S) flips i and j
    nib.save(nib.Nifti1Image(label, np.eye(4)), d / "label.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((N, N, N), np.float32), np.eye(4)), d / "other_volume.nii.gz")
    torch.jit.script(Cue3DModel()).save(str(d / "cue3d.pt"))
    (d / "cue3d.yaml").write_text(yaml.safe_dump({
        "name": "cue3d", "spatial_dims": 3, "in_channels": 1, "classes": ["background", "object"],
        "output_activation": "softmax", "input_size": [N, N, N], "orientation": "file"}))
    return d


def test_cli_pdcr_3d_known_answer_in_the_files_voxel_order(files, capsys):
    pool = files / "pool"
    pool.mkdir(exist_ok=True)
    (pool / "other_volume.nii.gz").write_bytes((files / "other_volume.nii.gz").read_bytes())
    out = files / "map.nii.gz"
    # display coordinates: slice (S) 8:12, row (P: 23 - j) 8:16, column (L: 23 - i) 8:16
    code = main(["--quiet", "explain", "pdcr", str(files / "scan.nii.gz"), "--model", str(files / "cue3d.pt"),
                 "--roi-box", "8", "8", "8", "12", "16", "16", "--label", str(files / "label.nii.gz"),
                 "--pool", str(pool), "--patch", "4", "--n", "3", "--screen", "2", "--device", "cpu", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    ate = np.asarray(nib.load(out).dataobj)  # written back in the file's (RAS) voxel order
    assert ate.shape == (N, N, N)
    assert np.isnan(ate[OBJ]).all(), "the RoI is not evaluated"
    assert (ate[CUE] < 0).all(), "the cue above the RoI supports it"
    assert (ate[SUPP] > 0).all(), "the suppressor below it works against it"
    rest = ate.copy()
    rest[CUE] = rest[SUPP] = 0
    assert np.nansum(np.abs(rest)) == 0, "every other block is exactly 0"
    meta = json.loads((files / "map.json").read_text())
    assert meta["geometry"]["model_orientation"] == "RAS" and meta["geometry"]["context_box"]
    assert json.loads(captured.out)["n_blocks"] == 6 * 6 * 6 - 2 * 2 * 1


def test_cli_roi_point_picks_the_segmented_structure(files, capsys):
    out = files / "point.npy"
    code = main(["--quiet", "pdcr", str(files / "scan.nii.gz"), "--model", str(files / "cue3d.pt"),
                 "--roi-point", "10", "12", "12", "--patch", "4", "--n", "2", "--screen", "1",
                 "--device", "cpu", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    meta = json.loads((files / "point.json").read_text())
    above = int((np.linspace(0.3, 0.9, 8) > 0.5).sum())
    assert meta["roi_pixels"] == above * 8 * 4, "the ramp's voxels above 0.5: the predicted component"
    assert any("explained volume itself" in w for w in meta["warnings"])
    code = main(["--quiet", "pdcr", str(files / "scan.nii.gz"), "--model", str(files / "cue3d.pt"),
                 "--roi-point", "2", "2", "2", "--device", "cpu", "-o", str(files / "none.npy")])
    assert code == 2 and "segments no pixel of class 1" in capsys.readouterr().err


def test_misure_3d_keeps_object_and_cue_and_drops_suppressor_and_the_rest():
    """Logit 40 (x - 0.5) + 12 mean(cue) - 12 mean(suppressor), cue 0.4 (+4.8), suppressor 0.2 (-2.4). The object
    (0.445: -2.2) is segmented only with nearly all of the cue (> 96 %); a shell beside it (0.435: -2.6) stays
    unsegmented only with nearly all of the suppressor (> 92 %). A sufficient region need not keep the suppressor:
    masking the shell away (MiSuRe multiplies every pixel by its mask) keeps the shell unsegmented more cheaply.
    So the minimal region keeps the object and the cue, and drops the suppressor, the shell and everything else;
    PdCR is the method that shows the suppressor (positive ATE, test above)."""
    vol = np.zeros((N, N, N), np.float32)
    vol[OBJ] = 0.445
    shell = (slice(0, 8), slice(8, 16), slice(8, 12))
    vol[shell] = 0.435
    vol[CUE], vol[SUPP] = 0.4, 0.2
    card = ModelCard(name="cue3d", spatial_dims=3)
    model = SegmentationModel(Cue3DModel(gain=40, cue_w=12, supp_w=12), card, device="cpu")
    expl = explain_misure(model, vol[None], None, 1, config=MiSuReConfig(kernel=3, param_size=24))
    sal = expl.map
    assert sal.shape == (N, N, N)
    assert (sal[OBJ] > 0).all() and (sal[CUE] > 0).all()
    assert (sal[SUPP] == 0).all(), "working against the object, the suppressor is not part of a sufficient region"
    sr = expl.maps["sufficient_region"].astype(bool)
    assert sr[CUE].all() and sr[SUPP].all(), "stage 1 had to grow over both to reproduce the prediction"
    kept = np.zeros_like(sal, bool)
    kept[OBJ] = kept[CUE] = True
    assert (sal[~ndimage.binary_dilation(kept)] == 0).sum() >= (~ndimage.binary_dilation(kept)).sum() - 32, \
        "nothing but a thin rim away from the object and the cue"
    assert expl.stats["dice_explained"] > 0.9 and expl.stats["dilations"] >= 1


def test_hierarchical_and_exact_screening_find_the_same_cue_and_suppressor():
    from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
    from napari_seg_explain.core.perturb.pools import pool_from_arrays
    from napari_seg_explain.core.rois import roi_from_bounds

    vol, label = scene()
    model = SegmentationModel(Cue3DModel(), ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    pool = pool_from_arrays(model, [np.zeros((1, 16, 16, 16), np.float32)])
    roi = roi_from_bounds((N, N, N), (8, 8, 8), (16, 16, 12))
    maps, passes = {}, {}
    for mode in ("exact", "hierarchical"):
        expl = explain_pdcr(model, vol[None], roi, 1, pool=pool, label=label,
                            config=PdCRConfig(patch=4, n=3, screen=2, screening=mode))
        maps[mode], passes[mode] = expl.map, expl.stats["forward_passes"]
        assert expl.stats["screening"] == mode
        assert (expl.map[CUE] < 0).all() and (expl.map[SUPP] > 0).all()
        rest = expl.map.copy()
        rest[CUE] = rest[SUPP] = 0
        assert np.nansum(np.abs(rest)) == 0
    assert passes["hierarchical"] < passes["exact"] / 2, passes
    np.testing.assert_array_equal(np.sign(np.nan_to_num(maps["exact"])), np.sign(np.nan_to_num(maps["hierarchical"])))
