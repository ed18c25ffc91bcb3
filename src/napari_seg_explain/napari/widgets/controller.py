"""What the dock knows and decides, without Qt: the loaded model, the runs, and the ExplainJobs made from layers.

The dock reads its widgets into a :class:`Choices` (plain values and layer names); :meth:`Controller.plan`
turns them into one :class:`PlannedRun` per RoI (one, or every shape of the RoI layer): the explained plane,
the RoI, the ground truth and the pool of that RoI's slice, the method's config from the generated form, an
:class:`~napari_seg_explain.core.jobs.ExplainJob`, its run id and the label its layers are named with. Every
input problem the user can fix is a :class:`~napari_seg_explain.core.errors.UserError` saying what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError
from ...core.jobs import shared_roi, shares_runs
from .. import layers as L
from . import contrasts, inputs, jobs, model_space_runs, pools
from .plans import Choices, Estimate, PlannedRun  # noqa: F401 - re-exported for the dock and tasks
from .run_store import RunRecord, RunStore

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ...core.explainers.base import ExplainerSpec
    from ...core.models import SegmentationModel

NO_ROI_NAME = "whole image"  # the RoI part of a run's label when a method explains the whole image


class Controller:
    """The dock's state: the loaded model and the runs shown in the viewer."""

    def __init__(self, viewer: "napari.Viewer") -> None:
        self.viewer = viewer
        self.loaded: jobs.LoadedModel | None = None
        self.runs = RunStore(viewer)

    @property
    def model(self) -> "SegmentationModel | None":
        return self.loaded.model if self.loaded else None

    def layer(self, name: str) -> "Layer | None":
        return self.viewer.layers[name] if name and name in self.viewer.layers else None


    def ground_truth(self, spec: "ExplainerSpec", c: Choices) -> "Layer | None":
        """The chosen ground-truth layer when the method uses a label, else None (a UserError if it is gone)."""
        if not (c.ground_truth and spec.uses("label")):
            return None
        gt = self.layer(c.ground_truth)
        if gt is None:
            raise UserError(f"the ground-truth layer {c.ground_truth!r} no longer exists")
        return gt
    def checked_image(self, name: str) -> "Layer":
        """The image layer ``name``, once a model is loaded and the layer can be fed to it (else UserError)."""
        if self.loaded is None:
            raise UserError("load a model first ('Load sample model' or choose a model file)")
        image = self.layer(name)
        if image is None:
            raise UserError("open or choose an image layer first")
        inputs.check_image_layer(image)
        return image

    def config(self, spec: "ExplainerSpec", values: dict[str, Any]) -> Any:
        """The method's config from the form (a batch size of 0 is automatic: the engine keeps each batch under
        :data:`jobs.BATCH_SECONDS` in the widget, so that Cancel acts well within a second)."""
        return spec.make_config(**values)

    def rois(self, spec: "ExplainerSpec", c: Choices, image: "Layer",
             z: int | None) -> list[tuple[inputs.RoI | None, str]]:
        """``(RoI, name)`` per run: the chosen shape ('RoI 1' for shape 0 of layer 'RoI'), every shape, the
        non-zero pixels of a Labels layer, or no RoI when the method does not require one."""
        return self._rois(spec, c, lambda lay: inputs.roi_from_labels(lay, image, z),
                          lambda lay, i: inputs.roi_from_shapes(self.viewer, lay, image, z, i),
                          "draw a rectangle over the structure, or choose a Shapes or Labels layer")

    def is_3d(self, image: "Layer | None") -> bool:
        """A 3-D model, or a model with its own preprocessing (nnU-Net, MONAI bundle, 2-D configurations too), on
        a volume layer: Run explains the whole volume (:meth:`plan_3d`, :func:`.model_space_runs.plan_model_space`)."""
        return (self.loaded is not None and image is not None and inputs.spatial_ndim(image) == 3
                and (self.loaded.model.card.spatial_dims == 3 or self.model_space) and inputs.is_volume(image))

    @property
    def model_space(self) -> bool:
        """The loaded model brings its own preprocessing (:mod:`.model_space_runs`)."""
        return self.loaded is not None and model_space_runs.is_model_space(self.loaded.model)

    def rois_3d(self, spec: "ExplainerSpec", c: Choices, image: "Layer") -> list[tuple[inputs.RoI | None, str]]:
        """3-D RoIs (display order): shapes extruded over ± ``c.roi_slices`` slices, or a Labels layer's voxels."""
        return self._rois(spec, c, lambda lay: inputs.roi_volume_from_labels(lay, image),
                          lambda lay, i: inputs.roi_volume_from_shapes(self.viewer, lay, image, int(c.roi_slices), i),
                          "draw a rectangle over the structure on one slice (it covers that slice ± 'RoI slices'), "
                          "or choose a Labels layer painted across slices")

    def _rois(self, spec: "ExplainerSpec", c: Choices, from_labels: Any, from_shape: Any,
              how: str) -> list[tuple[inputs.RoI | None, str]]:
        """The RoIs of the chosen layer (2-D or 3-D, by the two readers given); ``how`` says how to draw one."""
        if not c.roi:
            if spec.uses("roi"):
                raise UserError(f"{spec.title} needs a RoI: press 'Draw RoI' and {how}")
            return [(None, NO_ROI_NAME)]
        layer = self.layer(c.roi)
        if layer is None:
            raise UserError(f"the RoI layer {c.roi!r} no longer exists")
        if L.layer_kind(layer) != "shapes":
            return [(from_labels(layer), layer.name)]
        indices = range(len(layer.data)) if c.every_shape and len(layer.data) else [inputs.pick_shape_index(layer)]
        return [(from_shape(layer, i), f"{layer.name} {i + 1}") for i in indices]

    def plan_3d(self, c: Choices, image: "Layer") -> list[PlannedRun]:
        """A 3-D model's jobs: the whole volume in display order through the core's ``volume_context`` (model
        voxel order, context box, pool fallback); results come back full-volume in display order and go into
        ``(slices, rows, cols)`` layers (``SliceGeometry.whole``). The view is not checked: the 3-D view works."""
        from ...core.compat import input_warnings
        from ...core.explainers import registry
        from ...core.job_inputs import volume_context
        from ...core.jobs import ExplainJob
        from ...core.orient import reorder_for

        spec = registry.get(c.method)
        if c.target < 0:
            raise UserError("choose the class to explain")
        cfg = self.config(spec, c.values)
        model = self.loaded.model
        vol, names = contrasts.stacked_volume(self.viewer, image, c.contrasts, model)
        core = inputs.core_image(image, vol)
        reorder = reorder_for(core, model.card.orientation)
        gt = self.ground_truth(spec, c)
        label = inputs.label_volume(gt, image, c.target) if gt is not None else None
        unlike = input_warnings(model.card, vol, tuple(float(s) for s in core.spacing))  # the same for every RoI
        planned: list[PlannedRun] = []
        for roi, roi_name in self.rois_3d(spec, c, image):
            warnings = list(unlike)  # volume_context may add its pool fallback note
            recipe, pool_desc = (pools.volume_pool(c.pool, self.viewer, image, c.pool_folder.strip(), reorder)
                                 if spec.uses("pool") else (None, ""))
            arr, mask, lab, pool, box = volume_context(model, core, vol, roi.mask if roi is not None else None, label,
                                                       recipe, spec.uses("pool"), getattr(cfg, "patch", 8), warnings)
            desc = roi.description if roi is not None else "the whole volume"
            z = roi.slice_index if roi is not None else inputs.current_slice(self.viewer, image, check_view=False)
            job = ExplainJob(spec.name, arr, mask, c.target, cfg, lab, pool=pool,
                             pool_key=pool_desc if recipe is not None else "",
                             geometry=inputs.explanation_geometry(image, None) | {"roi": desc}
                             | ({"channel_names": names, "contrast_layers": names} if names else {}),
                             roi_name=roi_name, class_name=c.class_name, warnings=warnings, **box)
            run_id = job.run_id(model)
            if any(p.run_id == run_id for p in planned):
                continue  # two identical shapes: one run
            base = f"{roi_name}{L.SEP}{c.class_name}" if c.class_name else roi_name
            run_label = self.runs.label_for(run_id, spec.name, base, {p.label for p in planned})
            planned.append(PlannedRun(job, L.SliceGeometry.from_layer(image, z, whole=True), run_id, run_label,
                                      desc, None))
        return planned

    def plan(self, c: Choices) -> list[PlannedRun]:
        """The jobs of a Run (GUI thread: copies and rasterisation only); raises UserError with advice."""
        from ...core.compat import input_warnings
        from ...core.explainers import registry
        from ...core.jobs import ExplainJob

        image = self.checked_image(c.image)
        if self.model_space:  # whole scans only (a 2-D layer: a UserError saying so)
            return model_space_runs.plan_model_space(self, c, image)
        if self.is_3d(image):
            return self.plan_3d(c, image)
        z = inputs.current_slice(self.viewer, image)  # raises when the viewer does not show a 2-D slice
        spec = registry.get(c.method)
        if c.target < 0:
            raise UserError("choose the class to explain")
        cfg = self.config(spec, c.values)
        planned: list[PlannedRun] = []
        for roi, roi_name in self.rois(spec, c, image, z):
            zz = roi.slice_index if roi is not None and roi.slice_index is not None else z
            gt = self.ground_truth(spec, c)
            label = inputs.label_plane(gt, image, zz, c.target) if gt is not None else None
            pool = (pools.pool_spec(c.pool, self.viewer, image, zz, c.pool_folder.strip(), c.exclude)
                    if spec.uses("pool") else None)
            pool = contrasts.stacked_pool(pool, self.viewer, image, c.contrasts, self.loaded.model)
            desc = roi.description if roi is not None else "the whole image"
            plane, names = contrasts.stacked_plane(self.viewer, image, zz, c.contrasts, self.loaded.model)
            job = ExplainJob(spec.name, plane, roi.mask if roi is not None else None, c.target,
                             cfg, label, pool=pool.build if pool is not None else None,
                             pool_key=pool.description if pool is not None else "",
                             geometry=inputs.explanation_geometry(image, zz)
                             | {"roi": roi.description if roi is not None else None}
                             | ({"channel_names": names, "contrast_layers": names} if names else {}),
                             roi_name=roi_name, class_name=c.class_name,
                             warnings=input_warnings(self.loaded.model.card, plane, tuple(image.scale[-2:])))
            run_id = job.run_id(self.loaded.model)
            if any(p.run_id == run_id for p in planned):
                continue  # two identical shapes: one run
            base = f"{roi_name}{L.SEP}{c.class_name}" if c.class_name else roi_name
            run_label = self.runs.label_for(run_id, spec.name, base, {p.label for p in planned})
            planned.append(PlannedRun(job, L.SliceGeometry.from_layer(image, zz), run_id, run_label, desc, pool))
        return planned

    def explained_slices(self, c: Choices) -> list[int]:
        """The slices of a volume a Run would explain (a shape drawn on a slice explains that slice, other RoIs
        the slice shown), without rasterising any RoI; ``[]`` for a 2-D image or when the inputs are not ready."""
        image = self.layer(c.image)
        if image is None or not inputs.is_volume(image) or self.is_3d(image):
            return []
        try:
            z = inputs.current_slice(self.viewer, image)
            roi = self.layer(c.roi)
            if roi is None or L.layer_kind(roi) != "shapes" or not len(roi.data):
                return [int(z)]
            indices = range(len(roi.data)) if c.every_shape else [None]
            return [int(inputs.shape_slice(self.viewer, roi, image, z, i)) for i in indices]
        except Exception:  # noqa: BLE001 - the slice line must never break the widget
            return []

    def check_inputs(self, spec: "ExplainerSpec", c: Choices, image: "Layer", slices: list[int | None]) -> None:
        """What :meth:`plan` would refuse, checked before Run without building any job: the ground truth and the
        pool of every explained slice (UserError naming the control to change)."""
        for zz in dict.fromkeys(slices):
            if (gt := self.ground_truth(spec, c)) is not None:
                inputs.label_plane(gt, image, zz, c.target)
            if spec.uses("pool"):
                pools.pool_spec(c.pool, self.viewer, image, zz, c.pool_folder.strip(), c.exclude)

    def estimate(self, c: Choices) -> Estimate:
        """The cost shown before Run: which slice it explains when that is not the one shown, the spec's upper
        bound of forward passes and about how long the run takes at the speed measured at load (adaptive N: the
        passes it is expected to spend, :func:`expected_passes`); or what would stop the Run."""
        from ...core.explainers import registry

        if self.loaded is None:
            return Estimate("Cost: load a model to see an estimate.")
        image = self.layer(c.image)
        if image is None:
            return Estimate("Cost: choose an image.")
        where = ""
        try:
            inputs.check_image_layer(image)
            if self.model_space:
                return model_space_runs.estimate_model_space(self, c)
            if self.is_3d(image):
                return self.estimate_3d(c)
            z = inputs.current_slice(self.viewer, image)
            spec = registry.get(c.method)
            plane_shape = L.SliceGeometry.plane_shape_of(image)
            cfg = self.config(spec, c.values)
            rois = self.rois(spec, c, image, z)
            slices = [roi.slice_index if roi is not None and roi.slice_index is not None else z for roi, _ in rois]
            if inputs.is_volume(image) and any(zz != z for zz in slices):
                where = f"Run {inputs.explained_text([int(zz) for zz in slices], z)}. "
            self.check_inputs(spec, c, image, slices)
            if spec.estimate is None:
                return Estimate(f"{where}Cost: {spec.title} gives no estimate.", slices=slices, ok=True)
            groups = shared_groups(shares_runs(spec.name, cfg, 2), [roi.mask if roi is not None else None
                                                                    for roi, _ in rois], slices)
            uppers = [int(spec.estimate(cfg, shared_roi(g) if len(g) > 1 else g[0] if g[0] is not None
                                        else plane_shape)) for g in groups]
            passes, expected = sum(uppers), sum(expected_passes(cfg, u) for u in uppers)
            spi = jobs.image_seconds(self.loaded, plane_shape)
            runs = runs_text(len(rois), len(groups))
            secs = expected * spi
            device = self.loaded.model.device.type
            if not np.isfinite(secs):
                took = f"on {device} (not timed at load)"
            else:
                took = (("under a second" if secs < 1 else f"about {jobs.format_seconds(secs)}")
                        + f" on {device} ({1000 * spi:.1f} ms per image, timed at load)")
            adaptive = f" (adaptive N: about {expected:,})" if expected != passes else ""
            text = f"{where}Cost: {runs}at most {passes:,} forward pass{'' if passes == 1 else 'es'}{adaptive}, {took}."
            return Estimate(text, secs, expected, slices, ok=True)
        except UserError as exc:
            return Estimate(f"{where}Cannot run yet: {exc}")
        except Exception as exc:  # noqa: BLE001 - the estimate must never break the widget
            return Estimate(f"Cost: no estimate ({type(exc).__name__})")

    def estimate_3d(self, c: Choices) -> Estimate:
        """The cost line of a 3-D model: the jobs' upper bound of forward passes on their context boxes."""
        plans = self.plan_3d(c, self.layer(c.image))
        if not plans:
            return Estimate("Cannot run yet: nothing to explain")
        spec = plans[0].spec
        box = tuple(plans[0].job.image.shape[1:])
        what = f"3-D: the whole volume, a {'x'.join(map(str, box))} context box around the RoI"
        what += anisotropy_note(self.layer(c.image))
        if spec.estimate is None:
            return Estimate(f"{what}. Cost: {spec.title} gives no estimate.", ok=True)
        from ...core.jobs import group_bound, group_jobs

        groups = group_jobs([p.job for p in plans])
        passes = sum(group_bound([plans[i].job for i in g], box) or 0 for g in groups)
        runs = runs_text(len(plans), len(groups))
        return Estimate(f"{what}. Cost: {runs}at most {passes:,} forward pass{'' if passes == 1 else 'es'} of one "
                        f"box each on {self.loaded.model.device.type}.", float("nan"), passes, [], ok=True)

    # ---------------------------------------------------------------------------- save / open
    def segmentation_layers(self) -> list["Layer"]:
        return [lay for lay in self.viewer.layers if L.layer_kind(lay) == "labels"
                and L.result_kind(lay) == "segmentation"]

    def save(self, folder: str | Path) -> Path:
        """Write every run and segmentation into ``folder`` (:mod:`.results_io`); returns the index path."""
        from .results_io import save_results, segmentation_entry

        return save_results(folder, list(self.runs), [segmentation_entry(lay) for lay in self.segmentation_layers()])

    def open(self, folder: str | Path, colorbar_on: Callable[[], bool]) -> tuple[list["Layer"], list[RunRecord]]:
        """Read a results folder back: its segmentations, and every run with its layers (a run already shown,
        same run id, is updated in place). Returns the layers and the runs."""
        from .results_io import open_results

        saved, segs = open_results(folder)
        added = [L.add_or_update(self.viewer, (arr, {"name": name, "opacity": 0.5, "metadata": meta}
                                               | geom.layer_kwargs(), "labels")) for arr, name, geom, meta in segs]
        records = []
        for s in saved:
            title, _ = L.result_layers(s.expl.method, s.expl.map)
            label = self.runs.label_for(s.expl.run_id, s.expl.method, s.label or L.run_label(s.expl))
            rec = self.runs.add_now(s.expl.run_id, title, label, s.expl, s.geom,
                                    L.explanation_layer_data(s.expl, s.geom, label), colorbar_on,
                                    f"{s.expl.geometry.get('roi') or 'the whole image'}; opened from {folder}")
            records.append(rec)
            added += list(rec.layers.values())
        return added, records


