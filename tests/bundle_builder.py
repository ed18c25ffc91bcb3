"""A tiny MONAI bundle for tests: a small 3-D UNet briefly trained on the 3-D sample (white matter), saved as a
standard bundle folder (configs/inference.json, configs/metadata.json, models/model.pt) whose own inference
runs with ``monai.bundle`` (SupervisedEvaluator, Invertd, SaveImaged)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_seg_explain.core.sample import SAMPLE_LABEL_3D, SAMPLE_VOLUME_3D, sample_path

PIXDIM = [2.5, 2.5, 2.5]
ROI = [32, 32, 32]
NETWORK_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
               "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def preprocessing(keys: list[str]) -> dict[str, Any]:
    """The bundle's preprocessing (``keys`` [image] at inference; [image, label] for training)."""
    modes = ["bilinear", "nearest"][:len(keys)]
    return {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": keys},
        {"_target_": "EnsureChannelFirstd", "keys": keys},
        {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": keys, "pixdim": PIXDIM, "mode": modes},
        {"_target_": "ScaleIntensityd", "keys": "image"},
        {"_target_": "CropForegroundd", "keys": keys, "source_key": "image", "select_fn": "$lambda x: x > 0.2",
         "margin": 1},
        {"_target_": "EnsureTyped", "keys": keys},
    ]}


def inference_config() -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cpu')",
        "network_def": NETWORK_DEF,
        "network": "$@network_def.to(@device)",
        "preprocessing": preprocessing(["image"]),
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": ROI, "sw_batch_size": 4, "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "meta_key_postfix": "meta_dict", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "resample": False, "separate_folder": False},
        ]},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
             "load_dict": {"model": "@network"}},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "run": ["$@evaluator.run()"],
    }


METADATA = {
    "schema": ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
               "meta_schema_20220324.json"),
    "version": "0.1.0", "name": "tiny-wm-unet3d", "description": "test bundle: white matter on the 3-D sample",
    "monai_version": "1.6.1",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": 1, "spatial_shape": ROI,
                             "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                             "channel_def": {"0": "T1"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2, "spatial_shape": ROI,
                             "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                             "channel_def": {"0": "background", "1": "white matter"}}},
    },
}


def train(steps: int = 30, seed: int = 0) -> dict[str, Any]:
    """State dict of the UNet after ``steps`` Adam steps on the preprocessed sample (whole volume, padded)."""
    import torch
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss
    from monai.transforms import DivisiblePadd

    torch.manual_seed(seed)
    parser = ConfigParser({"network_def": NETWORK_DEF, "pre": preprocessing(["image", "label"])})
    net, pre = parser.get_parsed_content("network_def"), parser.get_parsed_content("pre")
    d = DivisiblePadd(["image", "label"], k=4)(pre({"image": str(sample_path(SAMPLE_VOLUME_3D)),
                                                    "label": str(sample_path(SAMPLE_LABEL_3D))}))
    x, y = d["image"].as_tensor()[None].float(), (d["label"].as_tensor()[None] > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    return net.state_dict()


def build_bundle(root: str | Path, steps: int = 30, seed: int = 0) -> Path:
    """Write the bundle into ``root`` and return it."""
    import torch

    root = Path(root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "configs" / "inference.json").write_text(json.dumps(inference_config(), indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA, indent=2))
    torch.save(train(steps, seed), root / "models" / "model.pt")
    return root


def run_bundle_inference(bundle: str | Path, image: str | Path, output_dir: str | Path) -> Path:
    """The bundle's own inference on one file (``monai.bundle`` config, evaluator run); the file it wrote."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle) / "configs" / "inference.json"))
    parser.read_meta(str(Path(bundle) / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(bundle), "datalist": [str(image)], "output_dir": str(output_dir)})
    parser.get_parsed_content("evaluator").run()  # SupervisedEvaluator (pytorch-ignite), CheckpointLoader
    written = sorted(Path(output_dir).glob("*_seg.nii*"))
    if len(written) != 1:
        raise RuntimeError(f"the bundle wrote {written} into {output_dir}")
    return written[0]
