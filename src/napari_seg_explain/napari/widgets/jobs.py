"""Work the widget runs in a napari worker thread: no Qt, no layers, only arrays and the core.

Generators yield :class:`~napari_seg_explain.core.progress.Progress` (so ``worker.quit()`` stops them at the
next ``yield``) and return their result; they can also be drained synchronously with
:func:`napari_seg_explain.core.progress.drive`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.progress import Progress

if TYPE_CHECKING:
    from ...core.models import SegmentationModel
    from ...core.jobs import ExplainJob
    from ...core.results import Explanation


@dataclass
class LoadedModel:
    """A loaded model and what the widget shows about it."""

    model: "SegmentationModel"
    n_classes: int
    class_names: list[str]
    seconds_per_image: float  # measured on one batch at the timing size
    timing_size: tuple[int, int]
    timing_batch: int


def _timing_size(model: "SegmentationModel") -> tuple[int, int]:
    size = model.card.input_size
    return (int(size[0]), int(size[1])) if size and len(size) == 2 else (128, 128)


def load_model_job(path: str, card: str | None, device: str, options: dict[str, Any] | None = None) -> LoadedModel:
    """Load the model and time one batch (a warm-up pass, then ``batch`` images). ``options``: a model folder's
    keyword options (nnU-Net: ``folds``, ``checkpoint``, ``mirroring``, ``ensemble``)."""
    from ...core.models import load_model

    opts = {k: v for k, v in (options or {}).items() if v is not None}
    model = load_model(path, card or None, device=device, **opts)
    return describe_model(model)


#: the time per image is measured on up to 3 batches, while they take less than this many seconds in all
TIMING_SECONDS = 0.5


def describe_model(model: "SegmentationModel", batch: int = 8, repeats: int = 3) -> LoadedModel:
    """Number of classes (from one forward pass when the card does not list them) and the time per image: the
    fastest of up to ``repeats`` engine steps (:data:`TIMING_SECONDS`; on the CPU a batch per worker side by
    side, as runs go) after a warm-up pass (the model often loads while napari draws its window, so a single
    step can be timed twice too slow)."""
    import torch

    from ...core.engine import Engine
    from ...core.models.space import PreprocessingModel
    from ...core.progress import drive

    if model.card.spatial_dims != 2 or isinstance(model, PreprocessingModel):  # whole scans: not timed per image
        k = len(model.card.classes) or 2
        return LoadedModel(model, k, _class_names(model, k), float("nan"), (0, 0), 0)
    h, w = _timing_size(model)
    c = model.card.in_channels or 1
    x = torch.zeros((batch, c, h, w), dtype=torch.float32)
    x[:, :, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    passes = model.forward_passes
    engine = Engine(model, batch)  # timed as runs go: on the CPU, a batch per worker side by side
    n = batch * engine.workers
    with model.eval_mode():
        with torch.inference_mode():
            xn = model.normalize(x)
            probs = model.forward_normalized(xn[:1])  # warm-up
        times: list[float] = []
        while len(times) < max(1, repeats) and sum(times) < TIMING_SECONDS:
            t0 = time.perf_counter()
            drive(engine.run(n, lambda a, b: xn[: b - a], lambda p: p[:, :1, 0, 0]))
            times.append(time.perf_counter() - t0)
        spi = min(times) / n
    model.forward_passes = passes  # timing passes are not part of any result
    k = int(probs.shape[1])
    return LoadedModel(model, k, _class_names(model, k), spi, (h, w), batch)


def _class_names(model: "SegmentationModel", k: int) -> list[str]:
    names = list(model.card.classes)
    n = 2 if k == 1 else k
    return [names[i] if i < len(names) else f"class {i}" for i in range(n)]


class JobError(Exception):
    """An error raised inside a job, re-raised under a type the worker reports (see :func:`guarded`)."""


def guarded(func: Any, *args: Any) -> Generator[Any, None, Any]:
    """Run generator ``func(*args)``, turning ``RuntimeError`` into :class:`JobError`.

    superqt's ``GeneratorWorker`` takes a ``RuntimeError`` from the generator for "the worker was deleted"
    and ends silently (no ``errored``, no ``finished``); torch raises many RuntimeErrors.
    """
    try:
        return (yield from func(*args))
    except RuntimeError as exc:
        raise JobError(f"{type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------- segmenting
#: automatic batches in the widget stay under this many seconds, so that Cancel acts well within a second
BATCH_SECONDS = 0.25


class _Planes:
    """A lazy ``(N, C, rows, cols)`` float32 view of a layer's planes: ``planes[a:b]`` reads only those."""

    def __init__(self, data: Any, rgb: bool) -> None:
        self.data, self.rgb = data, rgb

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, sl: slice) -> np.ndarray:
        idx = range(*sl.indices(len(self)))
        if self.rgb:
            return np.stack([np.moveaxis(np.asarray(self.data[k])[..., :3], -1, 0) for k in idx]).astype(np.float32)
        return np.stack([np.asarray(self.data[k])[None] for k in idx]).astype(np.float32)


