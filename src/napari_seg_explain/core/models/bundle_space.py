"""A MONAI bundle's preprocessed grid for one scan: the in-memory image as ``LoadImaged`` +
``EnsureChannelFirstd`` would give it, the bundle's preprocessing run on it, and the mapping back.

Model grid -> display grid is MONAI's own inversion (``Invertd`` with nearest interpolation, on the
preprocessed image's ``applied_operations``), then the file -> display voxel reorder; outside what the
preprocessing kept (a foreground crop, say) the display array gets :func:`~.space.fill_value`. Display grid
-> model grid is MONAI's ``SpatialResample`` (nearest) from the scan's affine onto the preprocessed image's
affine, which MONAI keeps in step with every spatial transform.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..orient import reorder_for
from .space import ModelSpace, fill_value

if TYPE_CHECKING:
    from monai.data import MetaTensor

    from ..images import Image

#: replaced by handing over the image in memory
LOADERS = ("LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst")


def image_metatensor(image: "Image", key: str = "image") -> dict[str, "MetaTensor"]:
    """``{key: MetaTensor}``: ``image`` in its file's voxel order, as LoadImaged + EnsureChannelFirstd give it."""
    import torch
    from monai.data import MetaTensor

    order = reorder_for(image, "file")
    data = order.channels(np.asarray(image.data, dtype=np.float32)).astype(np.float32, copy=False)
    affine = torch.as_tensor(image.file_affine if image.file_affine is not None else image.affine, dtype=torch.float64)
    meta = {"filename_or_obj": image.source or "image", "original_affine": affine.clone(),
            "spatial_shape": np.asarray(data.shape[1:]), "space": "RAS",
            "original_channel_dim": float("nan") if data.shape[0] == 1 else 0}
    return {key: MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=affine, meta=meta)}


def run_preprocessing(compose: Any, key: str, data: dict[str, Any]) -> dict[str, Any]:
    """The bundle's preprocessing on ``data`` with loader/channel-first transforms and transforms of other keys
    skipped (the same transform objects, so MONAI's inversion recognises them)."""
    from monai.transforms import Compose, MapTransform

    for t in (compose.flatten().transforms if isinstance(compose, Compose) else [compose]):
        if type(t).__name__ in LOADERS:
            continue
        if isinstance(t, MapTransform):
            if key not in t.keys:
                continue
            allow = t.allow_missing_keys
            t.allow_missing_keys = True  # e.g. keys [image, label] at inference: only the image is here
            try:
                data = t(data)
            finally:
                t.allow_missing_keys = allow
        else:
            data = t(data)
    return data


class BundleSpace(ModelSpace):
    """Display grid of ``image`` <-> the grid of ``pre`` (the bundle's preprocessed image of it)."""

    def __init__(self, image: "Image", pre: "MetaTensor", compose: Any, key: str) -> None:
        self.reorder = reorder_for(image, "file")
        self.display_shape = image.spatial_shape
        self.file_shape = tuple(int(s) for s in self.reorder.model(np.zeros(image.spatial_shape, bool)).shape)
        self.file_affine = image.file_affine if image.file_affine is not None else image.affine
        self.pre = pre.detach().cpu()
        self.model_shape = tuple(int(s) for s in pre.shape[1:])
        self.compose, self.key = compose, key
        spacing = np.linalg.norm(np.asarray(pre.affine)[:3, :3], axis=0)
        self.codes = (f"MONAI bundle preprocessed ({'x'.join(map(str, self.model_shape))} voxels, spacing "
                      f"{'x'.join(f'{s:g}' for s in spacing)} mm)")

    def model(self, arr: np.ndarray) -> np.ndarray:
        import torch
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        arr = np.asarray(arr)
        src = self.reorder.model(arr).astype(np.float32)
        mt = MetaTensor(torch.from_numpy(src[None]), affine=torch.as_tensor(self.file_affine, dtype=torch.float64))
        out = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)(
            mt, dst_affine=self.pre.affine, spatial_size=self.model_shape)
        return _cast(np.asarray(out[0].numpy()), arr.dtype)

    def display(self, arr: np.ndarray) -> np.ndarray:
        import torch
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        arr = np.asarray(arr)
        if arr.shape != self.model_shape:
            raise ValueError(f"an array on the model grid must be {self.model_shape}, got {arr.shape}")
        x = np.stack([arr.astype(np.float32), np.ones(self.model_shape, np.float32)])
        inv = Invertd("_mapped", transform=self.compose, orig_keys=self.key, nearest_interp=True, to_tensor=True)
        out = inv({self.key: self.pre, "_mapped": MetaTensor(torch.from_numpy(x))})["_mapped"]
        out = np.asarray(out.detach().cpu().numpy())
        if tuple(out.shape[1:]) != self.file_shape:
            raise RuntimeError(f"the bundle's inverse preprocessing gave {out.shape[1:]}, not the scan's "
                               f"{self.file_shape}")
        vals = _cast(out[0], arr.dtype)
        vals[out[1] < 0.5] = fill_value(arr.dtype)
        return self.reorder.display(vals)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return values > 0.5
    if dtype.kind in "iu":
        return np.rint(values).astype(dtype)
    return values.astype(dtype if dtype.kind == "f" else np.float32)

