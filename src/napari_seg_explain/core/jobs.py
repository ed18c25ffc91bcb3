"""Explain jobs: load a model once, run a list of (image, RoI, class, method, config) jobs.

Every job has a run id: a hash of what determines its result (method, parameters, image, RoI, class,
label, pool, model), so a rerun with identical inputs gets the same id (and napari updates that run's
layers in place) while a second RoI, class or parameter set becomes a run of its own. PdCR jobs on the same
image plane with the same pool and config share one :func:`~.explainers.pdcr.pdcr_multi` run (:func:`group_jobs`),
each still with its own run id and result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError
from .progress import CancelCheck, Progress, ProgressCallback, drive

if TYPE_CHECKING:
    from .models import SegmentationModel
    from .models.space import ModelSpace
    from .orient import Reorder
    from .perturb.pools import TilePool
    from .results import Explanation

#: a pool given as a recipe: ``build(model, block) -> TilePool`` (run in the worker), or ``None``
PoolSource = Callable[["SegmentationModel", int], "TilePool | None"]


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.shape, p.dtype.str)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass
class ExplainJob:
    """One explanation to compute. ``image``: ``(C, *S)`` raw; ``roi``: bool ``S`` (or None if the method allows);
    ``pool``: a TilePool, a :data:`PoolSource` recipe, or None (the method's default)."""

    method: str
    image: np.ndarray
    roi: np.ndarray | None
    target: int = 1
    config: Any = None
    label: np.ndarray | None = None
    pool: "TilePool | PoolSource | None" = None
    pool_key: str = ""  # what the pool is made of (a recipe's identity for the run id)
    geometry: dict[str, Any] = field(default_factory=dict)
    roi_name: str = "RoI 1"
    class_name: str = ""
    warnings: list[str] = field(default_factory=list)  # e.g. input unlike the training data (core.compat)
    crop: tuple[slice, ...] | None = None  # the context box explained, within full_shape (3-D models)
    full_shape: tuple[int, ...] | None = None
    reorder: "Reorder | ModelSpace | None" = None  # model grid -> display grid of the results (3-D models)
    deviations: list[str] = field(default_factory=list)  # from the model's own inference (e.g. nnU-Net folders)

    def __post_init__(self) -> None:
        from .explainers import registry

        self.spec = registry.get(self.method)
        if self.config is None:
            self.config = self.spec.config()
        elif not isinstance(self.config, self.spec.config):
            raise UserError(f"the config for {self.spec.title} must be a {self.spec.config.__name__}, "
                            f"got {type(self.config).__name__}")
        if self.roi is None and self.spec.uses("roi"):
            raise UserError(f"{self.spec.title} needs a RoI: draw one over the structure to explain")

    def run_id(self, model: "SegmentationModel") -> str:
        """Stable id of this run: same inputs, same id (12 hex digits)."""
        cfg = asdict(self.config) if is_dataclass(self.config) else repr(self.config)
        if isinstance(cfg, dict):
            cfg.pop("batch_size", None)  # how the work is batched does not change the result
        pool = self.pool_key or (self.pool.describe() if hasattr(self.pool, "describe") else repr(self.pool))
        return _digest(self.method, cfg, self.target, model.sha256, pool, self.image,
                       self.roi if self.roi is not None else "no roi",
                       self.label if self.label is not None else "no label",
                       {k: self.geometry.get(k) for k in ("source", "layer", "slice_index")})[:12]

    def run(self, model: "SegmentationModel") -> Generator[Progress, None, "Explanation"]:
        """Build the pool (if a recipe), run the method, stamp the run identity on the result."""
        pool = yield from self.build_pool(model)
        expl = yield from self.spec.run_generator(model, self.image, self.roi, self.target, config=self.config,
                                                  pool=pool, label=self.label, geometry=self.geometry)
        return self.finish(model, expl)

    def build_pool(self, model: "SegmentationModel") -> Generator[Progress, None, Any]:
        """The pool to run with: a recipe is built here (one Progress event first), anything else passes."""
        pool = self.pool
        if callable(pool) and self.spec.uses("pool"):
            yield Progress(0, 1, "preparing the perturbation pool")
            pool = pool(model, getattr(self.config, "patch", 8))
        return pool

    def finish(self, model: "SegmentationModel", expl: "Explanation") -> "Explanation":
        """The method's result as this job's: whole display grid, the job's warnings and deviations, its run."""
        self._to_full(expl)
        expl.warnings = [*self.warnings, *expl.warnings]
        expl.deviations = [*self.deviations, *expl.deviations]
        expl.run = {"id": self.run_id(model), "method": self.method, "roi_name": self.roi_name,
                    "class_name": self.class_name or f"class {self.target}", "target": int(self.target)}
        return expl

    def _to_full(self, expl: "Explanation") -> None:
        """Results of a context box in the model's voxel order -> the whole volume in display order."""
        if self.crop is None and self.reorder is None:
            return

        def full(arr: np.ndarray | None, fill: float) -> np.ndarray | None:
            if arr is None:
                return None
            a = np.asarray(arr)
            if self.crop is not None:
                out = np.full(self.full_shape, fill, dtype=a.dtype)
                out[self.crop] = a
                a = out
            return self.reorder.display(a) if self.reorder is not None else a

        expl.map = full(expl.map, np.nan)
        expl.roi = full(expl.roi, False)
        expl.maps = {k: full(v, np.nan if np.asarray(v).dtype.kind == "f" else 0) for k, v in expl.maps.items()}
        if self.crop is not None:
            expl.geometry["context_box"] = [[s.start, s.stop] for s in self.crop]
            expl.geometry["context_box_note"] = ("the model saw this box (model voxel order) around the RoI, not the "
                                                 "whole scan: one forward pass costs one patch; NaN outside it")
        if hasattr(self.reorder, "describe"):
            expl.geometry.update(self.reorder.describe())
        elif self.reorder is not None:
            expl.geometry["model_orientation"] = self.reorder.codes


#: the geometry keys that say which image plane a job explains (jobs sharing a run must agree on them)
_PLANE_KEYS = ("source", "layer", "slice_index")


def shares_runs(method: str, config: Any, ndim: int) -> bool:
    """Whether jobs of ``method`` with ``config`` on ``ndim``-D images may share a run: PdCR with exact screening
    (hierarchical screening judges coarse blocks for all RoIs of a shared run together, so its maps would differ
    from one-RoI runs; ``auto`` is hierarchical in 3-D)."""
    if method != "pdcr":
        return False
    from .explainers.pdcr import screening_mode

    return screening_mode(config, ndim) == "exact"


def can_share(a: ExplainJob, b: ExplainJob) -> bool:
    """Whether ``a`` and ``b`` can run as one PdCR run (:func:`run_group`, each map equal to the job's own run):
    both PdCR with a RoI and exact screening (:func:`shares_runs`), the same image (same plane of the same source),
    config, pool, context box and voxel order; targets and labels may differ."""
    if a.roi is None or b.roi is None or a.method != b.method or not shares_runs(a.method, a.config, a.roi.ndim):
        return False
    if not (a.image is b.image or (a.image.shape == b.image.shape and a.image.dtype == b.image.dtype
                                   and np.array_equal(a.image, b.image))):
        return False
    same_pool = a.pool is b.pool or bool(a.pool_key and a.pool_key == b.pool_key)
    return (same_pool and a.config == b.config and a.crop == b.crop and a.full_shape == b.full_shape
            and a.reorder is b.reorder and np.shape(a.roi) == np.shape(b.roi)
            and all(a.geometry.get(k) == b.geometry.get(k) for k in _PLANE_KEYS))


def group_jobs(jobs: Sequence[ExplainJob]) -> list[list[int]]:
    """The indices of ``jobs`` in groups that share one run: each job joins the first earlier group it can share
    with (:func:`can_share` with that group's first job), else starts one. Groups are in the order of their first
    job, members in their original order; a group of one is an ordinary job."""
    groups: list[list[int]] = []
    for k, job in enumerate(jobs):
        home = next((g for g in groups if can_share(jobs[g[0]], job)), None)
        if home is None:
            groups.append([k])
        else:
            home.append(k)
    return groups


def shared_roi(rois: Sequence[np.ndarray]) -> np.ndarray:
    """The mask a shared run's cost is estimated on (``spec.estimate(config, shared_roi(rois))``): a block outside
    any one RoI is perturbed, so the blocks outside the RoIs' intersection bound the shared run's blocks."""
    return np.logical_and.reduce([np.asarray(r, bool) for r in rois])


def group_bound(jobs: Sequence[ExplainJob], shape: tuple[int, ...] | None = None) -> int | None:
    """Upper bound of forward passes of a job or a group sharing one run (``spec.estimate``; None when the method
    gives none or it fails). ``shape``: what a job without a RoI is estimated on (default: its image's)."""
    first = jobs[0]
    if first.spec.estimate is None:
        return None
    if first.roi is None:
        where: Any = shape if shape is not None else first.image.shape[1:]
    else:
        where = shared_roi([j.roi for j in jobs]) if len(jobs) > 1 else first.roi
    try:
        return int(first.spec.estimate(first.config, where))
    except Exception:  # noqa: BLE001 - an estimate is a courtesy
        return None


def span(numbers: Sequence[int]) -> str:
    """``[1, 2, 3]`` -> ``'1-3'``; anything else comma-separated."""
    numbers = list(numbers)
    if len(numbers) > 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(map(str, numbers))


def group_names(jobs: Sequence[ExplainJob], group: Sequence[int]) -> str:
    """The RoI names of a group: 'RoI 1-3' for numbered names of one layer, else the names comma-separated."""
    names = [jobs[k].roi_name for k in group]
    parts = [n.rsplit(" ", 1) for n in names]
    if len(group) > 1 and all(len(p) == 2 and p[1].isdigit() and p[0] == parts[0][0] for p in parts):
        return f"{parts[0][0]} {span([int(p[1]) for p in parts])}"
    return ", ".join(names)


def group_tag(jobs: Sequence[ExplainJob], group: Sequence[int]) -> str:
    """How progress names a job or group of ``jobs`` (no ``': '``): 'PdCR RoI 2 (2/3)', 'PdCR RoI 1-3 (1-3/3)'."""
    return f"{jobs[group[0]].spec.title} {group_names(jobs, group)} ({span([k + 1 for k in group])}/{len(jobs)})"


def run_group(model: "SegmentationModel", jobs: Sequence[ExplainJob]
              ) -> Generator[Progress, None, list["Explanation"]]:
    """Run jobs that can share a run (:func:`group_jobs`): one job as itself; several PdCR jobs as one
    :func:`~.explainers.pdcr.pdcr_multi` run (the pool built once; partial maps are the first job's), each result
    finished as its own job's (:meth:`ExplainJob.finish`) with ``stats["shared_run_rois"]`` = the group's size."""
    if len(jobs) == 1:
        return [(yield from jobs[0].run(model))]
    from .explainers.pdcr import pdcr_multi

    first = jobs[0]
    pool = yield from first.build_pool(model)
    expls = yield from pdcr_multi(model, first.image, [j.roi for j in jobs], [j.target for j in jobs],
                                  labels=[j.label for j in jobs], pool=pool, config=first.config,
                                  geometry=first.geometry, roi_names=[j.roi_name for j in jobs])
    out = []
    for job, expl in zip(jobs, expls):
        expl.geometry = dict(job.geometry)  # the job's own RoI description (nothing of the first job's)
        expl.stats["shared_run_rois"] = len(jobs)
        out.append(job.finish(model, expl))
    return out


def run_jobs_generator(model: "SegmentationModel", jobs: Sequence[ExplainJob], share: bool = True
                       ) -> Generator[Progress, None, list["Explanation"]]:
    """Run ``jobs`` on one loaded model, PdCR jobs of the same image plane, pool and config as one shared run
    (``share``; :func:`group_jobs`), the others one after the other; progress stages name the job or group
    (``k/n``). Returns the results in the order of ``jobs``."""
    groups = group_jobs(jobs) if share else [[k] for k in range(len(jobs))]
    out: list[Any] = [None] * len(jobs)
    for group in groups:
        tag = group_tag(jobs, group) if len(jobs) > 1 else ""
        gen = run_group(model, [jobs[k] for k in group])
        try:
            while True:
                ev = next(gen)
                yield Progress(ev.done, ev.total, f"{tag}: {ev.stage}" if tag else ev.stage, ev.message, ev.partial)
        except StopIteration as stop:
            for k, expl in zip(group, stop.value):
                out[k] = expl
        finally:
            gen.close()
    return out


def run_jobs(model: "SegmentationModel", jobs: Sequence[ExplainJob], progress: ProgressCallback | None = None,
             cancel: CancelCheck | None = None, share: bool = True) -> list["Explanation"]:
    """Blocking :func:`run_jobs_generator`."""
    return drive(run_jobs_generator(model, jobs, share), progress, cancel)
