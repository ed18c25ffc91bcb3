"""Build a labelled sample set for post-hoc reliability (MiSuRe features -> is the segmentation reliable?).

    python benchmarks/make_reliability_set.py OUT [--slices 20 28 ...] [--degradations clean noise2 ...]

Everything comes from the shipped sample (``sample_data/mni152_t1.nii.gz`` and ``mni152_wm_label.nii.gz``); no
download. For every chosen axial slice ``z`` it writes the clean slice and degraded copies as 2-D NIfTI files
(float32, 1.5 mm, the volume's in-plane affine), the slice's white-matter label, and ``OUT/manifest.csv`` for
``seg-explain batch`` (columns image,roi,class,label,slice,name; roi = a box around the labelled white matter,
grown by 4 pixels). The 2-D sample model (``sample_data/model/mni152_wm_unet.yaml``) segments the clean slices
of the middle of the brain well (Dice > 0.9) and the extreme slices and the strongly degraded copies badly, so
the set has both reliable and unreliable segmentations.

Degradations (all seeded, deterministic; ``m`` = the median brain intensity of the slice):

* ``noiseK``: additive Gaussian noise, sigma = 0.1*K*m (K = 1, 2, 4);
* ``blurK``: Gaussian blur, sigma = K pixels (K = 1, 2, 3);
* ``gammaG``: contrast change inside the brain, x -> x_max*(x/x_max)**G (G = 0.5, 2.0; ``gamma05``, ``gamma20``);
* ``biasK``: multiplicative bias field 1 + 0.1*K*(a smooth random field in [-1, 1]) (K = 2, 4).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
DEFAULT_SLICES = (16, 22, 30, 38, 46, 54, 62, 70, 78, 86, 94, 100)
DEGRADATIONS = ("clean", "noise1", "noise2", "noise4", "blur1", "blur2", "blur3", "gamma05", "gamma20", "bias2",
                "bias4")
DEFAULT_DEGRADATIONS = ("clean", "noise1", "noise2", "blur1", "blur2", "gamma05", "bias4")


def degrade(img: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """``img`` (2-D float) degraded by ``kind`` (one of DEGRADATIONS), deterministically from ``seed``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    brain = img > 0
    m = float(np.median(img[brain])) if brain.any() else 1.0
    if kind == "clean":
        out = img.copy()
    elif kind.startswith("noise"):
        out = img + rng.normal(0.0, 0.1 * int(kind[5:]) * m, img.shape)
    elif kind.startswith("blur"):
        out = ndimage.gaussian_filter(img, sigma=float(kind[4:]))
    elif kind.startswith("gamma"):
        g = int(kind[5:]) / 10.0
        top = float(img.max()) or 1.0
        out = np.where(brain, top * (np.clip(img, 0, None) / top) ** g, img)
    elif kind.startswith("bias"):
        field = ndimage.gaussian_filter(rng.normal(size=img.shape), sigma=max(img.shape) / 4)
        field = field / (np.abs(field).max() or 1.0)
        out = img * (1.0 + 0.1 * int(kind[4:]) * field)
    else:
        raise ValueError(f"unknown degradation {kind!r} (one of {', '.join(DEGRADATIONS)})")
    return np.clip(out, 0, None).astype(np.float32)


def label_box(lab: np.ndarray, margin: int = 4) -> tuple[int, int, int, int] | None:
    """``Y0 X0 Y1 X1`` (end exclusive) around the label's pixels, grown by ``margin``; None if the label is empty."""
    ys, xs = np.nonzero(lab)
    if not len(ys):
        return None
    h, w = lab.shape
    return (max(0, ys.min() - margin), max(0, xs.min() - margin), min(h, ys.max() + 1 + margin),
            min(w, xs.max() + 1 + margin))


def build(out: Path, slices=DEFAULT_SLICES, degradations=DEFAULT_DEGRADATIONS, min_label_pixels: int = 30) -> Path:
    """Write the set under ``out``; returns the manifest's path."""
    import nibabel as nib

    vol_img = nib.load(str(SAMPLE / "mni152_t1.nii.gz"))
    vol = np.asarray(vol_img.dataobj, dtype=np.float32)
    lab = np.asarray(nib.load(str(SAMPLE / "mni152_wm_label.nii.gz")).dataobj).astype(np.uint8)
    affine = vol_img.affine
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for z in slices:
        lab2 = lab[:, :, z]
        box = label_box(lab2)
        if box is None or int(lab2.sum()) < min_label_pixels:
            print(f"slice {z}: {int(lab2.sum())} labelled pixels, skipped")
            continue
        aff = affine.copy()
        aff[:3, 3] = affine[:3, :3] @ np.array([0, 0, z]) + affine[:3, 3]  # the slice's own origin
        lab_path = out / "labels" / f"z{z:03d}_label.nii.gz"
        nib.save(nib.Nifti1Image(lab2[:, :, None], aff), str(lab_path))
        for i, kind in enumerate(degradations):
            img = degrade(vol[:, :, z], kind, seed=1000 * z + i)
            path = out / "images" / f"z{z:03d}_{kind}.nii.gz"
            nib.save(nib.Nifti1Image(img[:, :, None], aff), str(path))
            rows.append({"image": path.relative_to(out).as_posix(), "roi": " ".join(map(str, box)),
                         "class": "white_matter", "label": lab_path.relative_to(out).as_posix(), "slice": "",
                         "name": f"z{z:03d} {kind}"})
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "roi", "class", "label", "slice", "name"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--slices", type=int, nargs="+", default=list(DEFAULT_SLICES))
    ap.add_argument("--degradations", nargs="+", default=list(DEFAULT_DEGRADATIONS), choices=DEGRADATIONS)
    args = ap.parse_args()
    manifest = build(args.out, args.slices, args.degradations)
    n = sum(1 for _ in manifest.open()) - 1
    print(f"{manifest}: {n} rows")


if __name__ == "__main__":
    main()
