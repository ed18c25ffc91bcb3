"""Compare… in the Explain section: several methods on the same RoI, their maps side by side and their curves.

:class:`MethodCompare` plans one :class:`~napari_seg_explain.core.jobs.ExplainJob` per checked method with the
controller's own planning (the dock's :class:`~.plans.Choices`, ``method`` swapped; the chosen shape only), runs
them and the papers' evaluation of each map (:func:`napari_seg_explain.core.evaluation.evaluation`: attribution
score, deletion and insertion curves) one after the other in one worker (:func:`compare_job`: progress, Cancel),
and only when everything is done adds each method's layers as a run of its own (the run store: they appear in the
runs list), shows one map per viewbox of napari's grid, each over the image (:class:`GridComparison`; *End
compare* in the runs section, or a new Run, puts the viewer back), and docks the curves (:mod:`.compare_plot`).

What is offered (:func:`fitting_methods`): every registered method that fits the inputs (a RoI-requiring method
needs a RoI; Shapley only for an image of several channels); checked by default: PdCR, MiSuRe, Seg-Grad-CAM, RISE
and Occlusion. The method chosen in the dock runs with the form's values, the others with their defaults. Each
map is evaluated on its job's frame (its image, RoI, label) with the first checked method's pool, built once
(the same replacement crops for every method), and the direction of :data:`napari_seg_explain.core.dataset_run.
SALIENT` (``low`` for signed effect maps: PdCR, Occlusion). One loaded model: comparing models is not offered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout

from ...core.errors import UserError
from ...core.progress import Progress
from .. import layers as L
from .compare import Comparison, _reorder, viewer_grid
from .jobs import BATCH_SECONDS, format_seconds
from .runner import error_text, notify_error, notify_warning

if TYPE_CHECKING:
    from ...core.jobs import ExplainJob
    from ...core.results import Explanation
    from .plans import PlannedRun
    from .run_store import RunRecord

#: checked by default in the dialog (where registered)
DEFAULT_METHODS = ("pdcr", "misure", "seg_gradcam", "rise", "occlusion")
#: the evaluation's parameters in the dialog (the papers' defaults) and their ranges
EVALUATION = {"k": (10, 1, 1000, "top k: blocks perturbed together for the attribution score"),
              "block": (8, 2, 64, "block size of the evaluation (pixels)"),
              "steps": (20, 1, 200, "points of each curve after the unperturbed one"),
              "draws": (3, 1, 20, "pool draws averaged")}
#: the layer keys shown in each viewbox of the grid, over its image
GRID_KEYS = ("map", "roi")


def fitting_methods(specs: dict[str, Any], has_roi: bool, channels: int) -> list[tuple[str, bool]]:
    """``(method, checked)`` for every registered method that fits: a RoI-requiring method only with a RoI, Shapley
    (channel attributions, no map) only for several channels; checked: :data:`DEFAULT_METHODS`."""
    out = []
    for name, spec in specs.items():
        if spec.uses("roi") and not has_roi:
            continue
        if name == "shapley" and channels < 2:
            continue
        out.append((name, name in DEFAULT_METHODS))
    return out


# ------------------------------------------------------------------------------ the worker (no Qt)
@dataclass
class CompareProgress:
    """Progress of method ``index`` of ``n`` (``phase``: explaining or evaluating)."""

    index: int
    n: int
    title: str
    phase: str
    progress: Progress


@dataclass
class MethodResult:
    """One method's outcome: its Explanation and layer data, its evaluation, or the error that stopped it."""

    index: int
    expl: "Explanation | None" = None
    layers: list[Any] = dataclasses.field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    error: str = ""


def _relay(gen: Generator[Progress, None, Any], wrap: Any) -> Generator[Any, None, Any]:
    """Drive ``gen``, yielding ``wrap(event)`` per event; returns its value (closing it when stopped)."""
    try:
        while True:
            ev = next(gen)
            yield wrap(ev)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def map_on_job_frame(job: "ExplainJob", amap: np.ndarray) -> np.ndarray:
    """The map on the job's own frame (``job.image``'s spatial shape), as ``dataset_run`` evaluates it."""
    m = np.asarray(amap, dtype=np.float32)
    if job.reorder is not None:
        m = job.reorder.model(m)
    if job.crop is not None:
        m = m[job.crop].reshape(job.image.shape[1:])
    return m