def shared_groups(share: bool, masks: list[np.ndarray | None], slices: list[Any]) -> list[list[np.ndarray | None]]:
    """The RoI masks of a 2-D Run grouped as its jobs will run (:func:`~napari_seg_explain.core.jobs.group_jobs`):
    with ``share`` (:func:`~napari_seg_explain.core.jobs.shares_runs`) the RoIs of one slice share one run (same
    plane, pool and config); else each runs on its own."""
    groups: dict[Any, list[np.ndarray | None]] = {}
    for k, (mask, zz) in enumerate(zip(masks, slices)):
        key = ("slice", zz) if share and mask is not None else ("own", k)
        groups.setdefault(key, []).append(mask)
    return list(groups.values())


def runs_text(n_rois: int, n_runs: int) -> str:
    """The cost line's note on several RoIs: '3 runs, ', '3 RoIs as one shared run, ', '3 RoIs as 2 runs ...'."""
    if n_rois <= 1:
        return ""
    if n_runs == n_rois:
        return f"{n_rois} runs, "
    if n_runs == 1:
        return f"{n_rois} RoIs as one shared run, "
    return f"{n_rois} RoIs as {n_runs} runs (RoIs on one slice share one), "


#: adaptive N spends about this share of the exact mode's estimation draws (the sample, the paper's S, N, tau: 0.63;
#: docs/methods.md "Speed": 0.46 of all passes); the cost line's time counts it, its upper bound does not
ADAPTIVE_SHARE = 0.6


