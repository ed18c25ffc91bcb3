"""Train the napari-seg-explain 3-D sample model: a small MONAI 3-D UNet for white matter.

1. Builds a coarser sample volume from the shipped 1.5 mm files (no network):
   ``sample_data/mni152_t1_3mm.nii.gz`` and ``sample_data/mni152_wm_label_3mm.nii.gz``, 3 mm
   isotropic, 64 x 52 x 54 voxels, same PLS voxel order. New voxel ``i`` covers old voxels
   ``2i`` and ``2i + 1`` on each axis: its centre lies at old voxel coordinate ``2i + 0.5``, so the
   affine is ``old_affine @ [[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1]]``.
   The 107 axial slices are padded with one empty slice (slices 104-106 are empty margin already).

   * T1: trilinear interpolation (order 1) at ``2i + 0.5``, which is exactly the mean of the
     2 x 2 x 2 block; stored as int16 like the 1.5 mm file.
   * Label: the white-matter fraction of the 2 x 2 x 2 block, thresholded at 0.5. Ties
     (exactly 4 of 8) are decided by the fraction in the 4 x 4 x 4 block around the same centre
     (and count as white matter if that is a tie too).

2. Trains ``monai.networks.nets.UNet(spatial_dims=3, ...)`` on random 32^3 patches with the
   project's preprocessing contract for 3-D models (``SegmentationModel._sliding_window``):

   * the WHOLE volume is min-max normalised first, ``x = (x - min) / (max - min)``;
   * then it is cut into windows of the card's ``input_size`` (32, 32, 32); at inference MONAI's
     sliding window runs with overlap 0.5 and Gaussian weighting, softmax over the 2 classes.

   Held out: a contiguous slab of 15 % of the brain's axial slices (the last voxel axis, S; 8 of
   52), plus a margin of 2 slices on each side used neither for training nor for evaluation. No
   training patch overlaps the slab or its margin, or reaches past the volume in z. With 54
   slices, 32-slice patches fit beside the slab only when the slab is near the top or the bottom
   of the brain, so the slab is the one with the most white matter among those that leave a
   training block of at least 34 slices (32-slice patches at 3 depths or more): slices 36-43
   (MNI z +37 to +58 mm, corona radiata / centrum semiovale), margin 34-35 and 44-45; the
   training block is slices 0-33; the 8 slices above the slab (46-53, the top of the brain) are
   too thin for a patch and are not used. (A central slab, as the 2-D model's, leaves 26 and 16
   slices: patches padded past the volume's edge, or thinner patches, gave a model that failed
   on the full windows the sliding window feeds it: held-out Dice 0.63-0.75.)

   Light in-plane augmentation: rotation about S +-15 degrees, zoom 0.9-1.25, flips of the two
   in-plane axes, gamma 0.8-1.25 on the normalised patch.

3. Evaluates the held-out Dice through the project's own loader, as a user would::

       model = load_model("sample_data/model/mni152_wm_unet3d.yaml", device="cpu")
       labels = model.segment(read_image("sample_data/mni152_t1_3mm.nii.gz"))

4. Writes ``sample_data/model/mni152_wm_unet3d.safetensors`` (float32 state_dict),
   ``sample_data/model/mni152_wm_unet3d.yaml`` (model card) and
   ``sample_data/model/training_metrics_3d.json``.

Run from the repository root: ``python sample_data/train_sample_model_3d.py``
(fixed seed, deterministic, 3-5 minutes on 2 CPU cores; two runs give byte-identical weights).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from nibabel import orientations as ornt  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep sample_data/ free of __pycache__
from build_sample_data import brain_slices, save_nifti  # noqa: E402
from train_sample_model import compact_json, dice, flow_list, save_weights, seed_everything  # noqa: E402

SEED = 0
NUM_THREADS = 2
FACTOR = 2  # 1.5 mm -> 3 mm
VOXEL_MM = 3.0
HELDOUT_FRACTION = 0.15
HELDOUT_MARGIN = 2
PATCH = (32, 32, 32)
MIN_Z_POSITIONS = 3  # 32-slice patches must fit at 3 depths or more
AUG_ROTATE_DEG = 15.0
AUG_ZOOM = (0.9, 1.25)  # output / input voxel size: > 1 magnifies
ARCH_KWARGS: dict[str, object] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32, 64],
    "strides": [2, 2, 2],
    "num_res_units": 1,
}
ITERATIONS = 1500
BATCH_SIZE = 8
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-5

T1_SRC = HERE / "mni152_t1.nii.gz"
LABEL_SRC = HERE / "mni152_wm_label.nii.gz"
T1_3MM = HERE / "mni152_t1_3mm.nii.gz"
LABEL_3MM = HERE / "mni152_wm_label_3mm.nii.gz"
MODEL_DIR = HERE / "model"
WEIGHTS_NAME = "mni152_wm_unet3d.safetensors"
CARD_NAME = "mni152_wm_unet3d.yaml"
METRICS_NAME = "training_metrics_3d.json"


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- set-up
# ------------------------------------------------------------------ 1. the 3 mm volume
def pad_even(x: np.ndarray) -> np.ndarray:
    """Zero-pad every axis at its end to an even length."""
    return np.pad(x, [(0, n % FACTOR) for n in x.shape], mode="constant")


def block_mean(x: np.ndarray, size: int = FACTOR) -> np.ndarray:
    """Mean over non-overlapping ``size``^3 blocks (shape divisible by ``size``)."""
    s = x.shape
    return x.reshape(s[0] // size, size, s[1] // size, size, s[2] // size, size).mean(axis=(1, 3, 5))


def wide_fraction(x: np.ndarray) -> np.ndarray:
    """Mean over the 4^3 block around each new voxel centre (old voxels ``2i - 1 .. 2i + 2``)."""
    xp = np.pad(x, 1, mode="constant")  # old voxel 2i - 1 is at 2i here
    win = np.lib.stride_tricks.sliding_window_view(xp, (4, 4, 4))[::2, ::2, ::2]
    return win.mean(axis=(-3, -2, -1))


def downsample_affine(affine: np.ndarray) -> np.ndarray:
    """New voxel ``i`` is centred at old voxel coordinate ``2i + 0.5``."""
    step = np.diag([float(FACTOR)] * 3 + [1.0])
    step[:3, 3] = (FACTOR - 1) / 2.0
    return affine @ step


def make_3mm() -> dict[str, object]:
    """Build (and check) the 3 mm T1 and label from the shipped 1.5 mm files; write them."""
    t1_img, lab_img = nib.load(T1_SRC), nib.load(LABEL_SRC)
    if not np.allclose(t1_img.affine, lab_img.affine):
        raise RuntimeError("the 1.5 mm T1 and label are not on the same grid")
    t1 = pad_even(np.asarray(t1_img.dataobj, dtype=np.float64))
    lab = pad_even(np.asarray(lab_img.dataobj, dtype=np.float64))

    t1_3 = block_mean(t1)
    # the same as scipy's order-1 interpolation at old coordinates 2i + 0.5 (grid mode)
    zoomed = ndimage.zoom(t1, 1.0 / FACTOR, order=1, grid_mode=True, mode="grid-constant")
    if zoomed.shape != t1_3.shape or not np.allclose(zoomed, t1_3, atol=1e-6):
        raise AssertionError("block mean differs from ndimage.zoom(order=1, grid_mode=True)")
    t1_i16 = np.round(t1_3).astype(np.int16)

    frac = block_mean(lab)
    wide = wide_fraction(lab)
    label = (frac > 0.5) | ((frac == 0.5) & (wide >= 0.5))
    label = label.astype(np.uint8)

    affine = downsample_affine(t1_img.affine)
    check_grid(t1_img.affine, affine, np.asarray(t1_img.dataobj), t1_i16)
    if ornt.aff2axcodes(affine) != ("P", "L", "S"):
        raise AssertionError(f"axcodes {ornt.aff2axcodes(affine)}")

    save_nifti(t1_i16, affine, T1_3MM, "MNI ICBM152 2009a sym T1, 3mm, PLS")
    save_nifti(label, affine, LABEL_3MM, "MNI152 2009a WM prob>0.5, 3mm, PLS")
    old_vol = float(np.asarray(lab_img.dataobj).sum()) * 1.5**3
    return {
        "shape": list(t1_i16.shape),
        "affine": np.round(affine, 4).tolist(),
        "wm_volume_ml_1p5mm": round(old_vol / 1000, 1),
        "wm_volume_ml_3mm": round(float(label.sum()) * VOXEL_MM**3 / 1000, 1),
        "label_ties": int((frac == 0.5).sum()),
    }


def check_grid(old_aff: np.ndarray, new_aff: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Each new voxel centre is the world mean of its 8 old voxel centres; values are their mean."""
    rng = np.random.default_rng(0)
    inner = np.array(old.shape) // FACTOR  # new voxels whose 8 old voxels are all inside the file
    picks = np.vstack([[0, 0, 0], inner - 1, rng.integers(0, inner, size=(16, 3))])
    offsets = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    for ijk in picks:
        olds = FACTOR * ijk + offsets
        centre = (old_aff @ np.c_[olds, np.ones(8)].T)[:3].mean(axis=1)
        if not np.allclose(new_aff @ np.r_[ijk, 1.0], np.r_[centre, 1.0], atol=1e-6):
            raise AssertionError(f"new voxel {ijk} is not centred on its old block")
        mean = old[tuple(olds.T)].astype(np.float64).mean()
        if abs(float(new[tuple(ijk)]) - mean) > 0.5:
            raise AssertionError(f"new voxel {ijk}: {new[tuple(ijk)]} is not the block mean {mean}")
    if not np.allclose(np.sqrt((new_aff[:3, :3] ** 2).sum(axis=0)), VOXEL_MM):
        raise AssertionError("new spacing is not 3 mm")


