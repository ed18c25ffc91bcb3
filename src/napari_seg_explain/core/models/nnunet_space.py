"""The display grid of a scan <-> nnU-Net v2's preprocessed grid, and the scan as nnU-Net reads it.

nnU-Net reads images in SimpleITK's axis order (the file's voxel axes reversed: ``(z, y, x)``), applies the
plans' ``transpose_forward``, crops to the non-zero bounding box and resamples to the plans' spacing. The
mapping here replays the geometric part (axes, crop, resize) with index arithmetic so that masks go in and
maps come back exactly (nearest neighbour); the intensities are nnU-Net's own preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .space import ModelSpace, fill_value

if TYPE_CHECKING:
    from ..images import Image
    from ..orient import Reorder


def nearest_resize(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a spatial array (voxel centres map onto voxel centres)."""
    if tuple(arr.shape) == tuple(shape):
        return arr
    idx = [np.minimum(((np.arange(n) + 0.5) * have / n).astype(np.int64), have - 1)
           for n, have in zip(shape, arr.shape)]
    return arr[np.ix_(*idx)]


def as_nnunet_array(image: "Image") -> tuple[np.ndarray, list[float], "Reorder | None"]:
    """``image`` as nnU-Net's readers give it: ``(C, z, y, x)`` float32 in the file's voxel order (reversed), its
    spacing in that order, and the display <-> file reorder (None for a 2-D picture, read as ``(C, 1, y, x)``)."""
    if image.spatial_ndim == 2:  # nnU-Net's NaturalImage2DIO: one slice, a large dummy spacing between slices
        return image.data[:, None].astype(np.float32), [999.0, *map(float, image.spacing)], None
    from ..orient import reorder_for

    order = reorder_for(image, "file")
    data = order.channels(image.data).transpose(0, 3, 2, 1).astype(np.float32)
    aff = image.file_affine if image.file_affine is not None else image.affine
    zooms = np.sqrt((np.asarray(aff)[:3, :3] ** 2).sum(axis=0))
    return np.ascontiguousarray(data), [float(z) for z in zooms[::-1]], order


@dataclass(frozen=True)
class NNUNetSpace(ModelSpace):
    """Geometry of one scan in one nnU-Net configuration (from nnU-Net's preprocessing properties)."""

    reorder: "Reorder | None"
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    shape_before_cropping: tuple[int, ...]  # after the transpose
    bbox: tuple[tuple[int, int], ...]
    shape_after_cropping: tuple[int, ...]
    shape_preprocessed: tuple[int, ...]
    codes: str = ""
    properties: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # nnU-Net's, for export

    @classmethod
    def from_properties(cls, props: dict[str, Any], shape_pre: tuple[int, ...], reorder: "Reorder | None",
                        plans_manager: Any, configuration: str, spacing: list[float]) -> "NNUNetSpace":
        sp = "x".join(f"{s:g}" for s in spacing)
        return cls(reorder, tuple(plans_manager.transpose_forward), tuple(plans_manager.transpose_backward),
                   tuple(int(s) for s in props["shape_before_cropping"]),
                   tuple((int(a), int(b)) for a, b in props["bbox_used_for_cropping"]),
                   tuple(int(s) for s in props["shape_after_cropping_and_before_resampling"]),
                   tuple(int(s) for s in shape_pre),
                   f"nnU-Net preprocessed grid ({configuration}, {sp} mm, shape {list(shape_pre)})", dict(props))

    def model(self, arr: np.ndarray) -> np.ndarray:
        a = np.asarray(arr)
        a = a[None] if self.reorder is None else self.reorder.model(a).transpose(2, 1, 0)
        a = a.transpose(self.transpose_forward)
        a = a[tuple(slice(lo, hi) for lo, hi in self.bbox)]
        return np.ascontiguousarray(nearest_resize(a, self.shape_preprocessed))

    def display(self, arr: np.ndarray) -> np.ndarray:
        a = nearest_resize(np.asarray(arr), self.shape_after_cropping)
        out = np.full(self.shape_before_cropping, fill_value(a.dtype), dtype=a.dtype)
        out[tuple(slice(lo, hi) for lo, hi in self.bbox)] = a
        out = out.transpose(self.transpose_backward)
        if self.reorder is None:
            return np.ascontiguousarray(out[0])
        return self.reorder.display(out.transpose(2, 1, 0))

    def describe(self) -> dict[str, Any]:
        return {"model_space": self.codes, "crop_to_nonzero_bbox": [list(b) for b in self.bbox],
                "shape_preprocessed": list(self.shape_preprocessed)}
