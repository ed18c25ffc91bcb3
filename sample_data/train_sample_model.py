"""Train the napari-seg-explain sample model: a small 2-D MONAI UNet for white matter.

Trains ``monai.networks.nets.UNet`` on axial slices ``t1[:, :, z]`` of
``sample_data/mni152_t1.nii.gz`` to segment white matter (class 1) vs background
(class 0, everything else) from ``sample_data/mni152_wm_label.nii.gz``.

A contiguous slab of ~15 % of the brain slices is held out, plus a margin of 3 slices
on each side that is used neither for training nor for evaluation (the split is defined
by ``build_sample_data.heldout_split``). Only slices that contain brain are trained on.

Preprocessing contract (the project's model loader applies exactly this at inference):

1. the 2-D slice as float32, shape (C=1, H, W);
2. ``minmax`` normalisation per image and channel: ``x = (x - min) / (max - min)``
   (``x - min`` when ``max == min``);
3. fit ``pad``: centre pad with 0 (after normalisation) or centre crop each spatial axis
   to ``input_size`` = (128, 128); before = (target - size) // 2 for padding,
   start = (size - target) // 2 for cropping;
4. model, softmax over the 2 output channels, then undo the fit (crop/pad back to H, W).

Augmentation is applied to the raw slice BEFORE normalisation.

Writes ``sample_data/model/mni152_wm_unet.safetensors`` (UNet state_dict, float32),
``sample_data/model/mni152_wm_unet.yaml`` (model card) and
``sample_data/model/training_metrics.json``.

Run: ``python sample_data/train_sample_model.py`` (fixed seed, ~4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep sample_data/ free of __pycache__
from build_sample_data import heldout_split  # noqa: E402

SEED = 0
NUM_THREADS = 2
INPUT_SIZE = (128, 128)
ARCH_KWARGS: dict[str, object] = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 2,
}
ITERATIONS = 1500
BATCH_SIZE = 16
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-5

MODEL_DIR = HERE / "model"
WEIGHTS_NAME = "mni152_wm_unet.safetensors"
CARD_NAME = "mni152_wm_unet.yaml"
METRICS_NAME = "training_metrics.json"


# --------------------------------------------------------------------------- set-up
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; use deterministic torch kernels on 2 threads."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)


def load_volumes() -> tuple[np.ndarray, np.ndarray]:
    """Load the sample T1 (float32) and WM label (uint8) volumes, PLS voxel order."""
    t1 = np.asarray(nib.load(HERE / "mni152_t1.nii.gz").dataobj, dtype=np.float32)
    label = np.asarray(nib.load(HERE / "mni152_wm_label.nii.gz").dataobj, dtype=np.uint8)
    return t1, label


def build_model() -> torch.nn.Module:
    """The UNet described by ``ARCH_KWARGS``."""
    from monai.networks.nets import UNet

    return UNet(**ARCH_KWARGS)


# --------------------------------------------------------------- preprocessing contract
def minmax(x: np.ndarray) -> np.ndarray:
    """Per-image, per-channel min-max normalisation of a (C, H, W) array."""
    out = np.empty_like(x, dtype=np.float32)
    for c in range(x.shape[0]):
        lo, hi = float(x[c].min()), float(x[c].max())
        out[c] = (x[c] - lo) / (hi - lo) if hi > lo else x[c] - lo
    return out


def fit_to(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre pad (with 0) or centre crop the last two axes of ``x`` to ``size``."""
    for axis, target in zip((-2, -1), size):
        n = x.shape[axis]
        if n < target:
            before = (target - n) // 2
            pad = [(0, 0)] * x.ndim
            pad[axis] = (before, target - n - before)
            x = np.pad(x, pad, mode="constant", constant_values=0)
        elif n > target:
            start = (n - target) // 2
            x = np.take(x, np.arange(start, start + target), axis=axis)
    return x


