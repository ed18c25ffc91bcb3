"""Baselines (Seg-Grad-CAM, RISE, occlusion) against real torch models whose answer is known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import known_models as km
from napari_seg_explain.cli import main
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.explainers.occlusion import OcclusionConfig, explain_occlusion, gaussian_blur
from napari_seg_explain.core.explainers.rise import RISEConfig, explain_rise
from napari_seg_explain.core.explainers.seg_gradcam import SegGradCAMConfig, explain_seg_gradcam
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.rois import roi_from_box
from napari_seg_explain.core.results import Explanation
from sample_paths import SAMPLE_DIR

VOL = str(SAMPLE_DIR / "mni152_t1.nii.gz")
MODEL = str(SAMPLE_DIR / "model" / "mni152_wm_unet.safetensors")
Z = 64


# ------------------------------------------------------------------------------------------------ Seg-Grad-CAM
class CamNet(nn.Module):
    """A conv encoder (64x64) -> average pooling -> a 1x1 bottleneck conv (8x8). Encoder channel 0 responds to
    anything above 0.3, channel 1 only to intensities above 0.6 (the cue, 0.9). logit = 10 (x - 0.5) + 8 *
    mean(bottleneck channel 1): the RoI logits depend on the feature map only through the cue's channel."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 2, 1)
        self.pool = nn.AvgPool2d(8)
        self.bottleneck = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.enc.weight.copy_(torch.ones(2, 1, 1, 1))
            self.enc.bias.copy_(torch.tensor([-0.3, -0.6]))
            self.bottleneck.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
            self.bottleneck.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bottleneck(self.pool(torch.relu(self.enc(x))))
        return 10 * (x - 0.5) + 8 * b[:, 1:2].mean(dim=(2, 3), keepdim=True)


def cam_scene() -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((1, km.H, km.W), np.float32)
    img[0][km.OBJECT] = 0.55  # segmented (logit > 0), but below the cue channel's 0.6
    img[0][km.CUE] = 0.9
    img[0][km.DISTRACTOR] = 0.4  # bright, seen by encoder channel 0, irrelevant to the logits
    return img, roi_from_box((km.H, km.W), *km.cue_scene()["box"])


def test_seg_gradcam_auto_bottleneck_puts_the_mass_on_the_cue():
    img, roi = cam_scene()
    model = SegmentationModel(CamNet(), device="cpu")
    expl = explain_seg_gradcam(model, img, roi, 1)
    cam = expl.map
    assert expl.stats["layer"] == "bottleneck" and expl.stats["layer_shape"] == [1, 2, 8, 8]
    assert cam.shape == (64, 64) and cam.max() == pytest.approx(1.0) and cam.min() >= 0
    near = np.zeros(cam.shape, bool)
    near[km.CUE] = True
    on_cue = cam[km.CUE].sum() / cam.sum()
    near_cue = cam[ndimage.binary_dilation(near, iterations=4)].sum() / cam.sum()
    assert on_cue > 0.5 and near_cue > 0.95, (on_cue, near_cue)  # bilinear upsampling of one 8x8 cell
    assert np.unravel_index(cam.argmax(), cam.shape)[0] in range(48, 56)
    assert cam[km.OBJECT].max() == 0 and cam[km.DISTRACTOR].max() == 0
    assert expl.stats["forward_passes"] == 1 and expl.deviations


def test_seg_gradcam_named_layer_and_input_and_no_roi():
    img, roi = cam_scene()
    model = SegmentationModel(CamNet(), device="cpu")
    enc = explain_seg_gradcam(model, img, roi, 1, config=SegGradCAMConfig(layer="enc")).map
    cue = np.zeros(enc.shape, bool)
    cue[km.CUE] = True
    assert (enc[cue] == 1).all() and (enc[~cue] == 0).all(), "full resolution: exactly the cue"
    whole = explain_seg_gradcam(model, img, None, 1)  # no RoI: the predicted pixels (object and the bright cue)
    assert whole.stats["n_target_pixels"] == 16 * 16 + 8 * 8 and whole.map[km.CUE].sum() / whole.map.sum() > 0.5
    lab = explain_seg_gradcam(model, img, None, 1, label=km.cue_scene()["label"])  # the labelled object only
    assert lab.stats["n_target_pixels"] == 16 * 16 and lab.params["target_region"] == "label"
    inp = explain_seg_gradcam(model, img, roi, 1, config=SegGradCAMConfig(layer="input"))
    assert inp.stats["layer"] == "input" and inp.map.shape == (64, 64)
    with pytest.raises(UserError, match="layer 'nope' did not run.*enc"):
        explain_seg_gradcam(model, img, roi, 1, config=SegGradCAMConfig(layer="nope"))
    with pytest.raises(UserError, match="no convolution layer"):
        explain_seg_gradcam(SegmentationModel(km.CueModel(), device="cpu"), km.cue_scene()["image"], roi, 1)


