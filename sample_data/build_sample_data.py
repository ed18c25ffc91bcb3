"""Build the napari-seg-explain sample data from the MNI152 template shipped with nilearn.

Reads the MNI ICBM 2009a nonlinear-symmetric T1 template and its white-matter
probability map from *inside the installed nilearn package* (no network), and writes:

* ``sample_data/mni152_t1.nii.gz``        small T1 volume (1.5 mm, cropped, PLS voxel order, int16)
* ``sample_data/mni152_wm_label.nii.gz``  uint8 white-matter label (1 = WM probability > 0.5)
* ``sample_data/slices/mni152_axial_zNNN.png`` and ``..._label.png``
  four held-out axial slices (8-bit grey, min-max over the volume) and their 0/1 labels.

Voxel order is re-oriented so that ``data[:, :, z]`` is an axial slice that displays
naturally as (rows, cols): anterior at the top, patient's right on the left
(radiological), z from inferior to superior; ``nibabel.aff2axcodes(affine) == ('P', 'L', 'S')``.
The affine always describes the true world (MNI) position of every voxel.

The held-out slab used by ``train_sample_model.py`` is defined here
(:func:`heldout_split`), so both scripts agree on it.

Run: ``python sample_data/build_sample_data.py`` (deterministic, a few seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt
from PIL import Image
from scipy import ndimage

HERE = Path(__file__).resolve().parent
T1_NAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WM_NAME = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"

VOXEL_MM = 1.5  # output isotropic voxel size
CROP_MARGIN_VOX = 3  # margin (output voxels) around the brain bounding box
TARGET_AXCODES = ("P", "L", "S")
WM_THRESHOLD = 0.5  # WM probability threshold for the label
BIAS_AMPLITUDE = 0.05  # +-5 % smooth multiplicative bias field ("light realism")
BIAS_SEED = 0

HELDOUT_FRACTION = 0.15  # contiguous slab of ~15 % of the brain slices
HELDOUT_MARGIN = 3  # slices each side of the slab also kept out of training
N_PNG_SLICES = 4

# NIfTI xform code 4 = NIFTI_XFORM_MNI_152 (the template is in MNI152 space).
XFORM_CODE_MNI = 4


def nilearn_data_dir() -> Path:
    """Return the folder inside the installed nilearn package that holds the templates."""
    import nilearn

    return Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"


def load_source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load the 1 mm T1 template and WM probability map (both rescaled to [0, 1]).

    Returns ``(t1, wm_prob, affine)``; both volumes are float32 in RAS voxel order.
    """
    folder = nilearn_data_dir()
    t1_img = nib.load(folder / T1_NAME)
    wm_img = nib.load(folder / WM_NAME)
    if not np.allclose(t1_img.affine, wm_img.affine) or t1_img.shape != wm_img.shape:
        raise RuntimeError("T1 and WM templates are not on the same grid")
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(wm_img.dataobj, dtype=np.float32) / 255.0
    return t1, wm, t1_img.affine.copy()


