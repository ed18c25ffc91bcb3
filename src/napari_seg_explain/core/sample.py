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


def pick_box(mask: np.ndarray, size: int = 32, step: int = 8) -> tuple[int, int, int, int]:
    """Block-aligned ``size`` box holding the most segmented pixels (ties: first in raster order)."""
    from numpy.lib.stride_tricks import sliding_window_view

    h, w = mask.shape
    if h < size or w < size:
        raise UserError(f"the slice ({h}x{w}) is smaller than a {size}x{size} RoI")
    sums = sliding_window_view(mask.astype(np.int32), (size, size)).sum(axis=(2, 3))[::step, ::step]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    y0, x0 = int(iy) * step, int(ix) * step
    return y0, x0, y0 + size, x0 + size