def compare_job(model: Any, runs: list[tuple["ExplainJob", Any, str]], evaluation_kw: dict[str, Any],
                pool: Any = None) -> Generator[CompareProgress, None, list[MethodResult]]:
    """Each ``(job, geometry, label)`` explained, its layers built and its map evaluated, one after the other.

    ``pool``: the evaluation's replacement crops for every method (a recipe ``pool(model, block)`` is built once,
    when the first evaluation needs it; None: the image itself). A method that fails is recorded with its error
    and the others go on; closing the generator (Cancel) stops the running step.
    """
    from ...core.dataset_run import SALIENT
    from ...core.engine import with_batch_time_limit
    from ...core.evaluation import evaluation

    out: list[MethodResult] = []
    n = len(runs)
    built = not callable(pool)
    for k, (job, geom, label) in enumerate(runs):
        title = job.spec.title
        res = MethodResult(k)
        try:
            res.expl = yield from _relay(with_batch_time_limit(job.run(model), BATCH_SECONDS),
                                         lambda ev: CompareProgress(k, n, title, "explaining", ev))
            res.layers = L.explanation_layer_data(res.expl, geom, label)
            amap = res.expl.map
            if amap is not None and job.roi is not None:
                if not built:
                    yield CompareProgress(k, n, title, "evaluating", Progress(0, 1, "preparing the pool"))
                    pool = pool(model, evaluation_kw.get("block", 8))
                    built = True
                res.evaluation = yield from _relay(
                    with_batch_time_limit(evaluation(model, job.image, job.roi, job.target,
                                                     map_on_job_frame(job, amap), label=job.label, pool=pool,
                                                     direction=SALIENT.get(job.method, "high"), **evaluation_kw),
                                          BATCH_SECONDS),
                    lambda ev: CompareProgress(k, n, title, "evaluating", ev))
        except Exception as exc:  # noqa: BLE001 - one method's failure leaves the others
            res.error = error_text(exc)
        out.append(res)
    return out


# ------------------------------------------------------------------------------------ the grid
class GridComparison(Comparison):
    """Any number of runs side by side in napari's grid: viewbox ``k`` holds a view of the image (the image
    itself for the first, a layer sharing its data for the others) and run ``k``'s :data:`GRID_KEYS` layers;
    every other layer is hidden. :meth:`end` (the runs section's *End compare*) puts the viewer back."""

    def __init__(self, viewer: Any, store: Any, image: Any, runs: list["RunRecord"]) -> None:  # noqa: D107
        self.viewer, self.store, self.image = viewer, store, image
        self.runs = list(runs)
        self.order, self.visible, self.grid = [], {}, {}
        self.second_view = None
        self.views: list[Any] = []
        self.active = False

    def cell_layers(self, rec: "RunRecord") -> list[Any]:
        live = self.store.live_layers(rec)
        return [lay for key in GRID_KEYS if (lay := rec.layers.get(key)) is not None
                and any(L.same_layer(lay, x) for x in live)]

    def start(self) -> None:
        viewer = self.viewer
        self.remember_view()
        grid = viewer_grid(viewer)
        cells = [self.cell_layers(r) for r in self.runs]
        stride = 1 + max((len(c) for c in cells), default=0)
        wanted: list[Any] = []
        for k, cell in enumerate(cells):
            view = self.image if k == 0 else self._second_view()
            if k:
                view.name = f"{self.image.name} · {self.runs[k].title}"
                self.views.append(view)
            wanted += [view, *cell]
            wanted += [self._filler(view) for _ in range(stride - 1 - len(cell))]
        rest = [lay for lay in viewer.layers if not any(L.same_layer(lay, w) for w in wanted)]
        for lay in rest:
            lay.visible = False
        for lay in wanted:
            lay.visible = True
        _reorder(viewer, wanted + rest)
        grid.stride = stride
        grid.shape = (-1, -1)
        grid.enabled = True
        self.active = True

    def _filler(self, view: Any) -> Any:
        """An empty, invisible-in-effect layer that keeps a shorter cell's stride (a run without a RoI outline)."""
        from napari.layers import Shapes

        layer = Shapes(name=f"{view.name} (empty)", ndim=view.ndim,
                       metadata={"seg_explain": {"result": "compare"}}, **L.layer_transform(view))
        self.viewer.layers.append(layer)
        self.views.append(layer)
        return layer

    def end(self) -> None:
        if not self.active:
            return
        for view in self.views:
            if view in self.viewer.layers:
                self.viewer.layers.remove(view)
        self.views = []
        super().end()


