"""Build the multi-contrast sample (T1, T1c, T2, FLAIR + a synthetic lesion) and train its 2-D lesion model.

Source: the shipped MNI152 T1 (``mni152_t1.nii.gz``, 1.5 mm, PLS) and its white-matter label. The four
contrasts are **intensity mappings of that T1** (no other acquisition exists for the template), and the lesions
are **synthetic**: smooth ellipsoids placed in the white matter, visible only in some contrasts.

Contrast mappings (piecewise linear in the T1 value ``t``, anchored at the tissue medians of the sample T1:
CSF ~300, grey matter ~650, white matter ~850; the background stays exactly 0):

=======  ===================================  ===========================================================
image    tissue (CSF / GM / WM)               lesion (soft fraction ``f`` of an ellipsoid, 0..1)
=======  ===================================  ===========================================================
T1       the T1 itself                        **invisible** (nothing added)
T1c      T1, slightly compressed (280/620/820) enhancing **rim** only: ``+ 450 * (f - min3x3(f))``
T2       inverted: CSF 1000, GM 650, WM 450   hyperintense: blended towards 900 by ``f``
FLAIR    CSF suppressed: CSF 120, GM 700,     hyperintense, the brightest thing: blended towards 950
         WM 520
=======  ===================================  ===========================================================

Each contrast gets its own Gaussian noise (sigma 12, seed 1..4) inside the brain. Stored as int16.

Written to ``sample_data/multicontrast/``: ``T1.nii.gz``, ``T1c.nii.gz``, ``T2.nii.gz``, ``FLAIR.nii.gz``,
``lesion_label.nii.gz`` (uint8, 1 = lesion, ``f > 0.5``): a slab of ``SLAB`` axial slices of the sample
grid (affine shifted accordingly); then ``lesion_unet.safetensors``, its card ``lesion_unet.yaml`` and
``training_metrics.json``.

Model: a 2-D MONAI UNet with 4 input channels (T1, T1c, T2, FLAIR, in this order) and 2 classes
(background, lesion), trained on the slab's slices outside a held-out sub-slab (and its margin). Training
adds extra random lesions on the fly (same mapping rules, in 2-D) and **drops whole contrasts** at random
(replaced by 0 after normalisation, the Shapley explainer's default baseline), so that a missing contrast is
something the model has seen.

Run: ``python sample_data/build_multicontrast_sample.py`` (deterministic; ``--no-train`` only rebuilds the
images; about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "multicontrast"
CONTRASTS = ("T1", "T1c", "T2", "FLAIR")
SLAB = (44, 84)  # axial slices [z0, z1) of the 1.5 mm sample volume (lateral ventricles, centrum semiovale)
HELDOUT = (28, 36)  # held-out slices [a, b) of the slab
MARGIN = 3  # slices each side of the held-out block used neither to train nor to evaluate
N_LESIONS = 30
LESION_SEED = 7
NOISE_SIGMA = 12.0

# piecewise-linear tissue mappings: T1 value -> contrast value (anchors: 0, CSF, GM, WM, max)
T1_ANCHORS = (0.0, 300.0, 650.0, 850.0, 1000.0)
MAPPINGS = {
    "T1": (0.0, 300.0, 650.0, 850.0, 1000.0),
    "T1c": (0.0, 280.0, 620.0, 820.0, 960.0),
    "T2": (0.0, 1000.0, 650.0, 450.0, 420.0),
    "FLAIR": (0.0, 120.0, 700.0, 520.0, 500.0),
}
LESION_VALUE = {"T2": 900.0, "FLAIR": 950.0}  # blended in by the lesion fraction
RIM_GAIN = 450.0  # T1c: enhancing rim

# model
SEED = 0
NUM_THREADS = 2
INPUT_SIZE = (128, 128)
ARCH_KWARGS: dict[str, object] = {"spatial_dims": 2, "in_channels": 4, "out_channels": 2,
                                  "channels": [16, 32, 64], "strides": [2, 2], "num_res_units": 1}
ITERATIONS = 800
BATCH_SIZE = 8
LEARNING_RATE = 4e-3
DROP_P = 0.25  # probability of dropping each contrast in a training sample
WEIGHTS_NAME, CARD_NAME, METRICS_NAME = "lesion_unet.safetensors", "lesion_unet.yaml", "training_metrics.json"


# ------------------------------------------------------------------------------------- images
def rim(f: np.ndarray) -> np.ndarray:
    """In-plane inner shell of a soft lesion: ``f - min over 3x3`` (2-D per slice for a volume)."""
    size = (3, 3) + (1,) * (f.ndim - 2)
    return np.clip(f - ndimage.minimum_filter(f, size=size), 0.0, 1.0)


def make_contrast(name: str, t1: np.ndarray, f: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """One contrast (float32) from the T1 ``t1`` and the lesion fraction ``f`` (same shape)."""
    brain = t1 > 0
    x = np.interp(t1, T1_ANCHORS, MAPPINGS[name]).astype(np.float32)
    if name in LESION_VALUE:
        x = x * (1 - f) + LESION_VALUE[name] * f
    elif name == "T1c":
        x = x + RIM_GAIN * rim(f)
    if rng is not None:
        x = x + rng.normal(0.0, NOISE_SIGMA, size=x.shape).astype(np.float32)
    return np.where(brain, np.clip(x, 1.0, None), 0.0).astype(np.float32)


def lesion_fraction(wm: np.ndarray, n: int, rng: np.random.Generator, spacing_z: bool = True) -> np.ndarray:
    """``n`` smooth ellipsoids (in-plane semi-axes 2-4.5 voxels, 1.2-2.5 along z) centred in eroded white matter
    (2-D when ``wm`` is 2-D), at least 8 voxels apart; returns the lesion fraction in [0, 1]."""
    core = ndimage.binary_erosion(wm > 0, iterations=2)
    cand = np.argwhere(core)
    f = np.zeros(wm.shape, np.float32)
    centres: list[np.ndarray] = []
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in wm.shape], indexing="ij")
    tries = 0
    while len(centres) < n and len(cand) and tries < 50 * n:
        tries += 1
        c = cand[rng.integers(len(cand))].astype(np.float32)
        if any(np.linalg.norm(c - o) < 8 for o in centres):
            continue
        centres.append(c)
        axes = [rng.uniform(2.0, 4.5), rng.uniform(2.0, 4.5)] + ([rng.uniform(1.2, 2.5)] if wm.ndim == 3 else [])
        r = np.sqrt(sum(((g - ci) / a) ** 2 for g, ci, a in zip(grids, c, axes)))
        f = np.maximum(f, np.clip((1.3 - r) / 0.6, 0.0, 1.0))  # 1 inside r < 0.7, soft edge to r = 1.3
    return f


def build() -> dict[str, object]:
    """Write the four contrasts and the lesion label of the slab; returns a summary."""
    t1_img = nib.load(HERE / "mni152_t1.nii.gz")
    t1 = np.asarray(t1_img.dataobj, np.float32)[:, :, SLAB[0]:SLAB[1]]
    wm = np.asarray(nib.load(HERE / "mni152_wm_label.nii.gz").dataobj)[:, :, SLAB[0]:SLAB[1]]
    affine = t1_img.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([0, 0, SLAB[0]]) + affine[:3, 3]
    f = lesion_fraction(wm, N_LESIONS, np.random.default_rng(LESION_SEED))
    OUT.mkdir(exist_ok=True)
    for k, name in enumerate(CONTRASTS):
        x = make_contrast(name, t1, f, np.random.default_rng(k + 1) if name != "T1" else None)
        if name == "T1":
            x = t1  # the T1 itself, unchanged (it already carries the sample's bias field)
        save(np.round(x).astype(np.int16), affine, OUT / f"{name}.nii.gz",
             f"{name}-like mapping of the MNI152 T1 + synthetic lesions (napari-seg-explain sample)")
    label = (f > 0.5).astype(np.uint8)
    save(label, affine, OUT / "lesion_label.nii.gz", "synthetic lesion label (napari-seg-explain sample)")
    lab, n = ndimage.label(label)
    held = [z for z in range(*HELDOUT)]
    return {"lesions": int(n), "lesion_voxels": int(label.sum()),
            "heldout_lesion_voxels": int(label[:, :, held].sum()),
            "heldout_lesions": int(len(np.unique(lab[:, :, held])) - 1)}


def save(data: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """NIfTI-1 with sform = qform = MNI152 (code 4), mm units (as ``build_sample_data.save_nifti``)."""
    sys.path.insert(0, str(HERE))
    from build_sample_data import save_nifti

    save_nifti(data, affine, path, description)


# ------------------------------------------------------------------------------------- model
def split() -> dict[str, list[int]]:
    held = list(range(*HELDOUT))
    margin = [z for z in range(HELDOUT[0] - MARGIN, HELDOUT[1] + MARGIN) if z not in held]
    train = [z for z in range(SLAB[1] - SLAB[0]) if z not in held and z not in margin]
    return {"heldout": held, "margin": margin, "train": train}


def minmax(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(-2, -1), keepdims=True)
    hi = x.max(axis=(-2, -1), keepdims=True)
    return np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), x - lo).astype(np.float32)


def fit_to(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pad = [(0, 0)] * (x.ndim - 2) + [((t - n) // 2, t - n - (t - n) // 2) for n, t in zip(x.shape[-2:], size)]
    return np.pad(x, pad)


def unfit(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    s = [(n - o) // 2 for n, o in zip(y.shape[-2:], shape)]
    return y[..., s[0]:s[0] + shape[0], s[1]:s[1] + shape[1]]


def sample(t1: np.ndarray, wm: np.ndarray, f: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One augmented training slice: (4, 128, 128) normalised input, (1, 128, 128) label."""
    extra = lesion_fraction(wm, int(rng.integers(1, 6)), rng) if rng.random() < 0.8 else 0 * f
    f = np.maximum(f, extra)
    angle, scale = np.deg2rad(rng.uniform(-10, 10)), rng.uniform(0.9, 1.1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
    centre = (np.array(t1.shape) - 1) / 2.0
    offset = centre - rot @ centre + rng.uniform(-6, 6, size=2)
    t1 = ndimage.affine_transform(t1, rot, offset=offset, order=1)
    f = ndimage.affine_transform(f, rot, offset=offset, order=1)
    if rng.random() < 0.5:
        t1, f = t1[:, ::-1], f[:, ::-1]
    x = np.stack([make_contrast(n, t1, f, rng) for n in CONTRASTS])
    x = x * rng.uniform(0.9, 1.1, size=(4, 1, 1)).astype(np.float32)  # per-contrast gain
    x = minmax(x) ** rng.uniform(0.8, 1.25, size=(4, 1, 1)).astype(np.float32)
    drop = rng.random(4) < DROP_P
    if drop.all():
        drop[rng.integers(4)] = False
    x[drop] = 0.0
    return fit_to(x, INPUT_SIZE), fit_to((f > 0.5)[None].astype(np.int64), INPUT_SIZE)


def load_slab() -> dict[str, np.ndarray]:
    vols = {n: np.asarray(nib.load(OUT / f"{n}.nii.gz").dataobj, np.float32) for n in CONTRASTS}
    vols["label"] = np.asarray(nib.load(OUT / "lesion_label.nii.gz").dataobj, np.uint8)
    return vols


def train(wall_budget: float | None = None) -> dict[str, object]:
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)
    sp = split()
    t1_img = nib.load(HERE / "mni152_t1.nii.gz")
    t1 = np.asarray(t1_img.dataobj, np.float32)[:, :, SLAB[0]:SLAB[1]]
    wm = np.asarray(nib.load(HERE / "mni152_wm_label.nii.gz").dataobj)[:, :, SLAB[0]:SLAB[1]]
    f = lesion_fraction(wm, N_LESIONS, np.random.default_rng(LESION_SEED))
    model = UNet(**ARCH_KWARGS)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=ITERATIONS)
    rng = np.random.default_rng(SEED)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for it in range(ITERATIONS):
        zs = rng.choice(sp["train"], size=BATCH_SIZE)
        xs, ys = zip(*(sample(t1[:, :, z], wm[:, :, z], f[:, :, z], rng) for z in zs))
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (it + 1) % 50 == 0:
            print(f"iter {it + 1:4d}  loss {np.mean(losses[-50:]):.4f}  {time.perf_counter() - start:.0f} s",
                  flush=True)
    wall = time.perf_counter() - start
    model.eval()
    metrics = evaluate(model, load_slab(), sp["heldout"])
    print(f"held-out lesion Dice: pooled {metrics['pooled_dice']}, mean {metrics['mean_dice']}; "
          f"train {wall:.0f} s", flush=True)
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / WEIGHTS_NAME), metadata={"format": "pt"})
    write_card(sp, metrics)
    import monai

    record = {"slab": list(SLAB), "heldout_slices": sp["heldout"], "excluded_margin_slices": sp["margin"],
              "train_slices": sp["train"], **metrics, "train_wall_time_s": round(wall, 1),
              "iterations": ITERATIONS, "batch_size": BATCH_SIZE, "contrast_dropout_p": DROP_P,
              "loss_every_50": [round(float(np.mean(losses[i:i + 50])), 4) for i in range(0, len(losses), 50)],
              "seed": SEED, "num_threads": NUM_THREADS, "torch_version": torch.__version__,
              "monai_version": monai.__version__, "numpy_version": np.__version__}
    (OUT / METRICS_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return record


def predict(model, x: np.ndarray) -> np.ndarray:
    """Softmax (2, H, W) of one raw (4, H, W) slice, following the card's contract."""
    import torch

    with torch.no_grad():
        inp = torch.from_numpy(fit_to(minmax(x), INPUT_SIZE))[None]
        return unfit(torch.softmax(model(inp), 1)[0].numpy(), x.shape[-2:])


def evaluate(model, vols: dict[str, np.ndarray], zs: list[int]) -> dict[str, object]:
    """Lesion Dice on the held-out slices (from the shipped int16 files): pooled, and mean over slices with a
    lesion; also the pooled Dice with each contrast alone dropped (0 after normalisation)."""
    def dice_with(drop: int | None) -> tuple[float, dict[str, float]]:
        inter = total = 0
        per: dict[str, float] = {}
        for z in zs:
            x = np.stack([vols[n][:, :, z] for n in CONTRASTS])
            xn = minmax(x)
            if drop is not None:
                xn[drop] = 0
            import torch

            with torch.no_grad():
                p = unfit(torch.softmax(model(torch.from_numpy(fit_to(xn, INPUT_SIZE))[None]), 1)[0].numpy(),
                          x.shape[-2:])
            pred, truth = p[1] > 0.5, vols["label"][:, :, z] > 0
            i, t = int((pred & truth).sum()), int(pred.sum() + truth.sum())
            inter, total = inter + i, total + t
            if truth.any():
                per[str(z)] = round(2 * i / t, 4)
        return (round(2 * inter / total, 4) if total else 1.0), per

    pooled, per = dice_with(None)
    return {"pooled_dice": pooled, "mean_dice": round(float(np.mean(list(per.values()))), 4),
            "per_slice_dice": per,
            "pooled_dice_without": {n: dice_with(k)[0] for k, n in enumerate(CONTRASTS)}}


def write_card(sp: dict[str, list[int]], metrics: dict[str, object]) -> None:
    def flow(v):
        return "[" + ", ".join(str(a) for a in v) + "]"

    kw = ", ".join(f"{k}: {flow(v) if isinstance(v, list) else v}" for k, v in ARCH_KWARGS.items())
    (OUT / CARD_NAME).write_text(f"""name: mni152-lesion-unet2d-4contrast
description: 2-D UNet segmenting a synthetic lesion on axial slices of four contrast-like mappings (T1, T1c, T2, FLAIR) of the MNI ICBM152 2009a T1 template (sample model, not for clinical use)
weights: {WEIGHTS_NAME}
architecture:
  name: UNet
  kwargs: {{{kw}}}
spatial_dims: 2
in_channels: 4
channels: {flow(CONTRASTS)}
classes: [background, lesion]
output_activation: softmax
normalization: {{method: minmax}}
input_size: {flow(INPUT_SIZE)}
fit: pad
expects: {{modality: MR, spacing: [1.5, 1.5]}}
license: "Weights: Apache-2.0 (as the project). Trained on mappings of the MNI ICBM 2009a template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University; see sample_data/README.md"
training: {{script: sample_data/build_multicontrast_sample.py, seed: {SEED}, slab: {flow(SLAB)}, heldout_slices: {flow(sp["heldout"])}, heldout_dice: {metrics["pooled_dice"]}, heldout_dice_mean: {metrics["mean_dice"]}, excluded_margin_slices: {flow(sp["margin"])}, n_train_slices: {len(sp["train"])}, iterations: {ITERATIONS}, batch_size: {BATCH_SIZE}, contrast_dropout: {DROP_P}, loss: DiceCELoss, optimizer: AdamW, max_lr: {LEARNING_RATE}}}
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-train", action="store_true", help="only (re)build the images")
    args = ap.parse_args()
    print(json.dumps(build()), flush=True)
    if not args.no_train:
        train()


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
