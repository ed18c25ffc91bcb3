"""Models with their own preprocessing (nnU-Net v2 folders, MONAI bundles) in the dock.

Such a model (a :class:`~napari_seg_explain.core.models.space.PreprocessingModel`) segments and explains whole
scans: segmenting runs the tool's own pipeline (:meth:`segment_scan`, a progress generator: the bar moves and
Cancel acts between folds); a Run explains one patch of the model's patch size around the RoI on the model's
preprocessed grid (:func:`~napari_seg_explain.core.job_space.job_in_model_space`), and the maps come back on
the volume's display grid, into ``(slices, rows, cols)`` layers as a 3-D model's runs do. A 2-D configuration
explains the plane of its grid holding the RoI: a rectangle drawn on one slice (no extra slices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError
from .. import layers as L
from . import contrasts, inputs, pools

if TYPE_CHECKING:
    from napari.layers import Layer

    from ...core.images import Image
    from ...core.models import SegmentationModel
    from ...core.progress import Progress
    from .controller import Controller
    from .plans import Choices, Estimate, PlannedRun


def is_model_space(model: "SegmentationModel | None") -> bool:
    """A model that brings its own preprocessing and segments whole scans."""
    from ...core.models.space import PreprocessingModel

    return isinstance(model, PreprocessingModel)


def scan_image(layer: "Layer", ctl: "Controller | None" = None, chosen: tuple[str, ...] = ()) -> "Image":
    """The volume layer as a core ``Image`` on its display grid ``(1, rows, cols, slices)`` with the layer's
    source geometry (the plugin's reader) or its scale (a plain array), as the model's tool would read the file;
    with ticked contrasts (``chosen``), their layers stacked as channels ``(C, rows, cols, slices)``."""
    if not inputs.is_volume(layer):
        raise UserError(f"this model segments and explains whole scans: choose a volume layer, not {layer.name!r} "
                        f"{tuple(layer.data.shape)}")
    if chosen and ctl is not None:
        vol, names = contrasts.stacked_volume(ctl.viewer, layer, chosen, ctl.model)
        return dataclasses.replace(inputs.core_image(layer, vol[:1]), data=vol, channel_names=tuple(names))
    vol = inputs.volume_of(layer)
    img = inputs.core_image(layer, vol)
    names = img.channel_names if len(img.channel_names) == vol.shape[0] else ()
    return dataclasses.replace(img, data=vol, channel_names=names)


def segment_scan_job(model: Any, image: "Image") -> Generator["Progress", None, np.ndarray]:
    """The tool's own segmentation of the whole scan (worker thread); labels in layer order (slices, rows, cols)."""
    model.check_channels(image.n_channels)
    labels = yield from model.segment_scan(image)
    return np.ascontiguousarray(np.moveaxis(np.asarray(labels), -1, 0))


def _roi_slices(c: "Choices", model: Any) -> "Choices":
    """A 2-D configuration explains one plane: the shape's own slice only."""
    return dataclasses.replace(c, roi_slices=0) if model.card.spatial_dims == 2 else c


def _pool_paths(spec: Any, c: "Choices") -> list[str] | None:
    """Other scans for the pool: the chosen folder, else None (the core falls back and records a warning)."""
    from pathlib import Path

    if not spec.uses("pool") or c.pool != pools.POOL_FOLDER:
        return None
    folder = c.pool_folder.strip()
    if not folder or not Path(folder).is_dir():
        raise UserError(f"the Pool folder {folder!r} is not a folder: choose a folder of scans (NIfTI, ...) "
                        "with the button next to it")
    return [folder]


def plan_model_space(ctl: "Controller", c: "Choices", image: "Layer") -> list["PlannedRun"]:
    """The jobs of a Run for a model with its own preprocessing: the RoI mask (a shape on one slice, extruded
    over ± 'RoI slices' for a 3-D configuration; a Labels layer) and the ground truth in display order go to
    :func:`~napari_seg_explain.core.job_space.job_in_model_space`; the results come back on the whole volume."""
    from ...core.explainers import registry
    from ...core.job_space import job_in_model_space
    from .plans import PlannedRun

    spec = registry.get(c.method)
    if c.target < 0:
        raise UserError("choose the class to explain")
    cfg = ctl.config(spec, c.values)
    model = ctl.loaded.model
    scan = scan_image(image, ctl, c.contrasts)
    gt = ctl.ground_truth(spec, c)
    label = inputs.label_volume(gt, image, c.target) if gt is not None else None
    pool = _pool_paths(spec, c)
    meta = image.metadata.get("seg_explain") if isinstance(image.metadata, dict) else None
    source = (meta or {}).get("source") if isinstance(meta, dict) else None
    planned: list[PlannedRun] = []
    for roi, roi_name in ctl.rois_3d(spec, _roi_slices(c, model), image):
        desc = roi.description if roi is not None else "the whole volume"
        job = job_in_model_space(model, scan, spec.name, config=cfg, roi=roi.mask if roi is not None else None,
                                 label_array=label, pool=pool, target=c.target, roi_name=roi_name,
                                 image_path=str(source) if source else None)
        job.geometry = {**job.geometry, **inputs.explanation_geometry(image, None), "roi": desc}
        if c.contrasts:  # the model's own channel names when it has them (nnU-Net), else the layers'
            job.geometry = {"channel_names": list(scan.channel_names), **job.geometry,
                            "contrast_layers": list(c.contrasts)}
        if c.class_name:
            job.class_name = c.class_name
        if pool is not None:
            job.pool_key = f"scans in {pool[0]}"
        run_id = job.run_id(model)
        if any(p.run_id == run_id for p in planned):
            continue  # two identical shapes: one run
        z = roi.slice_index if roi is not None else inputs.current_slice(ctl.viewer, image, check_view=False)
        base = f"{roi_name}{L.SEP}{c.class_name}" if c.class_name else roi_name
        run_label = ctl.runs.label_for(run_id, spec.name, base, {p.label for p in planned})
        planned.append(PlannedRun(job, L.SliceGeometry.from_layer(image, z, whole=True), run_id, run_label, desc,
                                  None))
    return planned


def estimate_model_space(ctl: "Controller", c: "Choices") -> "Estimate":
    """The cost line without preprocessing the scan (the estimate runs on every change): the RoIs are checked,
    the upper bound of forward passes is the method's for one patch of the model's patch size per RoI (with the
    smallest RoI)."""
    from ...core.explainers import registry
    from .plans import Estimate

    image = ctl.layer(c.image)
    model = ctl.loaded.model
    if image is None or not inputs.is_volume(image):
        return Estimate("Cannot run yet: this model explains whole scans; choose a volume layer")
    spec = registry.get(c.method)
    cfg = ctl.config(spec, c.values)
    rois = ctl.rois_3d(spec, _roi_slices(c, model), image)
    _pool_paths(spec, c)
    patch = tuple(int(s) for s in (model.card.input_size or ()))
    plane = " (the model plane holding the RoI)" if model.card.spatial_dims == 2 else ""
    what = (f"{model.format}: the whole scan preprocessed as the model's tool does, one "
            f"{'x'.join(map(str, patch)) or 'model'} patch around the RoI{plane}")
    if spec.estimate is None or not patch:
        return Estimate(f"{what}. Cost: {spec.title} gives no estimate.", ok=True)
    smallest = np.zeros(patch, bool)  # where the RoI lands on the model's grid is known only after preprocessing:
    smallest[tuple(s // 2 for s in patch)] = True  # the smallest RoI leaves the most blocks to perturb (upper bound)
    passes = len(rois) * int(spec.estimate(cfg, smallest))
    runs = f"{len(rois)} runs, " if len(rois) > 1 else ""
    return Estimate(f"{what}. Cost: {runs}at most {passes:,} forward pass{'' if passes == 1 else 'es'} of one patch "
                    f"each on {model.device.type}.", float("nan"), passes, [], ok=True)
