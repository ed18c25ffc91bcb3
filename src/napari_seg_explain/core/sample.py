"""The shipped sample: MNI152 T1 volume, its white-matter label, PNG slices and a small 2-D U-Net.

Installed from a wheel the files live in ``napari_seg_explain/_sample_data``; in a source checkout
(editable install) they are read from the repository's ``sample_data/``.
"""

from __future__ import annotations

from pathlib import Path

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
