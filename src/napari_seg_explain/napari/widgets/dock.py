"""The dock widget (napari.yaml: ``napari_seg_explain.napari.widgets:SegExplainWidget``): model -> image and
segmentation -> explain -> runs and results, top to bottom.

The dock only assembles and wires: the sections (:mod:`.sections`) are its widgets, the
:class:`~.controller.Controller` holds the state (the model, the runs) and builds the ExplainJobs from layers,
the :class:`~.runner.Runner` runs work in napari workers (cancel, errors as notifications) and shows results
in short GUI steps, the :class:`~.streaming.Streamer` streams partial maps, :class:`~.layer_sync.LayerSync`
follows the viewer, and :class:`~.results_view.ResultsView` runs the runs list and Save / Open.

Keyboard shortcuts (while the napari window has focus): **Ctrl+Return** runs the explanation,
**Escape** cancels the running job (only active while a job runs, so napari keeps its own Escape).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QScrollArea, QShortcut, QVBoxLayout, QWidget

from .. import layers as L
from ..windows import window_limits, window_name
from . import inputs, jobs
from .compare_methods import MethodCompare
from .controller import Choices, Controller
from .layer_sync import LayerSync
from .pools import usable_pool
from .results_view import ResultsView
from .runner import Runner
from .sections import compact_combos
from .sections.explain import NO_GT, NO_ROI, ExplainSection
from .sections.image import ImageSection, slice_text
from .sections.model import ModelSection
from .sections.runs import RunsSection
from .streaming import Streamer
from .tasks import Tasks

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ...core.models import SegmentationModel
    from .controller import PlannedRun
    from .run_store import RunRecord, RunStore

#: section widgets the dock exposes under the same names (scripts, tests, the launcher)
ALIASES = {"model_section": ("model_path", "card_path", "device", "load_button", "sample_button", "model_summary",
                             "cpu_note"),
           "image_section": ("image_combo", "slice_label", "window_combo", "segment_scope", "segment_button"),
           "explain_section": ("method", "target", "roi_combo", "every_shape", "roi_slices", "gt_combo", "pool_combo",
                               "pool_folder", "exclude", "advanced", "estimate_label", "run_button",
                               "compare_button", "cancel_button", "keep_partial", "progress", "progress_label"),
           "runs_section": ("stats_panel", "runs_list", "canvas_colorbar", "save_button", "open_button")}


class SegExplainWidget(QWidget):
    """Segment and explain in napari: every registered explainer (PdCR causal maps, MiSuRe sufficient regions,
    ...) for drawn RoIs, each run with layers of its own."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.controller = Controller(napari_viewer)
        self.timings: dict[str, float] = {}  # durations of GUI-thread steps of the last run (seconds)
        self.auto_load_suggested = True
        self.runner = Runner(self, self.update_state, self.timings)
        self.streamer = Streamer(napari_viewer, self, self.runner.queue_steps, self.colorbar_on, self.timings)
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(150)
        self._estimate_timer.timeout.connect(self.update_estimate)
        self._window: QWidget | None = None  # the top-level window watched for Close while a job runs
        self._build_ui()
        self.tasks = Tasks(self)
        self.method_compare = MethodCompare(self)
        self.results_view = ResultsView(self)
        self.sync = LayerSync(self)
        self.sync.connect()
        self.sync.refresh()
        self.update_state()

    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = self.scroll_area = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # content fits the width
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        scroll.setWidget(body)
        outer.addWidget(scroll)
        self.model_section = ModelSection(self.load_model, self.load_sample_model,
                                          lambda device: self.tasks.device_changed(device))
        self.image_section = ImageSection(self.image_changed, self.apply_window, self.segment,
                                          self.schedule_estimate)
        self.explain_section = ExplainSection(self.schedule_estimate, self.new_roi_layer, self.run, self.cancel,
                                              lambda: self.compare_methods())
        self.runs_section = self.results_section = RunsSection(
            lambda rid, on: self.results_view.set_visible(rid, on), lambda rid: self.results_view.select(rid),
            lambda ids: self.results_view.compare(ids), lambda ids: self.results_view.delete(ids),
            self.save_results, self.open_results, lambda on: self.results_view.toggle_colorbar(on))
        for sec, names in ALIASES.items():
            for name in names:
                setattr(self, name, getattr(getattr(self, sec), name))
            lay.addWidget(getattr(self, sec))
        lay.addStretch(1)
        ex = self.explain_section
        ex.set_method(next(iter(ex.specs)))  # the first registered method (PdCR)
        ex.apply_spec()
        compact_combos(self)
        self.setMinimumWidth(360)
        self.shortcut_run = QShortcut(QKeySequence("Ctrl+Return"), self)
        self.shortcut_run.activated.connect(self.run)
        self.shortcut_run_keypad = QShortcut(QKeySequence("Ctrl+Enter"), self)
        self.shortcut_run_keypad.activated.connect(self.run)
        self.shortcut_cancel = QShortcut(QKeySequence("Escape"), self)
        self.shortcut_cancel.activated.connect(self.cancel)
        self.shortcut_cancel.setEnabled(False)

    # ------------------------------------------------------------------------------- state
    @property
    def busy(self) -> bool:
        """A job runs, or its results are still being turned into layers."""
        return self.runner.busy

    @property
    def loaded(self) -> jobs.LoadedModel | None:
        return self.controller.loaded

    @property
    def model(self) -> "SegmentationModel | None":
        return self.controller.model

    @property
    def runs(self) -> "RunStore":
        return self.controller.runs

    def latest(self, method: str | None = None) -> "RunRecord | None":
        """The newest run (of ``method``) shown in the viewer."""
        return self.controller.runs.latest(method)

    @property
    def method_key(self) -> str:
        return self.explain_section.method_key

    def set_method(self, name: str) -> None:
        self.explain_section.set_method(name)

    def param(self, name: str, method: str | None = None) -> Any:
        """The form widget of the chosen (or ``method``'s) parameter ``name``."""
        return self.explain_section.param(name, method)

    def colorbar_on(self) -> bool:
        return self.canvas_colorbar.isChecked()

    def update_state(self) -> None:
        busy, job = self.busy, self.runner.job
        if self.runner.worker is not None:
            self._watch_window()
        ready = not busy and self.loaded is not None and self.image_layer() is not None
        if self.runner.worker is None:
            self.streamer.stop()
        self.model_section.set_enabled(not busy)
        self.segment_button.setEnabled(ready)
        self.explain_section.set_enabled(ready, busy and job in ("segment", "explain"))
        self.shortcut_cancel.setEnabled(busy)
        self.open_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and (len(self.runs) > 0 or bool(self.controller.segmentation_layers())))

    # ------------------------------------------------------------------------------- closing
    def shutdown(self) -> None:
        """The dock is closed or taken out of the viewer, or the viewer closes: the running job stops at its next
        step, its stream layer is removed and nothing more of it reaches the viewer (runs already shown stay)."""
        self.runner.shutdown()
        self.streamer.discard(keep=False)
        self._estimate_timer.stop()
        self.shortcut_cancel.setEnabled(False)
        if self._window is not None:  # no reference to a closed viewer's window
            self._window.removeEventFilter(self)
            self._window = None

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        """Taken out of the viewer (napari's remove_dock_widget, the dock's close button): :meth:`shutdown`."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self.runner.busy:
                self.shutdown()
            elif self.parent() is not None:
                self.runner.closed = False
        return super().event(event)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if obj is self._window and event.type() == QEvent.Type.Close:
            window = self._window
            if window.isVisible():  # a shown viewer: the user may still decline napari's close dialog
                dock, win = weakref.ref(self), weakref.ref(window)  # no reference keeps a closed viewer alive
                QTimer.singleShot(0, lambda: (d := dock()) is not None and d._reopen_if_still_open(win()))
            self.shutdown()  # now: once the close is accepted the dock's widgets go
        return False

    def _reopen_if_still_open(self, window: Any) -> None:
        """The user declined closing the viewer: the dock works again (the run that was going stays cancelled)."""
        try:
            if window is None or not window.isVisible():  # closed (hidden, or gone: RuntimeError)
                return
        except RuntimeError:
            return
        self.runner.reopen()
        self._watch_window()

    def _watch_window(self) -> None:
        """While a job runs, the viewer's window is watched: closing it shuts the dock down first."""
        top = self.window()
        if top is self or top is self._window:
            return
        if self._window is not None:
            self._window.removeEventFilter(self)
        self._window = top
        top.installEventFilter(self)

    def runs_changed(self, *_: Any) -> None:
        self.results_view.refresh()

    # ------------------------------------------------------------------------------- image
    def image_layer(self) -> "Layer | None":
        return self.controller.layer(self.image_combo.currentText())

    def update_slice_label(self) -> None:
        image = self.image_layer()
        self.image_section.show_contrasts(self.viewer, image, self.loaded.model if self.loaded else None)
        self.slice_label.setText(slice_text(self.viewer, image, self.controller.explained_slices(self.choices()),
                                            three_d=self.controller.is_3d(image)))

    def image_changed(self) -> None:
        self.update_slice_label()
        image = self.image_layer()
        is_volume = image is not None and inputs.is_volume(image)  # a one-slice volume is a 2-D image
        self.image_section.set_volume(is_volume)
        self.explain_section.offer_volume_pool(is_volume)
        if image is not None:  # no other slices: a pool that exists
            self.explain_section.set_pool(usable_pool(self.explain_section.pool_choice(), self.viewer, image))
        self._maybe_offer_model(image)
        self.schedule_estimate()

    def _maybe_offer_model(self, image: "Layer | None") -> None:
        """A layer whose metadata names a model (the sample scan): fill in the path and load it once."""
        suggested = L.seg_meta(image).get("model") if image is not None else None
        if not suggested or not Path(str(suggested)).exists():
            return
        if not self.model_path.text():
            self.model_path.setText(str(suggested))
        if self.auto_load_suggested and self.loaded is None and not self.busy \
                and str(suggested) not in self.tasks.suggested_tried:
            self.tasks.suggested_tried.add(str(suggested))
            self.load_model(str(suggested))

    def apply_window(self, choice: str) -> tuple[float, float] | None:
        """Set the image layer's contrast limits to a CT preset or to its percentiles (data untouched)."""
        image = self.image_layer()
        if image is None:
            return None
        limits = window_limits(window_name(choice), image.data)
        image.contrast_limits_range = (min(limits[0], image.contrast_limits_range[0]),
                                       max(limits[1], image.contrast_limits_range[1]))
        image.contrast_limits = limits
        return limits

    def new_roi_layer(self) -> "Layer":
        """Add a Shapes layer 'RoI' matching the image's dimensions and transform, in rectangle mode."""
        image = self.image_layer()
        kw: dict[str, Any] = {"name": "RoI", "edge_color": L.ROI_COLOR, "face_color": "transparent",
                              "edge_width": 1.0}
        if image is not None:
            kw |= {"ndim": inputs.spatial_ndim(image), "units": image.units, "axis_labels": image.axis_labels}
            kw |= L.layer_transform(image)
        layer = self.viewer.add_shapes(**kw)
        layer.mode = "add_rectangle"
        self.roi_combo.setCurrentText(layer.name)
        return layer

    # ------------------------------------------------------------------ work (see tasks.py)
    def load_model(self, path: str | None = None, card: str | None = None) -> Any:
        """Load a model file (or card) in a worker; returns the worker (None if nothing to load)."""
        return self.tasks.load_model(path, card)

    def set_model(self, model: "SegmentationModel") -> None:
        """Use an already loaded :class:`SegmentationModel` (scripts, notebooks, tests); times one batch here."""
        self.tasks.on_model_loaded(jobs.describe_model(model))

    def load_sample_model(self) -> Any:
        return self.tasks.load_sample_model()

    def segment(self) -> Any:
        """Segment the current slice or the whole volume in a worker -> Labels layer '<model> segmentation'."""
        return self.tasks.segment()

    def run(self) -> Any:
        """Explain with the chosen method in a worker (one run per RoI); returns the worker, or None when the
        inputs are not ready (a notification says why)."""
        return self.tasks.run()

    def compare_methods(self, methods: list[str] | None = None, values: dict[str, dict[str, Any]] | None = None,
                        **evaluation: Any) -> Any:
        """Compare… (:mod:`.compare_methods`): ``methods`` None asks in a dialog; else those methods (``values``:
        parameters per method, default the form's for the chosen method and the defaults for the others) and the
        evaluation's ``k``, ``block``, ``steps``, ``draws``. Returns the worker, or None."""
        if methods is None:
            return self.method_compare.open_dialog()
        return self.method_compare.start(list(methods), values, evaluation)

    def cancel(self) -> None:
        """Stop the running segmentation/explanation at its next step; the viewer is left as before the run."""
        self.tasks.cancel()

    def choices(self) -> Choices:
        """The widgets' inputs for a Run."""
        ex = self.explain_section
        roi, gt = self.roi_combo.currentText(), self.gt_combo.currentText()
        return Choices(method=ex.method_key, image=self.image_combo.currentText(),
                       roi="" if roi in ("", NO_ROI) else roi, every_shape=self.every_shape.isChecked(),
                       target=int(self.target.currentIndex()), class_name=self.target.currentText(),
                       ground_truth="" if gt in ("", NO_GT) else gt, pool=ex.pool_choice(),
                       pool_folder=self.pool_folder.text(), exclude=int(self.exclude.value()), values=ex.values(),
                       roi_slices=int(self.roi_slices.value()),
                       contrasts=self.image_section.contrasts.chosen())

    def gather(self) -> list["PlannedRun"]:
        """The runs the Run button would start (GUI thread); raises UserError with advice."""
        return self.controller.plan(self.choices())

    def _config(self) -> Any:
        """The chosen method's config as a Run would use it."""
        return self.controller.config(self.explain_section.spec, self.explain_section.values())

    def schedule_estimate(self, *_: Any) -> None:
        if not self._estimate_timer.isActive():
            self._estimate_timer.start()

    def update_estimate(self) -> str:
        """Cost line shown before Run (the slice explained when not the one shown, the forward passes' upper
        bound and about how long they take, or what would stop the Run); the slice line follows the RoI."""
        est = self.controller.estimate(self.choices())
        self.explain_section.show_estimate(est.text, est.ok)
        self.update_slice_label()
        return est.text

    # ------------------------------------------------------------------ runs and results (see results_view.py)
    def save_results(self, folder: str | Path | None = None, overwrite: bool = False) -> Path | None:
        """Write every run, RoI, segmentation and results.json into ``folder`` (asks for it, and before writing
        into a non-empty folder, when not given; a non-empty ``folder`` needs ``overwrite=True``)."""
        return self.results_view.save(folder, overwrite)

    def open_results(self, folder: str | Path | None = None) -> list["Layer"]:
        """Read a results folder back into the viewer (every run's layers; the runs list, the results panel)."""
        return self.results_view.open(folder)

    def show_results_section(self) -> None:
        """Scroll the dock so that the results are in view."""
        self.results_view.scroll_into_view()