# ------------------------------------------------------------------- 2. split, patches
def training_blocks(nz: int, split: dict[str, list[int]]) -> list[tuple[int, int]]:
    """Contiguous z ranges ``[a, b)`` of the volume outside the held-out slab and its margin."""
    excluded = set(split["heldout"]) | set(split["margin"])
    blocks, start = [], None
    for z in range(nz + 1):
        inside = z < nz and z not in excluded
        if inside and start is None:
            start = z
        elif not inside and start is not None:
            blocks.append((start, z))
            start = None
    return blocks


def heldout_split_3d(t1: np.ndarray, label: np.ndarray) -> dict[str, list[int]]:
    """The held-out slab for 32^3 training patches.

    Like ``build_sample_data.heldout_split`` (a contiguous slab of 15 % of the brain slices with
    the most white matter, ``HELDOUT_MARGIN`` slices each side excluded), but only among the
    slabs that leave a training block thick enough for 32-slice patches at ``MIN_Z_POSITIONS``
    depths or more: a 54-slice volume has no such block on either side of a central slab.
    """
    brain = brain_slices(t1)
    n_held = max(1, int(round(HELDOUT_FRACTION * len(brain))))
    wm = label.reshape(-1, label.shape[2]).sum(axis=0).astype(np.int64)
    best: tuple[int, int] | None = None
    nz = t1.shape[2]

    def slab(start: int) -> dict[str, list[int]]:
        margin = list(range(start - HELDOUT_MARGIN, start)) + list(
            range(start + n_held, start + n_held + HELDOUT_MARGIN))
        return {"heldout": list(range(start, start + n_held)), "margin": [z for z in margin if 0 <= z < nz]}

    for start in (int(z) for z in brain[: len(brain) - n_held + 1]):
        thick = max(b - a for a, b in training_blocks(nz, slab(start)))
        if thick >= PATCH[2] + MIN_Z_POSITIONS - 1:
            score = int(wm[slab(start)["heldout"]].sum())
            if best is None or score > best[0]:
                best = (score, start)
    if best is None:
        raise ValueError("no held-out slab leaves room for 32-slice training patches")
    split = slab(best[1])
    blocks = training_blocks(nz, split)
    split["train"] = [z for a, b in blocks if b - a >= PATCH[2] for z in range(a, b)]
    split["unused"] = [z for a, b in blocks if b - a < PATCH[2] for z in range(a, b)]
    return split