def unfit(y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo :func:`fit_to`: centre crop/pad the last two axes of ``y`` back to ``shape``."""
    for axis, orig in zip((-2, -1), shape):
        n = y.shape[axis]
        if n > orig:  # was padded
            start = (n - orig) // 2
            y = np.take(y, np.arange(start, start + orig), axis=axis)
        elif n < orig:  # was cropped
            before = (orig - n) // 2
            pad = [(0, 0)] * y.ndim
            pad[axis] = (before, orig - n - before)
            y = np.pad(y, pad, mode="constant", constant_values=0)
    return y


def preprocess(slice_2d: np.ndarray) -> np.ndarray:
    """Contract steps 1-3 for one (H, W) slice: returns float32 (1, *INPUT_SIZE)."""
    x = slice_2d.astype(np.float32)[None]
    return fit_to(minmax(x), INPUT_SIZE).astype(np.float32)


@torch.no_grad()
def predict_proba(model: torch.nn.Module, slice_2d: np.ndarray) -> np.ndarray:
    """Softmax probabilities (2, H, W) for one raw slice, following the contract."""
    x = torch.from_numpy(preprocess(slice_2d))[None]
    prob = torch.softmax(model(x), dim=1)[0].numpy()
    return unfit(prob, slice_2d.shape)


# ------------------------------------------------------------------------ augmentation
def random_spatial(
    img: np.ndarray, lab: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Small random rotation (+-10 deg), scale (0.9-1.1), shift (+-6 px) and flips."""
    angle = np.deg2rad(rng.uniform(-10, 10))
    scale = rng.uniform(0.9, 1.1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
    centre = (np.array(img.shape) - 1) / 2.0
    shift = rng.uniform(-6, 6, size=2)
    offset = centre - rot @ centre + shift
    img = ndimage.affine_transform(img, rot, offset=offset, order=1, mode="constant", cval=0.0)
    lab = ndimage.affine_transform(lab, rot, offset=offset, order=0, mode="constant", cval=0)
    if rng.random() < 0.5:  # left-right
        img, lab = img[:, ::-1], lab[:, ::-1]
    if rng.random() < 0.2:  # anterior-posterior
        img, lab = img[::-1], lab[::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def random_intensity(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, smooth bias, scale/shift, gaussian noise and (sometimes) 8-bit quantisation."""
    hi = float(img.max()) or 1.0
    x = np.clip(img / hi, 0.0, None)
    x = x ** rng.uniform(0.7, 1.5)
    if rng.random() < 0.5:  # smooth linear bias field, +-10 %
        r, c = np.meshgrid(
            np.linspace(-1, 1, x.shape[0]), np.linspace(-1, 1, x.shape[1]), indexing="ij"
        )
        a, b = rng.uniform(-0.1, 0.1, size=2)
        x = x * (1.0 + a * r + b * c)
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.04), size=x.shape)
    if rng.random() < 0.3:  # as if read back from an 8-bit PNG
        lo, top = x.min(), x.max()
        x = np.round((x - lo) / (top - lo) * 255.0) / 255.0 * (top - lo) + lo
    x = x * rng.uniform(0.5, 2.0) * hi + rng.uniform(-0.2, 0.2) * hi
    return x.astype(np.float32)


def make_batch(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample, augment (before normalisation) and preprocess a training batch."""
    idx = rng.integers(0, len(images), size=batch_size)
    xs, ys = [], []
    for i in idx:
        img, lab = random_spatial(images[i], labels[i], rng)
        img = random_intensity(img, rng)
        xs.append(preprocess(img))
        ys.append(fit_to(lab[None].astype(np.int64), INPUT_SIZE))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


# ------------------------------------------------------------------------- train / eval
def train(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> list[float]:
    """Train with Dice+CE loss, AdamW and a one-cycle schedule; return the loss curve."""
    from monai.losses import DiceCELoss

    rng = np.random.default_rng(SEED)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=ITERATIONS)
    losses: list[float] = []
    model.train()
    for it in range(ITERATIONS):
        x, y = make_batch(images, labels, rng, BATCH_SIZE)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (it + 1) % 100 == 0:
            print(f"iter {it + 1:4d}  loss {np.mean(losses[-100:]):.4f}", flush=True)
    model.eval()
    return losses


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(pred, truth).sum() / denom)


def evaluate(
    model: torch.nn.Module, t1: np.ndarray, label: np.ndarray, zs: list[int]
) -> dict[str, object]:
    """Per-slice Dice of class 1 on ``zs``, its mean over slices with WM, and pooled Dice."""
    per_slice: dict[str, float] = {}
    inter = total = 0
    for z in zs:
        pred = predict_proba(model, t1[:, :, z]).argmax(axis=0) == 1
        truth = label[:, :, z] == 1
        inter += int(np.logical_and(pred, truth).sum())
        total += int(pred.sum() + truth.sum())
        if truth.any():
            per_slice[str(z)] = dice(pred, truth)
    return {
        "per_slice_dice": {z: round(d, 4) for z, d in per_slice.items()},
        "mean_dice": round(float(np.mean(list(per_slice.values()))), 4),
        "pooled_dice": round(2.0 * inter / total, 4) if total else 1.0,
    }


# ----------------------------------------------------------------------------- outputs
def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Save the float32 state_dict as safetensors."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    # a single metadata key: safetensors does not keep the order of several (byte-reproducible)
    save_file(state, str(path), metadata={"format": "pt"})


def flow_list(values: list[int] | list[str]) -> str:
    """YAML flow-style list."""
    return "[" + ", ".join(str(v) for v in values) + "]"


def training_range() -> list[int]:
    """The 0.5 and 99.5 percentiles of the training volume's intensities (the card's ``expects``)."""
    import nibabel as nib

    data = np.asarray(nib.load(HERE / "mni152_t1.nii.gz").dataobj, dtype=np.float32)
    return [int(round(float(v))) for v in np.percentile(data, [0.5, 99.5])]


def write_card(path: Path, split: dict[str, list[int]], metrics: dict[str, object]) -> None:
    """Write the model card (YAML) in the project's schema."""
    kw = ", ".join(
        f"{k}: {flow_list(v) if isinstance(v, list) else v}" for k, v in ARCH_KWARGS.items()
    )
    text = f"""name: mni152-wm-unet2d
description: 2-D UNet segmenting white matter on axial slices of the MNI ICBM152 2009a T1 template (sample model, not for clinical use)
weights: {WEIGHTS_NAME}
architecture:
  name: UNet
  kwargs: {{{kw}}}
spatial_dims: 2
in_channels: 1
classes: [background, white_matter]
output_activation: softmax
normalization: {{method: minmax}}
input_size: {flow_list(list(INPUT_SIZE))}
fit: pad
expects: {{modality: MR, intensity_range: {flow_list(training_range())}, spacing: [1.5, 1.5]}}
license: "Weights: Apache-2.0 (as the project). Trained on the MNI ICBM 2009a template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University; see sample_data/README.md"
training: {{script: sample_data/train_sample_model.py, seed: {SEED}, heldout_slices: {flow_list(split["heldout"])}, heldout_dice: {metrics["mean_dice"]}, heldout_dice_pooled: {metrics["pooled_dice"]}, excluded_margin_slices: {flow_list(split["margin"])}, n_train_slices: {len(split["train"])}, iterations: {ITERATIONS}, batch_size: {BATCH_SIZE}, loss: DiceCELoss, optimizer: AdamW, max_lr: {LEARNING_RATE}, data: sample_data/mni152_t1.nii.gz, labels: sample_data/mni152_wm_label.nii.gz}}
"""
    path.write_text(text)


def compact_json(record: dict[str, object]) -> str:
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(record, indent=2)
    def one_line(match: re.Match[str]) -> str:
        return "[" + re.sub(r"\s+", " ", match.group(1)) + "]"

    return re.sub(r"\[\s*([-0-9.,\s]+?)\s*\]", one_line, text) + "\n"


def main() -> None:
    """Train, evaluate on the held-out slab and write weights, card and metrics."""
    import monai

    seed_everything(SEED)
    t1, label = load_volumes()
    split = heldout_split(t1, label)
    images = np.stack([t1[:, :, z] for z in split["train"]])
    labels = np.stack([label[:, :, z] for z in split["train"]])
    print(f"train slices: {len(split['train'])}, held out: {split['heldout']}", flush=True)

    model = build_model()
    start = time.perf_counter()
    losses = train(model, images, labels)
    wall = time.perf_counter() - start
    metrics = evaluate(model, t1, label, split["heldout"])
    print(f"held-out mean Dice {metrics['mean_dice']}, pooled {metrics['pooled_dice']}, "
          f"train {wall:.0f} s", flush=True)

    MODEL_DIR.mkdir(exist_ok=True)
    save_weights(model, MODEL_DIR / WEIGHTS_NAME)
    write_card(MODEL_DIR / CARD_NAME, split, metrics)
    record = {
        "heldout_slices": split["heldout"],
        "excluded_margin_slices": split["margin"],
        "train_slices": split["train"],
        **metrics,
        "train_wall_time_s": round(wall, 1),
        "iterations": ITERATIONS,
        "batch_size": BATCH_SIZE,
        "final_loss_mean_last_50": round(float(np.mean(losses[-50:])), 4),
        "loss_every_50": [
            round(float(np.mean(losses[i : i + 50])), 4) for i in range(0, len(losses), 50)
        ],
        "seed": SEED,
        "num_threads": NUM_THREADS,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "numpy_version": np.__version__,
    }
    (MODEL_DIR / METRICS_NAME).write_text(compact_json(record))


if __name__ == "__main__":
    main()
