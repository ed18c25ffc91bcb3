"""Build a tiny nnU-Net v2 trained-model folder from the shipped 3-D sample (tests and the docs' walk-through).

The folder has nnU-Net's layout and files (``dataset.json``, ``plans.json``, ``fold_K/checkpoint_final.pth``)
with a small plain-conv U-Net plan; the network is built by nnU-Net's own planner helpers and trained for a
few dozen steps on the sample scan preprocessed by nnU-Net's own preprocessor, so its output is a rough
white-matter segmentation (not a constant). ``python tests/nnunet_builder.py OUT [2d|3d_fullres]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
SCAN, LABEL = SAMPLE / "mni152_t1_3mm.nii.gz", SAMPLE / "mni152_wm_label_3mm.nii.gz"


def _configuration(name: str, n_channels: int = 1) -> dict:
    three = name.startswith("3d")
    nd = 3 if three else 2
    conv = "torch.nn.modules.conv.Conv3d" if three else "torch.nn.modules.conv.Conv2d"
    norm = "torch.nn.modules.instancenorm.InstanceNorm3d" if three else "torch.nn.modules.instancenorm.InstanceNorm2d"
    return {
        "data_identifier": f"nnUNetPlans_{name}", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": [32, 32, 32] if three else [48, 48], "median_image_size_in_voxels": [48, 39, 41],
        "spacing": [4.0, 4.0, 4.0] if three else [4.0, 4.0],
        "normalization_schemes": ["ZScoreNormalization"] * n_channels, "use_mask_for_norm": [True] * n_channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": conv,
                            "kernel_sizes": [[3] * nd] * 3, "strides": [[1] * nd, [2] * nd, [2] * nd],
                            "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                            "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }


def plans(configuration: str, n_channels: int = 1) -> dict:
    return {"dataset_name": "Dataset901_SampleWM", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
            "original_median_shape_after_transp": [54, 52, 64], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {configuration: _configuration(configuration, n_channels)},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {str(c): {
                "max": 962.0, "mean": 400.0, "median": 400.0, "min": 0.0, "percentile_00_5": 20.0,
                "percentile_99_5": 900.0, "std": 200.0} for c in range(n_channels)}}


DATASET = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "white_matter": 1}, "numTraining": 1,
           "file_ending": ".nii.gz"}


def second_contrast(path: str | Path, out: str | Path) -> Path:
    """A T2-like second contrast of the sample (inverted brain intensities, zero outside), co-registered."""
    import nibabel as nib

    img = nib.load(path)
    t1 = np.asarray(img.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(np.where(t1 > 0, 1000.0 - t1, 0).astype(np.float32), img.affine), out)
    return Path(out)


def _train(net, x: np.ndarray, y: np.ndarray, patch: list[int], steps: int, seed: int) -> None:
    """A few Adam steps of cross-entropy on random patches of (C, *S) x / (*S) y (3-D, or 2-D slices)."""
    import torch

    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(4):
            if len(patch) == 2:
                z = rng.integers(x.shape[1] // 4, 3 * x.shape[1] // 4)
                xi, yi = x[:, z], y[z]
            else:
                xi, yi = x, y
            lo = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(xi.shape[1:], patch)]
            sl = tuple(slice(a, a + p) for a, p in zip(lo, patch))
            xp, yp = xi[(slice(None), *sl)], yi[sl]
            pad = [(0, p - s) for s, p in zip(xp.shape[1:], patch)]
            xs.append(np.pad(xp, [(0, 0), *pad]))
            ys.append(np.pad(yp, pad))
        out = net(torch.from_numpy(np.stack(xs)))
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(np.stack(ys)).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def build_nnunet_folder(out: str | Path, configuration: str = "3d_fullres", folds: tuple[int, ...] = (0,),
                        steps: int = 30, seed: int = 0, channels: tuple[str, ...] = ("T1",)) -> Path:
    """Write ``out/`` as an nnU-Net v2 trained-model folder (one checkpoint per fold, trained ``steps`` steps).
    ``channels``: ("T1",) or ("T1", "T2"), the second from :func:`second_contrast`."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = plans(configuration, len(channels))
    dataset = DATASET | {"channel_names": {str(i): c for i, c in enumerate(channels)}}
    (out / "plans.json").write_text(json.dumps(p, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    pm = PlansManager(p)
    cm = pm.get_configuration(configuration)
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    files = [str(SCAN)] + ([str(second_contrast(SCAN, out / "t2_for_training.nii.gz"))] if len(channels) > 1 else [])
    img, props = SimpleITKIO().read_images(files)
    seg, _ = SimpleITKIO().read_seg(str(LABEL))
    pre = cm.preprocessor_class(verbose=False)
    x, y, _ = pre.run_case_npy(img, seg, props, pm, cm, dataset)
    y = np.clip(y[0], 0, 1).astype(np.int64)
    for k, fold in enumerate(folds):
        torch.manual_seed(seed + k)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, len(channels), 2, allow_init=True,
                                     deep_supervision=False)
        _train(net, x, y, list(cm.patch_size), steps, seed + k)
        ckpt = {"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": p, "configuration": configuration, "fold": fold, "dataset_json": dataset},
                "inference_allowed_mirroring_axes": tuple(range(len(cm.patch_size)))}
        (out / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(ckpt, out / f"fold_{fold}" / "checkpoint_final.pth")
    return out


if __name__ == "__main__":
    build_nnunet_folder(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "3d_fullres")
    print(f"wrote {sys.argv[1]}")