def minmax(x: np.ndarray) -> np.ndarray:
    """Whole-volume min-max normalisation (the loader's ``minmax`` for a one-channel volume)."""
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo) if hi > lo else x - lo).astype(np.float32)


class PatchSampler:
    """Random 32^3 patches of the normalised volume, outside the held-out slab and its margin.

    Only training blocks at least 32 slices thick give patches, and patches never reach past the
    volume in z (zero padding past the volume's edge gave patches whose statistics the
    whole-volume windows at inference never have, and a model that failed on those windows). In
    plane, a shifted or rotated patch may take in a few voxels of empty background beyond the edge,
    where the volume is background anyway.
    """

    def __init__(self, vol: np.ndarray, lab: np.ndarray, split: dict[str, list[int]]) -> None:
        self.vol, self.lab = vol, lab
        excluded = set(split["heldout"]) | set(split["margin"])
        blocks = training_blocks(vol.shape[2], split)
        self.blocks = [(a, b) for a, b in blocks if b - a >= PATCH[2]]
        self.starts = [list(range(a, b - PATCH[2] + 1)) for a, b in self.blocks]
        self.weights = np.array([len(s) for s in self.starts], dtype=float)
        self.weights /= self.weights.sum()
        for starts in self.starts:  # the guarantee, checked
            for s in starts:
                if excluded & set(range(s, s + PATCH[2])):
                    raise AssertionError(f"patch z {s}..{s + PATCH[2] - 1} overlaps the held-out slab")

    def sample(self, rng: np.random.Generator, block: int) -> tuple[np.ndarray, np.ndarray]:
        """One augmented (1, 32, 32, depth) patch of ``block`` and its label.

        In-plane augmentation only (the z extent of a patch stays inside its block): rotation
        +-AUG_ROTATE_DEG about the S axis, zoom AUG_ZOOM (changes how much of a patch is white
        matter), flips of both in-plane axes, then a mild gamma (the normalised minimum stays 0).
        Outside the volume in plane is background (0).
        """
        depth = PATCH[2]
        z = int(rng.choice(self.starts[block]))
        sub_img, sub_lab = self.vol[:, :, z:z + depth], self.lab[:, :, z:z + depth]
        angle = np.deg2rad(rng.uniform(-AUG_ROTATE_DEG, AUG_ROTATE_DEG))
        step = 1.0 / rng.uniform(*AUG_ZOOM)  # input voxels per output voxel
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * step
        if rng.random() < 0.5:
            rot[:, 0] *= -1  # flip rows (P-A)
        if rng.random() < 0.5:
            rot[:, 1] *= -1  # flip columns (L-R)
        matrix = np.eye(3)
        matrix[:2, :2] = rot
        half = np.array([PATCH[0], PATCH[1]]) / 2.0  # patch centre anywhere in the plane
        centre = rng.uniform(half * 0.5, np.array(sub_img.shape[:2]) - half * 0.5)
        offset = np.zeros(3)
        offset[:2] = centre - rot @ ((np.array(PATCH[:2]) - 1) / 2.0)
        out = (PATCH[0], PATCH[1], depth)
        img = ndimage.affine_transform(sub_img, matrix, offset, output_shape=out, order=1, mode="constant")
        lab = ndimage.affine_transform(sub_lab, matrix, offset, output_shape=out, order=0, mode="constant")
        img = np.clip(img, 0.0, None) ** rng.uniform(0.8, 1.25)
        return np.ascontiguousarray(img[None], np.float32), np.ascontiguousarray(lab[None], np.int64)

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` patches of one block (drawn in proportion to the blocks' thickness)."""
        block = int(rng.choice(len(self.blocks), p=self.weights))
        xs, ys = zip(*(self.sample(rng, block) for _ in range(n)))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def build_model() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(**ARCH_KWARGS)


def train(model: torch.nn.Module, sampler: PatchSampler) -> list[float]:
    """Dice+CE loss, AdamW, one-cycle learning rate; returns the loss curve."""
    from monai.losses import DiceCELoss

    rng = np.random.default_rng(SEED)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=ITERATIONS)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for it in range(ITERATIONS):
        x, y = sampler.batch(rng, BATCH_SIZE)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (it + 1) % 100 == 0:
            log(f"iter {it + 1:4d}/{ITERATIONS}  loss {np.mean(losses[-100:]):.4f}  "
                f"{time.perf_counter() - start:.0f} s")
    model.eval()
    return losses


# ----------------------------------------------------------------------- 3. evaluation
def evaluate_with_loader(split: dict[str, list[int]]) -> dict[str, object]:
    """Held-out Dice of class 1 through ``load_model`` + ``model.segment``, as a user runs it."""
    from napari_seg_explain import load_model, read_image

    image = read_image(T1_3MM)
    img = nib.load(T1_3MM)
    file_data = np.asarray(img.dataobj)
    # this PLS file is displayed in its own voxel order: display order == file order
    if image.spatial_shape != file_data.shape or not np.array_equal(image.data[0], file_data):
        raise AssertionError("the loader's display order differs from the file's voxel order")
    if not np.allclose(image.affine, img.affine):
        raise AssertionError("the loader's affine differs from the file's")
    model = load_model(MODEL_DIR / CARD_NAME, device="cpu")
    pred = model.segment(image) == 1
    truth = np.asarray(nib.load(LABEL_3MM).dataobj) == 1
    held = split["heldout"]
    per_slice = {str(z): dice(pred[:, :, z], truth[:, :, z]) for z in held}
    return {
        "pooled_dice": round(dice(pred[:, :, held], truth[:, :, held]), 4),
        "mean_slice_dice": round(float(np.mean(list(per_slice.values()))), 4),
        "per_slice_dice": {z: round(d, 4) for z, d in per_slice.items()},
        "whole_volume_dice": round(dice(pred, truth), 4),
        "train_region_dice": round(dice(pred[:, :, split["train"]], truth[:, :, split["train"]]), 4),
        "baseline_threshold": threshold_baseline(split),
    }


def threshold_baseline(split: dict[str, list[int]]) -> dict[str, float]:
    """For scale: one global T1 threshold, the best on the training slices, scored on the slab."""
    t1 = np.asarray(nib.load(T1_3MM).dataobj, dtype=np.float32)
    truth = np.asarray(nib.load(LABEL_3MM).dataobj) == 1
    tr, held = split["train"], split["heldout"]
    best = max(range(0, int(t1.max()) + 1, 5), key=lambda th: dice(t1[:, :, tr] > th, truth[:, :, tr]))
    return {"threshold": best, "train_dice": round(dice(t1[:, :, tr] > best, truth[:, :, tr]), 4),
            "heldout_dice": round(dice(t1[:, :, held] > best, truth[:, :, held]), 4)}


# ----------------------------------------------------------------------------- outputs
def write_card(path: Path, split: dict[str, list[int]], intensity: list[int],
               metrics: dict[str, object] | None) -> None:
    """The model card in the project's schema (``metrics`` None: before evaluation)."""
    kw = ", ".join(f"{k}: {flow_list(v) if isinstance(v, list) else v}" for k, v in ARCH_KWARGS.items())
    result = ""
    if metrics is not None:
        result = (f"heldout_dice: {metrics['pooled_dice']}, "
                  f"heldout_dice_mean_slices: {metrics['mean_slice_dice']}, ")
    text = f"""name: mni152-wm-unet3d
description: 3-D UNet segmenting white matter in the MNI ICBM152 2009a T1 template at 3 mm (sample model, not for clinical use)
weights: {WEIGHTS_NAME}
architecture:
  name: UNet
  kwargs: {{{kw}}}
spatial_dims: 3
in_channels: 1
classes: [background, white_matter]
output_activation: softmax
normalization: {{method: minmax}}
input_size: {flow_list(list(PATCH))}
orientation: file
expects: {{modality: MR, intensity_range: {flow_list(intensity)}, spacing: [{VOXEL_MM}, {VOXEL_MM}, {VOXEL_MM}]}}
license: "Weights: Apache-2.0 (as the project). Trained on the MNI ICBM 2009a template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University; see sample_data/README.md"
training: {{script: sample_data/train_sample_model_3d.py, seed: {SEED}, heldout_slices: {flow_list(split["heldout"])}, margin: {HELDOUT_MARGIN}, excluded_margin_slices: {flow_list(split["margin"])}, train_slices: {split["train"][0]}-{split["train"][-1]}, unused_slices: {flow_list(split["unused"])}, {result}heldout_dice_measure: pooled Dice of class 1 over the held-out slab via load_model + segment (sliding window 32^3 overlap 0.5 gaussian), iterations: {ITERATIONS}, batch_size: {BATCH_SIZE}, patch: {flow_list(list(PATCH))}, augmentation: in-plane rotation +-{AUG_ROTATE_DEG:g} deg zoom {AUG_ZOOM[0]}-{AUG_ZOOM[1]} flips gamma 0.8-1.25, loss: DiceCELoss, optimizer: AdamW, max_lr: {LEARNING_RATE}, data: sample_data/mni152_t1_3mm.nii.gz, labels: sample_data/mni152_wm_label_3mm.nii.gz}}
"""
    path.write_text(text)


def main() -> None:
    import monai

    t0 = time.perf_counter()
    seed_everything(SEED)
    info = make_3mm()
    log(f"3 mm volume: {info['shape']}, WM {info['wm_volume_ml_3mm']} ml "
        f"(1.5 mm: {info['wm_volume_ml_1p5mm']} ml), {info['label_ties']} ties")

    t1 = np.asarray(nib.load(T1_3MM).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(LABEL_3MM).dataobj, dtype=np.uint8)
    intensity = [int(round(float(v))) for v in np.percentile(t1, [0.5, 99.5])]
    split = heldout_split_3d(t1, label)
    sampler = PatchSampler(minmax(t1), label, split)
    log(f"brain slices {int(brain_slices(t1)[0])}-{int(brain_slices(t1)[-1])}, held out {split['heldout']}, "
        f"margin {split['margin']}, training blocks {sampler.blocks}, z starts {sampler.starts}, "
        f"unused slices {split['unused']}")

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"UNet {n_params} parameters; {ITERATIONS} iterations of {BATCH_SIZE} patches {PATCH}")
    start = time.perf_counter()
    losses = train(model, sampler)
    wall = time.perf_counter() - start

    MODEL_DIR.mkdir(exist_ok=True)
    save_weights(model, MODEL_DIR / WEIGHTS_NAME)
    write_card(MODEL_DIR / CARD_NAME, split, intensity, None)
    metrics = evaluate_with_loader(split)
    write_card(MODEL_DIR / CARD_NAME, split, intensity, metrics)
    log(f"held-out Dice (load_model + segment): pooled {metrics['pooled_dice']}, "
        f"mean over slices {metrics['mean_slice_dice']}; training region {metrics['train_region_dice']}; "
        f"train {wall:.0f} s")

    record = {
        "volume_3mm": info,
        "heldout_slices": split["heldout"],
        "excluded_margin_slices": split["margin"],
        "train_slices": split["train"],
        "unused_slices": split["unused"],
        "training_blocks": [list(b) for b in sampler.blocks],
        "patch_z_starts": sampler.starts,
        "intensity_range_p0.5_p99.5": intensity,
        **metrics,
        "parameters": n_params,
        "train_wall_time_s": round(wall, 1),
        "total_wall_time_s": round(time.perf_counter() - t0, 1),
        "iterations": ITERATIONS,
        "batch_size": BATCH_SIZE,
        "patch": list(PATCH),
        "final_loss_mean_last_50": round(float(np.mean(losses[-50:])), 4),
        "loss_every_50": [round(float(np.mean(losses[i: i + 50])), 4) for i in range(0, len(losses), 50)],
        "seed": SEED,
        "num_threads": NUM_THREADS,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "numpy_version": np.__version__,
    }
    (MODEL_DIR / METRICS_NAME).write_text(compact_json(record))
    log(f"wrote {T1_3MM.name}, {LABEL_3MM.name}, model/{WEIGHTS_NAME}, model/{CARD_NAME}, model/{METRICS_NAME}")


if __name__ == "__main__":
    main()