def expected_passes(cfg: Any, upper: int) -> int:
    """The passes the cost line's time counts: the upper bound, or for adaptive N (a config with ``adaptive``,
    ``screen`` and ``n``: PdCR) the unperturbed pass, S screening draws and ``ADAPTIVE_SHARE`` of N per block."""
    if not getattr(cfg, "adaptive", False) or not hasattr(cfg, "screen") or not hasattr(cfg, "n"):
        return upper
    s, n = int(cfg.screen), int(cfg.n)
    blocks = (upper - 1) / max(1, s + n)
    return int(round(1 + blocks * (s + ADAPTIVE_SHARE * n)))


def anisotropy_note(image: "Layer | None", ratio: float = 2.0) -> str:
    """A note when a volume's voxels are much longer along one axis (thick slices): cubic blocks then span very
    different distances; a block size per axis (the Patch parameter, e.g. 4 8 8 from the command line) fits better."""
    if image is None:
        return ""
    spacing = [abs(float(s)) for s in image.scale[-3:]]
    if len(spacing) < 3 or min(spacing) <= 0 or max(spacing) / min(spacing) < ratio:
        return ""
    return (f" (anisotropic voxels {' x '.join(f'{s:g}' for s in spacing)}: a cubic block spans "
            f"{max(spacing) / min(spacing):.1f} times more along one axis; consider a smaller Patch)")
