"""The shipped sample: MNI152 T1 volume, its white-matter label, PNG slices and a small 2-D U-Net.

Installed from a wheel the files live in ``napari_seg_explain/_sample_data``; in a source checkout
(editable install) they are read from the repository's ``sample_data/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError

SAMPLE_VOLUME = "mni152_t1.nii.gz"
SAMPLE_LABEL = "mni152_wm_label.nii.gz"
SAMPLE_CARD = "model/mni152_wm_unet.yaml"
SAMPLE_VOLUME_3D = "mni152_t1_3mm.nii.gz"  # the 3-D sample model's scan (3 mm isotropic)
SAMPLE_LABEL_3D = "mni152_wm_label_3mm.nii.gz"
SAMPLE_CARD_3D = "model/mni152_wm_unet3d.yaml"
# the multi-contrast sample (synthetic lesion; built by sample_data/build_multicontrast_sample.py)
MULTICONTRAST_DIR = "multicontrast"
MULTICONTRAST_NAMES = ("T1", "T1c", "T2", "FLAIR")  # the model's channel order
MULTICONTRAST_VOLUMES = tuple(f"{MULTICONTRAST_DIR}/{n}.nii.gz" for n in MULTICONTRAST_NAMES)
MULTICONTRAST_LABEL = f"{MULTICONTRAST_DIR}/lesion_label.nii.gz"
MULTICONTRAST_CARD = f"{MULTICONTRAST_DIR}/lesion_unet.yaml"


def sample_dir() -> Path:
    """Folder holding the sample files."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "_sample_data", here.parent.parent / "sample_data"):
        if (cand / SAMPLE_VOLUME).exists():
            return cand
    raise UserError("the sample data is missing from this installation; reinstall napari-seg-explain")


def sample_path(name: str) -> Path:
    return sample_dir() / name


def sample_slices() -> list[Path]:
    """The shipped PNG slices (images only, not their labels), sorted."""
    return sorted(p for p in (sample_dir() / "slices").glob("*.png") if not p.stem.endswith("_label"))


def pick_slice(card_training: dict | None, n_slices: int) -> int:
    """A held-out slice of the sample model (the middle one), else the middle slice."""
    held = list((card_training or {}).get("heldout_slices") or [])
    return int(held[len(held) // 2]) if held else n_slices // 2


def pick_bounds(mask: np.ndarray, size: int = 32, step: int = 8) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Grid-aligned box of ``size`` per axis holding the most segmented pixels (ties: first in raster order):
    ``(starts, stops)``, any number of axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    if min(mask.shape) < size:
        raise UserError(f"the image ({'x'.join(map(str, mask.shape))}) is smaller than a {size}-pixel RoI")
    window = (size,) * mask.ndim
    sums = sliding_window_view(mask.astype(np.int32), window).sum(axis=tuple(range(mask.ndim, 2 * mask.ndim)))
    sums = sums[(slice(None, None, step),) * mask.ndim]
    idx = np.unravel_index(int(np.argmax(sums)), sums.shape)
    starts = tuple(int(i) * step for i in idx)
    return starts, tuple(a + size for a in starts)


def pick_box(mask: np.ndarray, size: int = 32, step: int = 8) -> tuple[int, int, int, int]:
    """Block-aligned ``size`` box of a 2-D mask holding the most segmented pixels: ``(y0, x0, y1, x1)``."""
    (y0, x0), (y1, x1) = pick_bounds(mask, size, step)
    return y0, x0, y1, x1
