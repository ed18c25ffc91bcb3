"""Contrast Shapley values against models whose answer is known: channels with known weights."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from napari_seg_explain.cli import main
from napari_seg_explain.core.explainers.shapley import ShapleyConfig, explain_shapley, shapley_weights
from napari_seg_explain.core.models import SegmentationModel


class SoftLinear(nn.Module):
    """Class-1 probability = sum_c w_c x_c (the card reads the output as probabilities: no activation)."""

    def __init__(self, weights):
        super().__init__()
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        p = (x * self.w).sum(dim=1, keepdim=True)
        return torch.cat([1 - p, p], dim=1)


def _prob_model(weights):
    from napari_seg_explain.core.modelcard import ModelCard

    return SegmentationModel(SoftLinear(weights), ModelCard(name="linear", output_activation="none"), device="cpu")


def test_weights_sum_to_the_grand_coalition():
    w = shapley_weights(3)
    v = np.random.default_rng(0).uniform(size=8)
    assert (w @ v).sum() == pytest.approx(v[-1] - v[0])


def test_linear_model_gives_analytic_values_and_an_ignored_channel_exactly_zero():
    """p = sum w_c x_c on an image of ones, zero baseline: the soft Dice against the full prediction is not linear in
    the channels, but a channel with weight 0 gets exactly 0, the order follows the weights, efficiency holds."""
    model = _prob_model([0.5, 0.0, 0.3, 0.2])
    img = np.ones((4, 16, 16), np.float32)
    expl = explain_shapley(model, img, None, 1, config=ShapleyConfig(metric="soft-dice"))
    phi = np.array(expl.stats["shapley"])
    assert phi[1] == 0.0
    assert abs(expl.stats["efficiency_error"]) < 1e-6
    assert phi[0] > phi[2] > phi[3] > 0 and expl.stats["ranking"] == [0, 2, 3, 1]
    assert expl.stats["forward_passes"] == 1 + 16


def test_additive_value_recovers_the_weights_exactly():
    """For a value additive in the channels (v(S) = sum of the members' contributions), the exact Shapley values are
    the contributions themselves."""
    w = shapley_weights(3)
    contrib = np.array([0.2, 0.0, 0.5])
    v = np.array([sum(contrib[i] for i in range(3) if (m >> i) & 1) for m in range(8)])
    np.testing.assert_allclose(w @ v, contrib, atol=1e-12)


def test_cli_json_form_and_clinician_agreement(tmp_path, capsys):
    """seg-explain shapley IMAGE --model MODEL -o OUT.json: {contrasts, shapley, ranking} + the metadata."""
    net = SoftLinear([0.1, 0.6, 0.0])
    scripted = torch.jit.script(net)
    scripted.save(str(tmp_path / "lin.pt"))
    (tmp_path / "lin.yaml").write_text("name: lin\nin_channels: 3\nclasses: [background, lesion]\n"
                                       "output_activation: none\n")
    # a 2-D image with 3 contrasts (4-D NIfTI: last axis = contrast); not constant (refused: nothing to explain)
    vol = np.repeat(np.linspace(0.9, 1.1, 16, dtype=np.float32)[:, None, None], 16, axis=1).repeat(3, axis=2)
    nib.save(nib.Nifti1Image(vol[:, :, None, :], np.eye(4)), tmp_path / "case.nii.gz")
    out = tmp_path / "shap.json"
    code = main(["--quiet", "shapley", str(tmp_path / "case.nii.gz"), "--model", str(tmp_path / "lin.pt"),
                 "--slice", "0", "--metric", "soft-dice", "--ranking", "1,0,2", "--device", "cpu", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rec = json.loads(out.read_text())
    assert rec["ranking"] == [1, 0, 2] and len(rec["shapley"]) == 3 and rec["shapley"][2] == 0
    assert rec["contrasts"] == ["0", "1", "2"]
    assert rec["explanation"]["stats"]["kendall_tau"] == 1.0 and rec["explanation"]["stats"]["top1_match"]


def test_across_models_mean_spread_and_rank_variance(tmp_path, capsys):
    """Two 'folds' that agree on the top contrast and swap the other two: mean, spread and rank variance."""
    for name, w in (("fold0", [0.1, 0.6, 0.0]), ("fold1", [0.0, 0.5, 0.2])):
        torch.jit.script(SoftLinear(w)).save(str(tmp_path / f"{name}.pt"))
        (tmp_path / f"{name}.yaml").write_text("name: lin\nin_channels: 3\nclasses: [background, lesion]\n"
                                               "output_activation: none\n")
    vol = np.repeat(np.linspace(0.9, 1.1, 16, dtype=np.float32)[:, None, None], 16, axis=1).repeat(3, axis=2)
    nib.save(nib.Nifti1Image(vol[:, :, None, :], np.eye(4)), tmp_path / "case.nii.gz")  # not constant
    out = tmp_path / "folds.json"
    code = main(["--quiet", "shapley", str(tmp_path / "case.nii.gz"), "--model", str(tmp_path / "fold0.pt"),
                 "--models", str(tmp_path / "fold1.pt"), "--slice", "0", "--metric", "soft-dice", "--device", "cpu",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    agg = json.loads(out.read_text())["across_models"]
    assert agg["n_models"] == 2 and agg["ranking"][0] == 1
    assert agg["ranks_per_model"] == [[1, 0, 2], [2, 0, 1]]
    assert agg["rank_variance"] == [0.5, 0.0, 0.5] and agg["mean_rank"] == [1.5, 0.0, 1.5]
    assert all(s >= 0 for s in agg["shapley_std"]) and agg["shapley_std"][1] > 0
    code = main(["--quiet", "shapley", str(tmp_path / "case.nii.gz"), "--model", str(tmp_path / "fold0.pt"),
                 "--models", str(tmp_path / "fold1.pt"), "--slice", "0", "-o", str(tmp_path / "x.npy")])
    assert code == 2 and "-o OUT.json" in capsys.readouterr().err


def test_more_than_eight_contrasts_are_estimated_from_random_orders_with_a_standard_error():
    """Ten contrasts, two of them ignored: the sampled values keep efficiency exactly (each order's steps sum to
    v(all) - v(none)), the ignored contrasts get exactly 0, the heaviest contrast ranks first, a standard error per
    contrast is reported, and the cost is C + 1 passes per order."""
    weights = [0.2, 0.0, 0.15, 0.1, 0.05, 0.1, 0.0, 0.1, 0.1, 0.1]
    model = _prob_model(weights)
    img = np.ones((10, 8, 8), np.float32)
    expl = explain_shapley(model, img, None, 1, config=ShapleyConfig(metric="soft-dice", permutations=60))
    phi = np.array(expl.stats["shapley"])
    assert expl.stats["estimator"] == "60 random orders" and len(expl.stats["shapley_stderr"]) == 10
    assert phi[1] == 0 and phi[6] == 0 and abs(expl.stats["efficiency_error"]) < 1e-9
    assert expl.stats["ranking"][0] == 0 and expl.stats["forward_passes"] == 1 + 60 * 11


def test_contrasts_from_separate_files_give_the_same_values_named_by_file(tmp_path, capsys):
    torch.jit.script(SoftLinear([0.1, 0.6, 0.0])).save(str(tmp_path / "lin.pt"))
    (tmp_path / "lin.yaml").write_text("name: lin\nin_channels: 3\nclasses: [background, lesion]\n"
                                       "output_activation: none\n")
    rng = np.random.default_rng(0)
    vol = rng.uniform(0.5, 1.0, (16, 16, 1, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "case.nii.gz")
    names = ["sub-01_T1", "sub-01_T2", "sub-01_FLAIR"]
    for c, name in enumerate(names):
        nib.save(nib.Nifti1Image(vol[..., c], np.eye(4)), tmp_path / f"{name}.nii.gz")
    runs = {}
    for key, inputs in (("4d", [str(tmp_path / "case.nii.gz")]),
                        ("files", [str(tmp_path / f"{names[0]}.nii.gz"), "--contrasts",
                                   *(str(tmp_path / f"{n}.nii.gz") for n in names[1:])])):
        out = tmp_path / f"{key}.json"
        code = main(["--quiet", "shapley", *inputs, "--model", str(tmp_path / "lin.pt"), "--slice", "0",
                     "--metric", "soft-dice", "--device", "cpu", "-o", str(out)])
        assert code == 0, capsys.readouterr().err
        runs[key] = json.loads(out.read_text())
    np.testing.assert_allclose(runs["files"]["shapley"], runs["4d"]["shapley"], atol=1e-6)
    assert runs["files"]["contrasts"] == names
    nib.save(nib.Nifti1Image(vol[:8, :, :, 0], np.eye(4)), tmp_path / "small.nii.gz")
    code = main(["--quiet", "shapley", str(tmp_path / f"{names[0]}.nii.gz"), "--contrasts",
                 str(tmp_path / "small.nii.gz"), str(tmp_path / f"{names[2]}.nii.gz"), "--model",
                 str(tmp_path / "lin.pt"), "--slice", "0", "-o", str(tmp_path / "bad.json")])
    assert code == 2 and "voxel grid" in capsys.readouterr().err