# ---------------------------------------------------------------------------------- the dialog
class CompareDialog(QDialog):
    """The methods to compare (checkboxes) and the evaluation's parameters."""

    def __init__(self, parent: Any, methods: list[tuple[str, bool]], titles: dict[str, str], current: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare methods")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Run these methods on the chosen RoI and evaluate each map (the method chosen in the "
                             "dock with its form's values, the others with their defaults):"))
        self.boxes: dict[str, QCheckBox] = {}
        for name, checked in methods:
            box = QCheckBox(titles.get(name, name) + ("  (form values)" if name == current else ""))
            box.setChecked(checked)
            self.boxes[name] = box
            lay.addWidget(box)
        form = QFormLayout()
        self.spins: dict[str, QSpinBox] = {}
        for key, (default, lo, hi, tip) in EVALUATION.items():
            spin = QSpinBox()
            spin.setRange(lo, hi)
            spin.setValue(default)
            spin.setToolTip(tip)
            self.spins[key] = spin
            form.addRow(f"Evaluation {key}", spin)
        lay.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def methods(self) -> list[str]:
        return [name for name, box in self.boxes.items() if box.isChecked()]

    def evaluation(self) -> dict[str, int]:
        return {key: int(spin.value()) for key, spin in self.spins.items()}


# ------------------------------------------------------------------------------------ the task
class MethodCompare:
    """Runs a comparison for ``dock`` (the SegExplainWidget) with its controller, runner and results view."""

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.plans: list["PlannedRun"] = []
        self.results: list[MethodResult] = []
        self.plot: Any = None  # the CurvesPlot of the last comparison
        self.plot_dock: Any = None
        self.t0 = 0.0

    def offered(self) -> list[tuple[str, bool]]:
        d = self.dock
        loaded = d.controller.loaded
        image = d.image_layer()
        channels = int(getattr(loaded.model.card, "in_channels", 1) or 1) if loaded is not None else 1
        if image is not None and getattr(image, "rgb", False):
            channels = max(channels, 3)
        return fitting_methods(d.explain_section.specs, bool(d.choices().roi), channels)

    def open_dialog(self) -> Any:
        """Ask which methods (the dialog), then start; returns the worker or None."""
        d = self.dock
        if d.busy:
            return None
        ex = d.explain_section
        dialog = CompareDialog(d, self.offered(), {n: s.title for n, s in ex.specs.items()}, ex.method_key)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return self.start(dialog.methods(), evaluation=dialog.evaluation())

    def plan(self, methods: list[str], values: dict[str, dict[str, Any]] | None = None) -> list["PlannedRun"]:
        """One planned run per method on the chosen shape (UserError with advice)."""
        d = self.dock
        if len(methods) < 2:
            raise UserError("check at least two methods to compare")
        base = d.choices()
        if not base.roi:
            raise UserError("Compare needs a RoI: press 'Draw RoI' and draw a rectangle over the structure")
        plans = []
        for m in dict.fromkeys(methods):
            if m not in d.explain_section.specs:
                raise UserError(f"no method {m!r} is registered")
            vals = (values or {}).get(m)
            if vals is None:
                vals = d.explain_section.values() if m == base.method else {}
            plans += d.controller.plan(dataclasses.replace(base, method=m, values=dict(vals), every_shape=False))[:1]
        return plans

    def start(self, methods: list[str], values: dict[str, dict[str, Any]] | None = None,
              evaluation: dict[str, Any] | None = None) -> Any:
        """Plan and start the comparison in a worker; None (a notification says why) when it cannot start."""
        d = self.dock
        if d.busy:
            return None
        try:
            plans = self.plan(methods, values)
        except Exception as exc:  # noqa: BLE001 - a UserError with advice, or anything unexpected
            notify_error("Comparing methods", exc)
            return None
        d.results_view.end_compare()
        d.streamer.reset([None] * len(plans))
        self.plans, self.results, self.t0 = plans, [], time.perf_counter()
        for w in dict.fromkeys(w for p in plans for w in p.job.warnings):
            notify_warning(w)
        kw = {k: v for k, (v, *_rest) in EVALUATION.items()} | dict(evaluation or {})
        pool = next((p.job.pool for p in plans if p.job.pool is not None), None)
        d.explain_section.show_progress(0, 1, f"comparing {len(plans)} methods: starting…")
        return d.runner.start("explain", compare_job,
                              d.controller.model, [(p.job, p.geom, p.label) for p in plans], kw, pool,
                              on_yield=self._on_progress, on_return=self._on_done, on_error=self._on_error)

    def _on_progress(self, ev: CompareProgress) -> None:
        p = ev.progress
        total = max(1, int(p.total))
        self.dock.explain_section.show_progress(
            p.done, total, f"{ev.title} ({ev.index + 1}/{ev.n}) {ev.phase}: {p.stage.rsplit(': ', 1)[-1]} "
                           f"{int(p.done):,} / {total:,}")

    def _on_error(self, exc: BaseException) -> None:
        self.dock.progress_label.setText(f"failed: {error_text(exc)}")

    def _on_done(self, results: list[MethodResult]) -> None:
        d = self.dock
        self.results = results
        steps: list[Any] = []
        for res in results:
            plan = self.plans[res.index]
            if res.expl is None:
                notify_error(f"Comparing: {plan.spec.title}", UserError(res.error or "no result"))
                continue
            steps += d.controller.runs.put_steps(plan.run_id, plan.spec.title, plan.label, res.expl, plan.geom,
                                                 res.layers, None, d.colorbar_on, plan.desc)
        d.runner.queue_steps([*steps, self._show])

    def _show(self) -> None:
        """The runs in the list, their maps in the grid, the curves docked."""
        d = self.dock
        rv = d.results_view
        done = [(self.plans[r.index], r) for r in self.results if r.expl is not None]
        recs = [rec for p, _ in done if (rec := d.controller.runs.get(p.run_id)) is not None]
        rv.refresh(current=recs[-1].run_id if recs else None)
        if len(recs) >= 1:
            image = d.controller.layer(recs[0].geom.source_layer)
            image = image if image is not None else d.image_layer()
            if image is not None:
                rv.comparison = GridComparison(d.viewer, d.controller.runs, image, recs)
                rv.comparison.start()
                rv.section.set_comparing(True)
                rv.refresh(current=recs[-1].run_id)
        curves = [(p.spec.title, r.evaluation) for p, r in done if r.evaluation is not None]
        failed = [f"{self.plans[r.index].spec.title}: {r.error}" for r in self.results if r.error]
        self.show_plot(curves, "; ".join(failed))
        secs = time.perf_counter() - self.t0
        d.progress.setValue(d.progress.maximum())
        d.progress_label.setText(f"compared {len(recs)} methods in {format_seconds(secs)}"
                                 + (f" ({len(failed)} failed)" if failed else ""))

    def show_plot(self, curves: list[tuple[str, dict[str, Any]]], note: str = "") -> Any:
        """The curves dock (added once, then updated); returns the CurvesPlot."""
        from .compare_plot import TITLE, CurvesPlot

        window = self.dock.viewer.window
        if self.plot is not None:
            try:
                self.plot.show_results(curves, note)
                if self.plot_dock is not None:
                    self.plot_dock.show()
                return self.plot
            except RuntimeError:  # the dock was closed and its widget deleted
                self.plot = self.plot_dock = None
        self.plot = CurvesPlot()
        self.plot.show_results(curves, note)
        self.plot_dock = window.add_dock_widget(self.plot, name=TITLE, area="bottom")
        return self.plot