def test_seg_gradcam_onnx_model_is_a_clear_error(tmp_path):
    pytest.importorskip("onnxruntime")
    from napari_seg_explain.core.models import load_model

    path = tmp_path / "cam.onnx"
    torch.onnx.export(CamNet().eval(), (torch.zeros(1, 1, 64, 64),), str(path), dynamo=False, input_names=["x"])
    model = load_model(path, device="cpu")
    assert not model.supports_gradients
    img, roi = cam_scene()
    with pytest.raises(UserError, match="Seg-Grad-CAM needs gradients.*onnx"):
        explain_seg_gradcam(model, img, roi, 1)


# ------------------------------------------------------------------------------------------------ RISE
def _rest(shape, *regions, margin=8):
    """Pixels away (by ``margin``) from every region."""
    near = np.zeros(shape, bool)
    for r in regions:
        near[r] = True
    return ~ndimage.binary_dilation(near, iterations=margin)


def test_rise_concentrates_on_the_planted_cue_2d():
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    roi = roi_from_box((km.H, km.W), *sc["box"])
    expl = explain_rise(model, sc["image"], roi, 1, label=sc["label"], config=RISEConfig(seed=1))  # N = 1000
    sal = expl.map
    far = _rest(sal.shape, km.OBJECT, km.CUE, km.SUPPRESSOR)
    rest = sal[far].mean()
    blocks = [sal[i:i + 8, j:j + 8].mean() for i in range(0, 64, 8) for j in range(0, 64, 8) if far[i:i + 8, j:j + 8].all()]
    cue, supp = sal[km.CUE].mean(), sal[km.SUPPRESSOR].mean()
    # measured (seeds 0-2): cue 0.355-0.364, rest 0.317-0.321 (8x8 block means: std 0.005-0.008, max 0.339),
    # suppressor 0.263-0.274
    assert cue > rest + 0.025 and cue > max(blocks) + 0.01, (cue, rest, max(blocks))
    assert supp < rest - 0.025 and supp < min(blocks) - 0.01, (supp, rest, min(blocks))
    assert expl.stats["forward_passes"] == 1001 and expl.stats["metric"] == "dice_vs_label"
    same = explain_rise(model, sc["image"], roi, 1, label=sc["label"], config=RISEConfig(seed=1, batch_size=7)).map
    np.testing.assert_array_equal(same, sal)