def segment_job(model: "SegmentationModel", data: Any, slice_index: int | None,
                rgb: bool = False) -> Generator[Progress, None, np.ndarray]:
    """Labels of one plane (``slice_index``), of a 2-D layer, or of every slice of a volume layer.

    ``data``: the layer's data (read only): ``(slices, rows, cols)``, ``(rows, cols)`` or RGB
    ``(rows, cols, 3)``. Returns ``(rows, cols)`` labels, or ``(slices, rows, cols)`` for the whole volume.
    Runs through the core engine (automatic batch size, batches under :data:`BATCH_SECONDS`).
    """
    from ...core.engine import with_batch_time_limit
    from ...core.models import labels_from_probs

    spatial = data.ndim - (1 if rgb else 0)
    if model.card.spatial_dims == 3:
        if spatial != 3:
            raise ValueError("a 3-D model needs a volume layer")
        yield Progress(0, 1, "segmenting the volume")
        vol = np.moveaxis(np.asarray(data, dtype=np.float32), 0, -1)[None]  # (1, rows, cols, slices)
        probs = model.predict(vol, batch_size=1)
        yield Progress(1, 1, "segmenting the volume")
        return np.moveaxis(labels_from_probs(probs), -1, 0)
    if spatial == 2 or slice_index is not None:
        planes = _Planes(data[None] if spatial == 2 else data, rgb)
        k = 0 if spatial == 2 else int(slice_index)
        labels = yield from with_batch_time_limit(model.segment_batches(planes[k:k + 1], stage="segmenting the slice"),
                                                  BATCH_SECONDS)
        return labels[0]
    return (yield from with_batch_time_limit(model.segment_batches(_Planes(data, rgb), stage="segmenting the volume"),
                                             BATCH_SECONDS))


# ------------------------------------------------------------------------------------- explaining
@dataclass
class RunProgress:
    """A progress event of run ``index`` of a list of jobs (its partial map, if any, is that run's); ``stream``:
    with the run's first partial map, the empty layer it streams into, made here (a volume-shaped array takes
    up to seconds to fill, which must not happen in the GUI thread)."""

    index: int
    progress: Progress
    stream: Any = None


@dataclass
class RunDone:
    """Run ``index`` finished: its Explanation and its result layers' data (built here, in the worker)."""

    index: int
    expl: "Explanation"
    layers: list[Any]


def explain_runs_job(model: "SegmentationModel", runs: list[tuple["ExplainJob", Any, str]],
                     stream_layers: list[Callable[[], Any] | None] | None = None
                     ) -> Generator[RunProgress | RunDone, None, list["Explanation"]]:
    """Run ``(job, geometry, label)`` triples on one model, PdCR jobs of the same plane, pool and config as one
    shared run (:func:`~napari_seg_explain.core.jobs.group_jobs`), the others one after the other.

    Like :func:`napari_seg_explain.core.jobs.run_jobs_generator` (progress stages name the job or group, ``k/n``),
    but every event says which run it belongs to (a group's: its first run, whose partial maps it streams), so
    that a partial map streams into that run's layer, and each run's layers (volume-shaped arrays of a large scan
    take a while to fill) are built here and handed over as soon as its run ends (a group: one
    :class:`RunDone` per member, in order). Closing this generator (Cancel) closes the running job's generator.
    ``stream_layers[k]``: makes run ``k``'s empty stream layer (called here, with its first partial map).
    """
    from ...core.engine import with_batch_time_limit
    from ...core.jobs import group_jobs, group_tag, run_group
    from .. import layers as L

    jobs = [job for job, _, _ in runs]
    out: list[Any] = [None] * len(runs)
    for group in group_jobs(jobs):
        k, job = group[0], jobs[group[0]]
        tag = f"{group_tag(jobs, group)}: " if len(runs) > 1 else ""
        gen = with_batch_time_limit(run_group(model, [jobs[i] for i in group]), BATCH_SECONDS)
        make = stream_layers[k] if stream_layers is not None and k < len(stream_layers) else None
        try:
            while True:
                ev = next(gen)
                partial = partial_to_full(job, ev.partial)
                stream = make() if make is not None and partial is not None else None
                if stream is not None:
                    make = None
                yield RunProgress(k, Progress(ev.done, ev.total, tag + ev.stage, ev.message, partial), stream)
        except StopIteration as stop:
            expls = stop.value
        finally:
            gen.close()
        for i, expl in zip(group, expls):
            _, geom, label = runs[i]
            yield RunDone(i, expl, L.explanation_layer_data(expl, geom, label))
            out[i] = expl
    return out


def partial_to_full(job: "ExplainJob", partial: np.ndarray | None) -> np.ndarray | None:
    """A 3-D job's partial map (its context box, in the model's voxel order, as the method yields it) as the
    whole volume in display order (NaN outside the box), as ``ExplainJob`` gives the final map; 2-D jobs'
    partial maps pass unchanged."""
    if partial is None or (job.crop is None and job.reorder is None):
        return partial
    a = np.asarray(partial, dtype=np.float32)
    if job.crop is not None:
        box = tuple(s.stop - s.start for s in job.crop)
        if a.shape != box and a.size == int(np.prod(box)) and len(box) == a.ndim + 1:
            a = a.reshape(box)  # a 2-D configuration's plane of the model's grid
        if a.shape != box:
            return None  # not a map of the box: not streamed
        out = np.full(job.full_shape, np.nan, dtype=np.float32)
        out[job.crop] = a
        a = out
    return job.reorder.display(a) if job.reorder is not None else a


# ----------------------------------------------------------------------------------- cost estimate
def image_seconds(info: LoadedModel, plane_shape: tuple[int, int]) -> float:
    """Time per image for a plane: the measured time, scaled by area when the model runs at the plane's size.

    The time is measured at load on a ``timing_size`` image (the card's input size, else 128x128); a model
    without an input size runs on the plane as it is, and a convolutional network's cost grows with the
    number of pixels.
    """
    spi = info.seconds_per_image
    if not np.isfinite(spi):
        return float("nan")
    if info.model.card.input_size:
        return spi
    th, tw = info.timing_size
    return spi * (plane_shape[0] * plane_shape[1]) / max(1, th * tw)


def format_seconds(s: float) -> str:
    if not np.isfinite(s):
        return "?"
    if s < 1:
        return "< 1 s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
