"""Resolve file-level inputs (image, slice, RoI box or mask file, label file, pool paths) into an ExplainJob.

What the command line (and scripts) give is turned into arrays here, in core, once: the explained plane of a
volume for a 2-D model (or the whole volume for a 3-D one), the RoI, the ground truth, the perturbation
pool and the geometry a result needs to be written back over the scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .compat import input_warnings
from .errors import UserError
from .jobs import ExplainJob

if TYPE_CHECKING:
    from .images import Image
    from .models import SegmentationModel


def explained_slice(image: "Image", model: "SegmentationModel", z: int | None, what: str = "IMAGE") -> int | None:
    """The slice a 2-D model explains on a volume (required there, except on a one-slice volume: 0); None for
    2-D images and 3-D models."""
    if model.card.spatial_dims == 3:
        if image.spatial_ndim != 3:
            raise UserError(f"model {model.name!r} is 3-D but {what} is a 2-D image")
        if z is not None:
            raise UserError(f"model {model.name!r} is 3-D: it explains the whole volume, drop --slice")
        return None
    if image.spatial_ndim == 3 and z is None and image.n_slices == 1:
        return 0  # a one-slice volume (a single DICOM file) is a 2-D image
    if image.spatial_ndim == 3 and z is None:
        raise UserError(f"{what} is a volume of {image.n_slices} slices: choose one with --slice Z "
                        f"(0..{image.n_slices - 1})")
    if image.spatial_ndim == 2 and z not in (None, 0):
        raise UserError(f"--slice {z} given, but {what} is a 2-D image")
    if z is not None and not 0 <= z < image.n_slices:
        raise UserError(f"--slice {z} is outside the volume (0..{image.n_slices - 1})")
    return z


def explained_array(image: "Image", z: int | None) -> np.ndarray:
    """``(C, *S)``: the slice ``z`` of a volume, the 2-D image, or the whole volume (``z`` None, 3-D)."""
    return image.slice2d(z) if (z is not None or image.spatial_ndim == 2) else np.asarray(image.data)


def array_from_file(path: str, z: int | None, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A label or RoI mask file as an array of the explained ``shape`` (its slice ``z`` for a volume)."""
    from .images import read_image

    img = read_image(path)
    arr = img.slice2d(z)[0] if (z is not None and img.spatial_ndim == 3) else (
        img.slice2d()[0] if img.spatial_ndim == 2 else img.data[0])
    if arr.shape != tuple(shape):
        raise UserError(f"{what} {path} has shape {arr.shape} but the explained image is {tuple(shape)}; give a "
                        "file on the image's grid")
    return arr


def resolve_roi(shape: tuple[int, ...], box: Sequence[int] | None, mask_path: str | None, z: int | None,
                required: bool) -> np.ndarray | None:
    """RoI from a box (``Y0 X0 Y1 X1`` in 2-D, ``starts stops`` per axis in 3-D) and/or a mask file (intersected)."""
    from .rois import roi_from_bounds, roi_from_box, roi_from_mask

    roi = None
    if box:
        nd = len(shape)
        if len(box) != 2 * nd:
            raise UserError(f"--roi-box needs {2 * nd} numbers on a {nd}-D image: "
                            + ("Y0 X0 Y1 X1" if nd == 2 else "Z0 Y0 X0 Z1 Y1 X1 (slice, row, column; end exclusive)"))
        if nd == 2:
            roi = roi_from_box(shape, *box)
        else:  # slice, row, column as napari shows a volume -> the display array's (row, column, slice)
            z0, y0, x0, z1, y1, x1 = box
            roi = roi_from_bounds(shape, (y0, x0, z0), (y1, x1, z1))
    if mask_path:
        mask = roi_from_mask(array_from_file(mask_path, z, shape, "--roi-mask"), shape)
        roi = mask if roi is None else roi_from_mask(mask & roi, shape)
    if roi is None and required:
        raise UserError("give the region to explain with --roi-box Y0 X0 Y1 X1 or --roi-mask MASK")
    return roi


def roi_from_point(model: "SegmentationModel", image: "Image", z: int | None, point: Sequence[int],
                   target: int) -> np.ndarray:
    """The connected component of the model's class-``target`` prediction under ``point`` (2-D: Y X on the
    explained slice; 3-D models: Z Y X, slice, row, column as the volume is shown)."""
    from scipy import ndimage

    labels = model.segment(image, z) if (z is not None or image.spatial_ndim == 2) else model.segment(image)
    nd = labels.ndim
    if len(point) != nd:
        raise UserError(f"--roi-point needs {nd} numbers on a {nd}-D image: " + ("Y X" if nd == 2 else "Z Y X"))
    idx = tuple(point) if nd == 2 else (point[1], point[2], point[0])
    if not all(0 <= i < s for i, s in zip(idx, labels.shape)):
        raise UserError(f"--roi-point {' '.join(map(str, point))} lies outside the image")
    comp, _ = ndimage.label(labels == target)
    if comp[idx] == 0:
        raise UserError(f"the model segments no pixel of class {target} at --roi-point "
                        f"{' '.join(map(str, point))}: click on the segmented structure")
    return comp == comp[idx]