def test_rise_concentrates_on_the_planted_cue_3d():
    from test_explain_3d import CUE, OBJ, SUPP, Cue3DModel, scene

    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.rois import roi_from_bounds

    vol, label = scene()
    model = SegmentationModel(Cue3DModel(), ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    roi = roi_from_bounds(vol.shape, (8, 8, 8), (16, 16, 12))
    expl = explain_rise(model, vol[None], roi, 1, label=label, config=RISEConfig(n_masks=1000, cell=8, seed=0))
    sal = expl.map
    rest = sal[_rest(sal.shape, OBJ, CUE, SUPP, margin=4)].mean()
    cue, supp = sal[CUE].mean(), sal[SUPP].mean()
    # measured (seeds 0, 1): cue 0.348 / 0.367, rest 0.280 / 0.297, suppressor 0.268 / 0.285 (8-voxel cells: with
    # 4-voxel cells the cue's margin shrinks to ~0.01 at N = 2000)
    assert cue > rest + 0.04 and supp < cue - 0.04, (cue, rest, supp)


# ------------------------------------------------------------------------------------------------ occlusion
@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_occlusion_finds_cue_and_suppressor_2d(fill):
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    roi = roi_from_box((km.H, km.W), *sc["box"])
    expl = explain_occlusion(model, sc["image"], roi, 1, label=sc["label"], config=OcclusionConfig(fill=fill))
    eff = expl.map
    assert np.isnan(eff[km.OBJECT]).all(), "the RoI is not evaluated"
    assert (eff[km.CUE] < -1).all() and eff[km.CUE].max() == np.nanmin(eff), "the cue supports the RoI the most"
    assert (eff[km.SUPPRESSOR] > 1).all(), "the suppressor works against it"
    rest = eff.copy()
    rest[km.CUE] = rest[km.SUPPRESSOR] = 0
    assert np.nansum(np.abs(rest)) == 0, "every block the model ignores is exactly 0"
    assert expl.stats["n_blocks"] == 64 - 4 and expl.stats["forward_passes"] == 61
    assert expl.stats["n_negative"] == 1 and expl.stats["n_positive"] == 1


def test_occlusion_finds_cue_and_suppressor_3d():
    from test_explain_3d import CUE, OBJ, SUPP, Cue3DModel, scene

    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.rois import roi_from_bounds

    vol, label = scene()
    model = SegmentationModel(Cue3DModel(), ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    roi = roi_from_bounds(vol.shape, (8, 8, 8), (16, 16, 12))
    expl = explain_occlusion(model, vol[None], roi, 1, label=label, config=OcclusionConfig(patch=4))
    eff = expl.map
    assert np.isnan(eff[OBJ]).all() and (eff[CUE] < 0).all() and (eff[SUPP] > 0).all()
    rest = eff.copy()
    rest[CUE] = rest[SUPP] = 0
    assert np.nansum(np.abs(rest)) == 0
    blur = explain_occlusion(model, vol[None], roi, 1, label=label, config=OcclusionConfig(patch=4, fill="blur")).map
    assert np.nanmin(blur) >= np.nanmin(eff), "a blurred 4-voxel block changes the hard Dice less than zeros"


def test_gaussian_blur_keeps_constants_and_mass_nd():
    for shape in ((1, 2, 9, 11), (1, 1, 6, 7, 8)):
        x = torch.full(shape, 3.0)
        torch.testing.assert_close(gaussian_blur(x, 2.0), x)
    delta = torch.zeros(1, 1, 31, 31)
    delta[0, 0, 15, 15] = 1
    torch.testing.assert_close(gaussian_blur(delta, 2.0).sum(), torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------ CLI
def _cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [
    ["rise", "--n-masks", "6", "--cell", "32", "--label", str(SAMPLE_DIR / "mni152_wm_label.nii.gz")],
    ["seg-gradcam"],
    ["explain", "seg_gradcam", "--layer", "input"],
    ["occlusion", "--patch", "48", "--fill", "blur"],
], ids=["rise", "seg-gradcam", "explain-seg_gradcam", "occlusion"])
def test_cli_short_forms_write_a_map(argv, tmp_path, capsys):
    out = tmp_path / "map.npy"
    method, *opts = argv if argv[0] != "explain" else [" ".join(argv[:2]), *argv[2:]]
    code, stdout, err = _cli(capsys, "--quiet", *method.split(), VOL, "--model", MODEL, "--slice", Z, "--roi-box",
                             32, 16, 64, 48, "--class", 1, "--seed", 0, "--device", "cpu", *opts, "-o", out)
    assert code == 0, err
    expl = Explanation.load(out)
    assert np.isfinite(expl.map).any() and (tmp_path / "map.json").exists()
    assert json.loads(stdout)["forward_passes"] >= 1


def test_cli_layer_list_prints_layers_and_exits_0(capsys):
    code, stdout, err = _cli(capsys, "seg-gradcam", VOL, "--model", MODEL, "--slice", Z, "--device", "cpu",
                             "--layer", "list")
    assert code == 0, err
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    auto = summary["auto"]
    assert auto == "model.1.submodule.1.submodule.1.submodule", "the bottleneck block (not the skip concatenation)"
    assert any(line.startswith(auto) and "<- auto" in line for line in lines[:-1])
    assert any("Conv2d" in line for line in lines) and len(summary["layers"]) > 5
    code, _, err = _cli(capsys, "seg-gradcam", VOL, "--model", MODEL, "--slice", Z)
    assert code == 2 and "-o/--output" in err


def test_cli_3d_forms(tmp_path, capsys):
    import nibabel as nib
    import yaml
    from test_explain_3d import CUE, N, Cue3DModel, scene

    vol, label = scene()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "scan.nii.gz")  # symmetric scene
    torch.jit.script(Cue3DModel()).save(str(tmp_path / "cue3d.pt"))
    (tmp_path / "cue3d.yaml").write_text(yaml.safe_dump({
        "name": "cue3d", "spatial_dims": 3, "in_channels": 1, "classes": ["background", "object"],
        "output_activation": "softmax", "input_size": [N, N, N], "orientation": "file"}))
    common = [tmp_path / "scan.nii.gz", "--model", tmp_path / "cue3d.pt", "--roi-box", 8, 8, 8, 12, 16, 16,
              "--device", "cpu"]
    for method, opts in (("occlusion", ["--patch", 4]), ("rise", ["--n-masks", 40, "--cell", 4]),
                         ("seg-gradcam", ["--layer", "input"])):
        out = tmp_path / f"{method}.nii.gz"
        code, _, err = _cli(capsys, "--quiet", method, *common, *opts, "-o", out)
        assert code == 0, (method, err)
        amap = np.asarray(nib.load(out).dataobj)
        assert amap.shape == (N, N, N)
        if method == "occlusion":
            assert (amap[CUE] < 0).all()
    code, _, err = _cli(capsys, "seg-gradcam", *common, "-o", tmp_path / "x.npy")
    assert code == 2 and "does not expose its layers" in err, "TorchScript hides its layers: a clear message"