def resample_isotropic(
    volume: np.ndarray, affine: np.ndarray, voxel_mm: float, order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a (1 mm) volume onto an isotropic ``voxel_mm`` grid with the same origin.

    Output voxel ``i`` samples input voxel coordinate ``i * step`` (step = new/old size),
    so the new affine is exactly ``affine @ diag(step, step, step, 1)``.
    """
    old_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    step = voxel_mm / old_mm
    out_shape = tuple(int(np.floor((n - 1) / s)) + 1 for n, s in zip(volume.shape, step))
    out = ndimage.affine_transform(
        volume, step, offset=0.0, output_shape=out_shape, order=order, mode="constant", cval=0.0
    )
    new_affine = affine @ np.diag([*step, 1.0])
    return out.astype(np.float32), new_affine


def crop_to_mask(
    volumes: list[np.ndarray], mask: np.ndarray, affine: np.ndarray, margin: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Crop all volumes to the bounding box of ``mask`` (+ ``margin``); shift the affine origin.

    The first two (in-plane after re-orientation) sizes are made even.
    """
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    for axis in range(2):  # in-plane sizes even: centre pad/crop is then unambiguous
        if (hi[axis] - lo[axis]) % 2:
            if hi[axis] < mask.shape[axis]:
                hi[axis] += 1
            else:
                lo[axis] -= 1
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    new_affine = affine.copy()
    new_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return [v[sl] for v in volumes], new_affine


def reorient(
    volume: np.ndarray, affine: np.ndarray, axcodes: tuple[str, str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the voxel order to ``axcodes`` keeping the world position of every voxel."""
    start = ornt.io_orientation(affine)
    end = ornt.axcodes2ornt(axcodes)
    transform = ornt.ornt_transform(start, end)
    data = ornt.apply_orientation(volume, transform)
    new_affine = affine @ ornt.inv_ornt_aff(transform, volume.shape)
    return np.ascontiguousarray(data), new_affine


def check_reorientation(
    src: np.ndarray, src_aff: np.ndarray, dst: np.ndarray, dst_aff: np.ndarray, n: int = 8
) -> None:
    """Verify that a few voxels keep their world coordinates (and values) through ``reorient``."""
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0, 0], np.array(src.shape) - 1])
    picks = np.vstack([corners, rng.integers(0, src.shape, size=(n, 3))])
    inv = np.linalg.inv(dst_aff)
    for ijk in picks:
        world = src_aff @ np.r_[ijk, 1.0]
        new_ijk = inv @ world
        rounded = np.round(new_ijk[:3]).astype(int)
        if not np.allclose(new_ijk[:3], rounded, atol=1e-4):
            raise AssertionError(f"voxel {ijk} does not land on a voxel centre: {new_ijk[:3]}")
        if src[tuple(ijk)] != dst[tuple(rounded)]:
            raise AssertionError(f"value mismatch at {ijk} -> {rounded}")
    if ornt.aff2axcodes(dst_aff) != TARGET_AXCODES:
        raise AssertionError(f"axcodes {ornt.aff2axcodes(dst_aff)} != {TARGET_AXCODES}")


def bias_field(shape: tuple[int, ...], amplitude: float, seed: int) -> np.ndarray:
    """Smooth multiplicative field in ``[1 - amplitude, 1 + amplitude]`` (deterministic)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in shape], order=3, mode="nearest")[
        : shape[0], : shape[1], : shape[2]
    ]
    field = (field - field.min()) / (field.max() - field.min())  # 0..1
    return (1.0 + amplitude * (2.0 * field - 1.0)).astype(np.float32)


def brain_slices(t1: np.ndarray) -> np.ndarray:
    """Indices ``z`` of axial slices ``t1[:, :, z]`` that contain brain (any voxel > 0)."""
    return np.flatnonzero(t1.reshape(-1, t1.shape[2]).max(axis=0) > 0)


def heldout_split(
    t1: np.ndarray,
    label: np.ndarray,
    fraction: float = HELDOUT_FRACTION,
    margin: int = HELDOUT_MARGIN,
) -> dict[str, list[int]]:
    """Deterministic train / held-out split of the axial slices of a PLS volume.

    The held-out set is the contiguous slab of ``round(fraction * n_brain)`` brain slices
    with the most white-matter voxels; ``margin`` slices on each side are excluded from
    training too (so neighbours don't leak). Training uses every other brain slice.
    """
    brain = brain_slices(t1)
    n_held = max(1, int(round(fraction * len(brain))))
    wm_per_slice = label.reshape(-1, label.shape[2]).sum(axis=0).astype(np.int64)
    starts = brain[: len(brain) - n_held + 1]
    scores = [wm_per_slice[s : s + n_held].sum() for s in starts]
    start = int(starts[int(np.argmax(scores))])
    heldout = list(range(start, start + n_held))
    excluded = list(range(start - margin, start)) + list(
        range(start + n_held, start + n_held + margin)
    )
    train = [int(z) for z in brain if z not in heldout and z not in excluded]
    return {"heldout": heldout, "margin": excluded, "train": train}


def png_slices(heldout: list[int], n: int = N_PNG_SLICES) -> list[int]:
    """``n`` evenly spaced slices from the inside of the held-out slab."""
    pos = np.linspace(0, len(heldout) - 1, n + 2)[1:-1]
    return [heldout[int(round(p))] for p in pos]


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write a NIfTI-1 image with matching sform/qform (MNI152 code) and mm units."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=XFORM_CODE_MNI)
    img.set_qform(affine, code=XFORM_CODE_MNI)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode()[:79]
    nib.save(img, str(path))


def write_pngs(t1: np.ndarray, label: np.ndarray, zs: list[int], out_dir: Path) -> None:
    """Save axial slices as 8-bit grey PNGs (min-max over the volume) and 0/1 label PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = float(t1.min()), float(t1.max())
    for z in zs:
        grey = np.round((t1[:, :, z] - lo) / (hi - lo) * 255.0).astype(np.uint8)
        Image.fromarray(grey, mode="L").save(out_dir / f"mni152_axial_z{z:03d}.png")
        lab = label[:, :, z].astype(np.uint8)
        Image.fromarray(lab, mode="L").save(out_dir / f"mni152_axial_z{z:03d}_label.png")


def build(out_dir: Path = HERE) -> dict[str, object]:
    """Build every sample-data file under ``out_dir``; return a short summary."""
    t1, wm, affine = load_source()
    t1, aff_rs = resample_isotropic(t1, affine, VOXEL_MM, order=1)
    wm, _ = resample_isotropic(wm, affine, VOXEL_MM, order=1)
    (t1, wm), aff_crop = crop_to_mask([t1, wm], t1 > 0, aff_rs, CROP_MARGIN_VOX)

    t1 = t1 * bias_field(t1.shape, BIAS_AMPLITUDE, BIAS_SEED)
    t1_i16 = np.round(t1 * 1000.0).astype(np.int16)  # 0..~1050, zero background
    label = (wm > WM_THRESHOLD).astype(np.uint8)

    t1_pls, aff_pls = reorient(t1_i16, aff_crop, TARGET_AXCODES)
    label_pls, aff_lab = reorient(label, aff_crop, TARGET_AXCODES)
    check_reorientation(t1_i16, aff_crop, t1_pls, aff_pls)
    check_reorientation(label, aff_crop, label_pls, aff_lab)

    t1_desc = "MNI ICBM152 2009a sym T1, 1.5mm, PLS"
    save_nifti(t1_pls, aff_pls, out_dir / "mni152_t1.nii.gz", t1_desc)
    lab_desc = "MNI152 2009a WM prob>0.5, PLS"
    save_nifti(label_pls, aff_pls, out_dir / "mni152_wm_label.nii.gz", lab_desc)

    split = heldout_split(t1_pls, label_pls)
    zs = png_slices(split["heldout"])
    write_pngs(t1_pls, label_pls, zs, out_dir / "slices")
    return {
        "shape": t1_pls.shape,
        "axcodes": ornt.aff2axcodes(aff_pls),
        "affine": np.round(aff_pls, 3).tolist(),
        "brain_slices": [int(brain_slices(t1_pls)[0]), int(brain_slices(t1_pls)[-1])],
        "heldout": split["heldout"],
        "png_slices": zs,
    }


def main() -> None:
    """Entry point: build the data and print a summary."""
    for key, value in build().items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