def resolve_pool(model: "SegmentationModel", image: "Image", z: int | None, block: int,
                 paths: Sequence[str] | None, exclude: int, image_path: str | None):
    """Pool folders/files if given; else other slices of the volume (2-D model); else None (the image itself)."""
    from .perturb.pools import pool_from_paths, pool_from_volume

    if paths:
        return pool_from_paths(model, list(paths), block, exclude_source=image_path)
    if image.spatial_ndim == 3 and z is not None and image.n_slices > 1:
        return pool_from_volume(model, image, z, block, exclude=exclude)
    return None  # the image itself (2-D: outside each block; 3-D: the volume), with a warning  # a lone 2-D image (or a one-slice volume): the image itself, with a warning in the result


def job_from_files(model: "SegmentationModel", image: "Image", method: str, *, config: Any = None,
                   slice_index: int | None = None, roi_box: Sequence[int] | None = None, roi_mask: str | None = None,
                   label: str | None = None, pool: Sequence[str] | None = None, pool_exclude: int = 5,
                   target: str | int = 1, image_path: str | None = None, roi_name: str = "RoI 1",
                   roi_point: Sequence[int] | None = None) -> ExplainJob:
    """The ExplainJob for ``method`` on ``image`` as the command line describes it."""
    from .explainers import registry
    from .images import spatial_geometry
    from .input_checks import check_pixels

    from .models.space import PreprocessingModel

    if isinstance(model, PreprocessingModel):  # nnU-Net folders, MONAI bundles: explained on their own grid
        from .job_space import job_in_model_space

        return job_in_model_space(model, image, method, config=config, slice_index=slice_index, roi_box=roi_box,
                                  roi_mask=roi_mask, label=label, pool=pool, pool_exclude=pool_exclude,
                                  target=target, image_path=image_path, roi_name=roi_name, roi_point=roi_point)
    spec = registry.get(method)
    z = explained_slice(image, model, slice_index)
    arr = explained_array(image, z)
    check_pixels(arr, "the explained image" if z is None else f"slice {z} of the image")
    shape = tuple(arr.shape[1:])
    cls = model.card.class_index(target)
    roi = resolve_roi(shape, roi_box, roi_mask, z, required=spec.uses("roi") and not roi_point)
    if roi_point:
        picked = roi_from_point(model, image, z, roi_point, cls)
        roi = picked if roi is None else picked & roi
    lab = array_from_file(label, z, shape, "--label") if (label and spec.uses("label")) else None
    cfg = config if config is not None else spec.config()
    the_pool = (resolve_pool(model, image, z, getattr(cfg, "patch", 8), pool, pool_exclude, image_path)
                if spec.uses("pool") else None)
    names = list(model.card.classes)
    geometry = spatial_geometry(image) | {"slice_index": z,
                                          "slice_axis": image.spatial_ndim - 1 if z is not None else None}
    if len(model.channel_names) == arr.shape[0] > 1:  # the card names its inputs (T1, T1c, T2, FLAIR)
        geometry["channel_names"] = list(model.channel_names)
    warnings = input_warnings(model.card, arr, explained_spacing(image, z))
    volume = {}
    if model.card.spatial_dims == 3:
        arr, roi, lab, the_pool, volume = volume_context(model, image, arr, roi, lab, the_pool, spec.uses("pool"),
                                                          getattr(cfg, "patch", 8), warnings)
    return ExplainJob(method, arr, roi, cls, config=cfg, label=lab, pool=the_pool, geometry=geometry,
                      roi_name=roi_name, class_name=names[cls] if cls < len(names) else f"class {cls}",
                      warnings=warnings, **volume)


def volume_context(model: "SegmentationModel", image: "Image", arr: np.ndarray, roi: np.ndarray | None,
                    lab: np.ndarray | None, pool: Any, uses_pool: bool, block: Any, warnings: list[str]):
    """A 3-D model explains a context box the size of its patch around the RoI, in its own voxel order."""
    from .orient import context_box, reorder_for
    from .perturb.pools import pool_from_arrays

    reorder = reorder_for(image, model.card.orientation)
    arr = reorder.channels(arr)
    full = tuple(arr.shape[1:])
    roi = reorder.model(roi) if roi is not None else None
    lab = reorder.model(lab) if lab is not None else None
    if uses_pool and pool is None:
        pool = pool_from_arrays(model, [arr], block, source="the explained volume itself (fallback)")
        warnings.append("no other volumes to draw replacement blocks from: crops of the explained volume itself "
                        "are used (a recorded fallback). Give other volumes as the pool for the paper's setting.")
    crop = None
    if roi is not None:
        crop = context_box(roi, tuple(model.card.input_size or full), full)
        arr, roi = arr[(slice(None), *crop)], roi[crop]
        lab = lab[crop] if lab is not None else None
    return arr, roi, lab, pool, {"crop": crop, "full_shape": full, "reorder": reorder}


def explained_spacing(image: "Image", z: int | None) -> tuple[float, ...]:
    """Pixel spacing (mm) of what is explained: the slice's rows and columns, or every axis."""
    sp = tuple(float(s) for s in image.spacing)
    return sp[:2] if (z is not None and image.spatial_ndim == 3) else sp
