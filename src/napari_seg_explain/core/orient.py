"""Voxel order for 3-D models: what the model is fed versus what the screen shows.

Volumes are read in the display orientation (P, L, S). A 3-D model gets them in the voxel order its card
declares: ``orientation: file`` (the default: the file's own voxel order, as most training pipelines read
it) or axis codes such as ``RAS`` / ``LPS`` (as MONAI's ``Orientationd`` gives). Axes are only permuted
and flipped (no resampling), so maps computed in the model's order go back onto the display grid exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .images import Image


@dataclass(frozen=True)
class Reorder:
    """nibabel orientation transforms from display order to the model's order and back."""

    to_model: np.ndarray
    to_display: np.ndarray
    codes: str

    def model(self, arr: np.ndarray) -> np.ndarray:
        """A spatial array (display order) in the model's order."""
        from nibabel.orientations import apply_orientation

        return np.ascontiguousarray(apply_orientation(arr, self.to_model))

    def display(self, arr: np.ndarray) -> np.ndarray:
        """A spatial array (model order) back in display order."""
        from nibabel.orientations import apply_orientation

        return np.ascontiguousarray(apply_orientation(arr, self.to_display))

    def channels(self, data: np.ndarray) -> np.ndarray:
        """``(C, *S)`` display -> model order."""
        return np.stack([self.model(c) for c in data])


def reorder_for(image: Image, orientation: str = "file") -> Reorder:
    """The transforms between ``image``'s (display) voxel order and ``orientation`` (``file`` or axis codes)."""
    from nibabel import orientations as nio

    current = nio.io_orientation(image.affine)
    if orientation == "file":
        target = nio.io_orientation(image.file_affine if image.file_affine is not None else image.affine)
    else:
        target = nio.axcodes2ornt(tuple(orientation))
    codes = "".join(nio.ornt2axcodes(target))
    return Reorder(nio.ornt_transform(current, target), nio.ornt_transform(target, current), codes)


def context_box(roi: np.ndarray, size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A box of ``size`` (clipped to ``shape``) centred on the RoI's bounding box; the whole RoI when it is larger."""
    idx = np.argwhere(roi)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    out = []
    for a, b, want, n in zip(lo, hi, size, shape):
        want = min(max(int(want), int(b - a)), int(n))
        start = int(np.clip((a + b) // 2 - want // 2, 0, n - want))
        out.append(slice(start, start + want))
    return tuple(out)
