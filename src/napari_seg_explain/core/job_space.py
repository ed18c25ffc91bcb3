"""Explain jobs for models with their own preprocessing (nnU-Net folders, MONAI bundles).

The scan is preprocessed as the model's own tool does it; the RoI, the ground truth and the pool go onto that
grid; one patch of the model's patch size around the RoI is explained there (a 2-D configuration: the
plane of the model's slicing axis holding the RoI); the maps come back onto the scan's display grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError
from .jobs import ExplainJob

if TYPE_CHECKING:
    from .images import Image
    from .models.space import PreprocessingModel


def job_in_model_space(model: "PreprocessingModel", image: "Image", method: str, *, config: Any = None,
                       slice_index: int | None = None, roi_box: Sequence[int] | None = None,
                       roi_mask: str | None = None, label: str | None = None, pool: Sequence[str] | None = None,
                       pool_exclude: int = 5, target: str | int = 1, image_path: str | None = None,
                       roi_name: str = "RoI 1", roi_point: Sequence[int] | None = None,
                       roi: np.ndarray | None = None, label_array: np.ndarray | None = None) -> ExplainJob:
    """The ExplainJob for ``method`` on ``image`` (display grid) explained on ``model``'s preprocessed grid.

    ``roi_box`` on a volume: ``Z0 Y0 X0 Z1 Y1 X1``, or ``Y0 X0 Y1 X1`` with ``slice_index``. ``roi`` /
    ``label_array``: display-grid arrays given directly (the napari widget)."""
    from .explainers import registry
    from .images import spatial_geometry
    from .job_inputs import array_from_file, resolve_roi, roi_from_point

    spec = registry.get(method)
    cfg = config if config is not None else spec.config()
    cls = model.card.class_index(target)
    shape = image.spatial_shape
    if roi_box and image.spatial_ndim == 3 and len(roi_box) == 4 and slice_index is not None:
        y0, x0, y1, x1 = roi_box
        roi_box = (slice_index, y0, x0, slice_index + 1, y1, x1)
    if roi is None:
        roi = resolve_roi(shape, roi_box, roi_mask, None, required=spec.uses("roi") and not roi_point)
    if roi_point:
        picked = roi_from_point(model, image, None, roi_point, cls)
        roi = picked if roi is None else picked & roi
    lab = label_array if label_array is not None else (
        array_from_file(label, None, shape, "--label") if label else None)
    lab = lab if spec.uses("label") else None
    arr, space = model.prepared(image)
    roi_m = space.model(np.asarray(roi, bool)) if roi is not None else None
    lab_m = space.model(np.asarray(lab)) if lab is not None else None
    if roi_m is not None and not roi_m.any():
        raise UserError("the RoI lies outside what the model sees of the scan (e.g. nnU-Net crops the scan to its "
                        "non-zero voxels): draw it over the segmented structure")
    warnings: list[str] = []
    patch = tuple(model.card.input_size or arr.shape[1:])
    block = getattr(cfg, "patch", 8)
    if model.card.spatial_dims == 2:
        z = _model_plane(roi_m)
        arr_e, roi_e = arr[:, z], roi_m[z] if roi_m is not None else None
        lab_e = lab_m[z] if lab_m is not None else None
        the_pool = _pool(model, pool, block, image_path, [arr[:, k] for k in range(arr.shape[1])
                                                            if abs(k - z) > pool_exclude], warnings) \
            if spec.uses("pool") else None
        plane = (slice(z, z + 1),)
    else:
        arr_e, roi_e, lab_e = arr, roi_m, lab_m
        the_pool = _pool(model, pool, block, image_path, [arr], warnings, itself=True) if spec.uses("pool") else None
        plane = ()
    crop: tuple[slice, ...] = ()
    if roi_e is not None:
        from .orient import context_box

        crop = context_box(roi_e, patch, tuple(arr_e.shape[1:]))
        arr_e, roi_e = arr_e[(slice(None), *crop)], roi_e[crop]
        lab_e = lab_e[crop] if lab_e is not None else None
    full = tuple(arr.shape[1:])
    names = list(model.card.classes)
    geometry = spatial_geometry(image) | {"slice_index": None, "slice_axis": None}
    if len(model.channel_names) == arr.shape[0]:  # e.g. nnU-Net's dataset.json: T1, T1c, T2, FLAIR
        geometry["channel_names"] = list(model.channel_names)
    job = ExplainJob(method, np.ascontiguousarray(arr_e), roi_e, cls, config=cfg, label=lab_e, pool=the_pool,
                     pool_key=f"scans in {', '.join(map(str, pool))}" if (pool and spec.uses("pool")) else "",
                     geometry=geometry, roi_name=roi_name, warnings=warnings,
                     class_name=names[cls] if cls < len(names) else f"class {cls}",
                     crop=(*plane, *crop) if (plane or crop) else None, full_shape=full, reorder=space)
    job.deviations = list(model.explain_deviations)
    return job


def _model_plane(roi: np.ndarray | None) -> int:
    """The one plane (first axis of the model's grid) holding the RoI, for a 2-D configuration."""
    if roi is None:
        raise UserError("a 2-D configuration explains one plane: draw a RoI on it")
    zs = np.flatnonzero(roi.reshape(roi.shape[0], -1).any(axis=1))
    if len(zs) != 1:
        raise UserError(f"this 2-D model works plane by plane along its first axis, but the RoI spans {len(zs)} of "
                        "its planes: draw the RoI on a single slice in the model's slicing direction")
    return int(zs[0])


def _pool(model: "PreprocessingModel", paths: Sequence[str] | None, block: Any, image_path: str | None,
          fallback: list[np.ndarray], warnings: list[str], itself: bool = False):
    """Other scans preprocessed as the model's tool does (the paper's setting), else ``fallback`` arrays."""
    from .perturb.pools import pool_from_arrays, pool_from_paths

    if paths:  # a recipe: the other scans are preprocessed when the job runs (in the worker, in napari)
        files = list(paths)
        return lambda m, blk: pool_from_paths(m, files, blk, exclude_source=image_path)
    if itself:
        warnings.append("no other volumes to draw replacement blocks from: crops of the explained volume itself "
                        "are used (a recorded fallback). Give other volumes as the pool for the paper's setting.")
        return pool_from_arrays(model, fallback, block, source="the explained volume itself (fallback)")
    if not fallback:
        raise UserError("the scan has no plane far enough from the explained one to draw replacement blocks from; "
                        "give other scans as the pool")
    return pool_from_arrays(model, fallback, block, source=f"{len(fallback)} other planes of the preprocessed scan")
