"""Explain jobs: load a model once, run a list of (image, RoI, class, method, config) jobs.

Every job has a run id: a hash of what determines its result (method, parameters, image, RoI, class,
label, pool, model), so a rerun with identical inputs gets the same id (and napari updates that run's
layers in place) while a second RoI, class or parameter set becomes a run of its own.
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
        pool = self.pool
        if callable(pool) and self.spec.uses("pool"):
            yield Progress(0, 1, "preparing the perturbation pool")
            pool = pool(model, getattr(self.config, "patch", 8))
        expl = yield from self.spec.run_generator(model, self.image, self.roi, self.target, config=self.config,
                                                  pool=pool, label=self.label, geometry=self.geometry)
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


def run_jobs_generator(model: "SegmentationModel", jobs: Sequence[ExplainJob]
                       ) -> Generator[Progress, None, list["Explanation"]]:
    """Run ``jobs`` one after the other on one loaded model; progress stages name the job (``k/n``)."""
    out = []
    for k, job in enumerate(jobs, 1):
        gen = job.run(model)
        try:
            while True:
                ev = next(gen)
                tag = f"{job.spec.title} {job.roi_name} ({k}/{len(jobs)})" if len(jobs) > 1 else ""
                yield Progress(ev.done, ev.total, f"{tag}: {ev.stage}" if tag else ev.stage, ev.message, ev.partial)
        except StopIteration as stop:
            out.append(stop.value)
    return out


def run_jobs(model: "SegmentationModel", jobs: Sequence[ExplainJob], progress: ProgressCallback | None = None,
             cancel: CancelCheck | None = None) -> list["Explanation"]:
    """Blocking :func:`run_jobs_generator`."""
    return drive(run_jobs_generator(model, jobs), progress, cancel)
