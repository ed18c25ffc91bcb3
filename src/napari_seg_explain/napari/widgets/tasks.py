"""What the dock's buttons start: loading a model, segmenting, explaining, cancelling.

An explanation is one Run of one or more jobs (one per RoI: the chosen shape, or every shape of the RoI layer),
run one after the other in one worker (:func:`~.jobs.explain_runs_job`); PdCR jobs of one slice share one run. Each job's partial maps stream into
its own layer (:mod:`.streaming`); each run is shown as soon as it ends, its layers updated in place when it
is a rerun (same run id) or added next to each other when it is new (:mod:`.run_store`). Cancel stops the
worker at its next step: runs already shown stay, the running one is undone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError
from .. import layers as L
from . import inputs, jobs, model_space_runs
from .runner import error_text, notify_error, notify_info, notify_warning
from .sections import fill_combo
from .streaming import StreamTarget

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ...core.progress import Progress
    from ...core.results import Explanation
    from .controller import PlannedRun


def known_stages() -> tuple[tuple[str, ...], ...]:
    """Every registered method's stage lists (``ExplainerSpec.stages``, in the order they run): a stage found here
    is shown as "k/n stage"; every stage but the last may still revise ``Progress.total``. PdCR screens coarse
    blocks first in its hierarchical mode (3-D), so it has two stage lists."""
    from ...core.explainers import registry

    return tuple(stages for spec in registry.specs() for stages in spec.stages)
#: the speed behind the time left is measured over at most the last this many seconds of the current stage
RATE_WINDOW_S = 5.0
#: ... and over at least this many seconds (shorter: the previous stage's speed, or the one measured at load)
MIN_RATE_SPAN_S = 0.5


def stage_of(stage: str, seen: "Iterable[str]" = ()) -> tuple[int, int] | None:
    """``(k, n)`` of stage ``stage`` in the shortest list of :func:`known_stages` that holds it and every
    known stage ``seen`` before it in the same job; None for a stage not listed there."""
    known = known_stages()
    seen = {s for s in seen if any(s in stages for stages in known)}
    fits = [stages for stages in known if stage in stages and seen <= set(stages)]
    if not fits:
        return None
    stages = min(fits, key=len)
    return stages.index(stage) + 1, len(stages)


class RunClock:
    """The time left of a whole Run (Qt-free): the running job's remaining forward passes plus the later jobs'
    upper bounds, at the speed measured in the current stage.

    ``bounds``: each job's upper bound of forward passes (``spec.estimate``; None: unknown); ``seconds_per_pass``:
    the speed measured at load, used until the job has measured its own. Until a stage that can revise
    ``Progress.total`` ends (PdCR's screening, MiSuRe's sufficient region) the job's total is its upper bound;
    then the revised total. The speed is measured over the current stage's events after its first one (the
    first batch of a stage carries one-off costs: the engine trying batch sizes, autograd's first backward
    pass), over the last :data:`MIN_RATE_SPAN_S` to :data:`RATE_WINDOW_S` seconds; until then the previous
    stage's speed, or the one measured at load.
    """

    def __init__(self, t_start: float, bounds: list[int | None], seconds_per_pass: float = float("nan")) -> None:
        self.bounds = bounds
        self.t_start = t_start
        self.default_rate = seconds_per_pass
        self.rate = float("nan")
        self._key: tuple[int, str] | None = None
        self._events: list[tuple[float, int]] = []  # (time, done) of the current stage
        self.seen: list[str] = []  # the stages of the current job so far
        self.stage: tuple[int, int] | None = None  # (k, n) of the current stage, when known
        self.is_bound = False  # the job's total shown is an upper bound (it may still be revised)

    def update(self, now: float, index: int, done: int, total: int, stage: str) -> tuple[int, float]:
        """A progress event of job ``index``: returns the job's total as shown (an upper bound while it may
        still be revised, :attr:`is_bound`) and the seconds left for the whole Run (NaN: unknown)."""
        if self._key != (index, stage):  # a new stage (or job); the previous stage's last event is its start
            same_job = self._key is not None and self._key[0] == index
            self._events = self._events[-1:] if same_job else []
            self.seen = [*self.seen, stage] if same_job else [stage]
            self.stage = stage_of(stage, self.seen)
            self._key = (index, stage)
        bound = self.bounds[index] if 0 <= index < len(self.bounds) else None
        ks = self.stage
        self.is_bound = ks[0] < ks[1] if ks is not None else done <= 0
        shown_total = max(int(total), int(bound)) if bound and self.is_bound else int(total)
        self._events.append((now, int(done)))
        while len(self._events) > 3 and now - self._events[1][0] > RATE_WINDOW_S:
            self._events.pop(1)
        if len(self._events) >= 3:  # leave out the stage's first interval (one-off costs)
            (t0, d0), (t1, d1) = self._events[1], self._events[-1]
            if d1 > d0 and t1 - t0 >= MIN_RATE_SPAN_S:
                self.rate = (t1 - t0) / (d1 - d0)
        rate = self.rate if np.isfinite(self.rate) else self.default_rate
        later = sum(int(b) for b in self.bounds[index + 1:] if b)
        left = (max(0, shown_total - int(done)) + later) * rate
        return shown_total, float(left)


class Tasks:
    """The dock's work, started through its :class:`~.runner.Runner` (``dock``: the SegExplainWidget)."""

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.viewer = dock.viewer
        self.controller = dock.controller
        self.runner = dock.runner
        self.streamer = dock.streamer
        self.suggested_tried: set[str] = set()
        self.plans: list[PlannedRun] = []
        self.groups: dict[int, list[int]] = {}  # first run of a group sharing one run -> its runs
        self.clock = RunClock(0.0, [])
        self.time_left = float("nan")  # the seconds left shown last (NaN: none shown)

    # ------------------------------------------------------------------------------- model
    def load_model(self, path: str | None, card: str | None, options: dict[str, Any] | None = None) -> Any:
        """Load a model file or folder in a worker; ``options``: a folder's keyword options (default: the nnU-Net
        options shown for an nnU-Net folder)."""
        d = self.dock
        path = path or d.model_path.text().strip()
        card = card if card is not None else (d.card_path.text().strip() or None)
        if not path:
            notify_error("Loading the model", UserError("choose a model file first (or press 'Load sample model')"))
            return None
        if d.busy:
            return None
        d.model_path.setText(str(path))
        if options is None:
            options = d.model_section.folder_options(str(path))
        d.model_summary.setText(f"Loading {Path(path).name}…")
        return self.runner.start("load", jobs.load_model_job, str(path), card, d.device.currentText(), options,
                                 on_return=self.on_model_loaded, on_error=self._on_load_error)

    def load_sample_model(self) -> Any:
        from ...core.sample import SAMPLE_CARD, sample_path

        try:
            path = sample_path(SAMPLE_CARD)
            if not path.exists():
                raise UserError(f"the sample model card {path} is missing")
        except UserError as exc:
            notify_error("Loading the sample model", exc)
            return None
        self.dock.card_path.clear()
        return self.load_model(str(path), None)

    def _on_load_error(self, exc: BaseException) -> None:
        self.dock.model_section.show_failed(self.controller.loaded)
        self.dock.progress_label.setText(f"failed: {error_text(exc)}")

    def on_model_loaded(self, info: jobs.LoadedModel) -> None:
        self.controller.loaded = info
        self.dock.model_section.show_model(info)
        names = info.class_names
        fill_combo(self.dock.target, names, names[1] if len(names) > 1 else None)
        if len(names) > 1:
            self.dock.target.setCurrentIndex(1)
        self.dock.explain_section.show_roi_slices(info.model.card.spatial_dims == 3)
        self.dock.update_slice_label()
        notify_info(f"Model {info.model.name!r} loaded on {info.model.device}")
        self.dock.schedule_estimate()

    def device_changed(self, device: str) -> None:
        loaded = self.controller.loaded
        if loaded is None or self.dock.busy:
            return
        from ...core.models import SegmentationModel, resolve_device

        m = loaded.model
        try:
            if resolve_device(device) == m.device:
                return
            if model_space_runs.is_model_space(m):  # its tool's predictor is made for one device: load it again
                self.load_model(m.source, None)
                return
            moved = SegmentationModel(m.net, m.card, device=device, fmt=m.format, source=m.source, sha256=m.sha256)
        except Exception as exc:  # noqa: BLE001
            notify_error("Changing the device", exc)
            return
        self.runner.start("load", jobs.describe_model, moved, on_return=self.on_model_loaded,
                          on_error=self._on_load_error)

    # ----------------------------------------------------------------------------- segment
    def segment(self) -> Any:
        d = self.dock
        try:
            image = self.controller.checked_image(d.image_combo.currentText())
            whole = inputs.spatial_ndim(image) == 3 and (d.image_section.whole_volume()
                                                          or self.controller.is_3d(image))  # 3-D: the volume
            # the whole volume does not depend on the view; the current slice must be the one shown
            z = inputs.current_slice(self.viewer, image, check_view=not whole)
        except UserError as exc:
            notify_error("Segmenting", exc)
            return None
        loaded = self.controller.loaded
        geom = L.SliceGeometry.from_layer(image, z)
        if model_space_runs.is_model_space(loaded.model):  # the tool's own pipeline on the whole scan
            try:
                scan = model_space_runs.scan_image(image)
            except UserError as exc:
                notify_error("Segmenting", exc)
                return None
            func, args, whole = model_space_runs.segment_scan_job, (loaded.model, scan), True
        else:
            func, args = jobs.segment_job, (loaded.model, image.data, None if whole else z,
                                            bool(getattr(image, "rgb", False)))
        d.explain_section.show_progress(0, 1, "segmenting…")
        worker = self.runner.start("segment", func, *args,
                                   on_yield=lambda ev: self._on_progress(0, ev),
                                   on_return=lambda labels: self._on_segmented(labels, geom, whole),
                                   on_error=self._on_error)
        self.plans, self.groups, self.clock = [], {}, RunClock(self.runner.t_start, [])
        return worker

    def _on_segmented(self, labels: np.ndarray, geom: L.SliceGeometry, whole: bool) -> None:
        m = self.controller.model
        name = f"{m.name if m else 'model'} segmentation"
        existing = self.controller.layer(name)
        if (not whole and geom.is_volume and existing is not None and L.layer_kind(existing) == "labels"
                and tuple(existing.data.shape) == tuple(geom.shape)):
            existing.data[geom.slice_index] = labels
            existing.refresh()
            layer = existing
        else:
            layer = L.add_or_update(self.viewer, L.segmentation_layer_data(labels, geom, name,
                                                                           m.describe() if m else None))
        counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
        where = "the volume" if whole or not geom.is_volume else f"slice {geom.slice_index}"
        self.dock.progress_label.setText(f"segmented {where} -> {layer.name!r}; pixels per class {counts}")
        self.dock.update_state()

    # ----------------------------------------------------------------------------- explain
    def run(self) -> Any:
        d = self.dock
        if d.busy:
            return None
        t0 = time.perf_counter()
        d.timings.clear()
        try:
            try:
                plans = d.gather()
            except Exception as exc:  # noqa: BLE001 - a UserError with advice, or anything unexpected
                notify_error("Explaining", exc)
                return None
            return self._start(plans)
        finally:
            d.timings["run_click_s"] = time.perf_counter() - t0

    def _start(self, plans: list["PlannedRun"]) -> Any:
        self.dock.results_view.end_compare()  # new layers go into the viewer's own layout
        self.plans = plans
        for w in dict.fromkeys(w for p in plans for w in p.job.warnings):  # e.g. input unlike the training data
            notify_warning(w)
        targets = []
        for p in plans:
            rl = next((r for r in p.spec.layers if r.key == "map"), None)
            old = self.controller.runs.get(p.run_id)
            targets.append(None if rl is None else StreamTarget(
                p.geom, rl, L.layer_name(p.spec.title, rl.title, p.label), p.spec.name, p.run_id,
                old.layers.get("map") if old is not None else None))
        self.streamer.reset(targets)
        bounds = self._bounds(plans)
        spi = jobs.image_seconds(self.controller.loaded, plans[0].geom.plane_shape)
        what = plans[0].desc if len(plans) == 1 else f"{len(plans)} RoIs"
        self.dock.explain_section.show_progress(0, 1, f"{plans[0].spec.title}: starting on {what}…")
        worker = self.runner.start("explain", jobs.explain_runs_job, self.controller.model,
                                   [(p.job, p.geom, p.label) for p in plans],
                                   [t.layer_data if t is not None else None for t in targets], on_yield=self._on_event,
                                   on_return=lambda _expls: None, on_error=self._on_error)
        self.clock = RunClock(self.runner.t_start, bounds, spi)
        return worker

    def _bounds(self, plans: list["PlannedRun"]) -> list[int | None]:
        """Each run's upper bound of forward passes (None: unknown); runs sharing one run (:func:`group_jobs`):
        the group's bound on its first run, 0 on the others, so that the time left counts the shared run once."""
        from ...core.jobs import group_bound, group_jobs

        self.groups = {g[0]: g for g in group_jobs([p.job for p in plans])}
        bounds: list[int | None] = [0] * len(plans)
        for first, group in self.groups.items():
            bounds[first] = group_bound([plans[i].job for i in group], plans[first].geom.plane_shape)
        return bounds

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, jobs.RunDone):
            self._on_done(ev)
        else:
            if ev.stream is not None:
                self.streamer.prepare(ev.index, ev.stream)
            self._on_progress(ev.index, ev.progress)

    def _on_progress(self, index: int, ev: "Progress") -> None:
        """The bar and the line under it: the run (when several), the stage ('1/2 screening' for a stage of a
        known method), the forward passes ('at most' while the total may still be revised) and the time left of
        the whole Run (:class:`RunClock`)."""
        stage = ev.stage.rsplit(": ", 1)[-1]  # a job of several carries its run's name (jobs.explain_runs_job)
        total, left = self.clock.update(time.perf_counter(), index, int(ev.done), int(ev.total), stage)
        total = max(1, total)
        ks = self.clock.stage
        parts = []
        group = self.groups.get(index, [index])
        if len(group) > 1:
            from ...core.jobs import group_names, span

            parts.append(f"{group_names([p.job for p in self.plans], group)} (one shared run: runs "
                         f"{span([i + 1 for i in group])}/{len(self.plans)})")
        elif len(self.plans) > 1:
            parts.append(f"{self.plans[index].label} (run {index + 1}/{len(self.plans)})")
        parts.append(f"{ks[0]}/{ks[1]} {stage}" if ks is not None else stage)
        passes = f"{int(ev.done):,} / {'at most ' if self.clock.is_bound else ''}{total:,} forward passes"
        self.time_left = left if np.isfinite(left) and ev.done < total else float("nan")
        left_txt = "" if not np.isfinite(self.time_left) else (
            " · less than a second left" if left < 1 else f" · about {jobs.format_seconds(left)} left")
        self.dock.explain_section.show_progress(ev.done, total, f"{' · '.join(parts)}: {passes}{left_txt}")
        if ev.partial is not None:
            self.streamer.push(index, ev.partial)

    def _on_done(self, ev: jobs.RunDone) -> None:
        plan = self.plans[ev.index]
        stream = self.streamer.adopt(ev.index)
        steps = self.controller.runs.put_steps(plan.run_id, plan.spec.title, plan.label, ev.expl, plan.geom,
                                               ev.layers, stream, self.dock.colorbar_on, plan.desc)
        self.runner.queue_steps([*steps, lambda: self._announce(plan, ev.expl)])

    def _announce(self, plan: "PlannedRun", expl: "Explanation") -> None:
        d = self.dock
        d.results_view.show_run(plan.run_id)
        moved = self._bring_into_view(plan)
        d.progress.setValue(d.progress.maximum())
        d.progress_label.setText(f"{plan.spec.title} done in {expl.provenance.get('wall_time_s', 0):.1f} s, "
                                 f"{expl.provenance.get('forward_passes', 0):,} forward passes ({plan.label})"
                                 + (f"; the viewer now shows its slice {moved}" if moved is not None else ""))
        for w in expl.warnings:
            if w not in plan.job.warnings:  # those were shown when the run started
                notify_warning(w)
        if plan.spec.summary is not None:
            notify_info(plan.spec.summary(expl))

    def _bring_into_view(self, plan: "PlannedRun") -> int | None:
        """Show the run's slice when the viewer shows another one (a RoI drawn on another slice); returns the
        slice when the view moved there."""
        geom = plan.geom
        image = self.controller.layer(geom.source_layer)
        rec = self.controller.runs.get(plan.run_id)
        if not geom.is_volume or image is None or rec is None or not inputs.is_volume(image):
            return None
        z = int(geom.slice_index)
        try:
            if inputs.current_slice(self.viewer, image, check_view=False) == z:
                return None
            self.dock.results_view.go_to_slice(rec)
            return z if inputs.current_slice(self.viewer, image, check_view=False) == z else None
        except Exception:  # noqa: BLE001 - moving the view is a courtesy
            return None

    def _on_error(self, exc: BaseException) -> None:
        self.streamer.discard(keep=False)
        self.dock.progress_label.setText(f"failed: {error_text(exc)}")

    def cancel(self) -> None:
        if not self.runner.cancel():
            return
        kept = self.streamer.discard(keep=self.dock.keep_partial.isChecked())
        self.dock.progress_label.setText("cancelled" + (f": partial map kept as {kept!r}" if kept else ""))
        self.dock.update_state()
