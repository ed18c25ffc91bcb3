"""The dock widget: model -> image and segmentation -> explain -> results, top to bottom.

Long work (loading, segmenting, explaining) runs in napari workers (``create_worker``); the explainer is a
core generator the worker drives with ``yield from``, so ``worker.quit()`` stops it at its next ``yield``
(one forward batch; the automatic batch size keeps a batch near 0.25 s). Worker signals arrive in the GUI
thread; only those handlers touch layers. Every error becomes a napari notification.

Keyboard shortcuts (while the napari window has focus): **Ctrl+Return** runs the explanation,
**Escape** cancels the running job (only active while a job runs, so napari keeps its own Escape).
"""

from __future__ import annotations

import dataclasses
import gc
import html
import logging
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QShortcut,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import UserError
from .. import layers as L
from ..windows import window_choices, window_limits, window_name
from . import inputs, jobs
from .stats_panel import StatsPanel

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ...core.models import SegmentationModel
    from ...core.results import Explanation

log = logging.getLogger(__name__)

# A napari session holds around a million Python objects; a full cyclic garbage collection then pauses
# every thread for about 0.3 s (2 CPU cores), and a long job's allocations (streamed maps, new result
# layers) trigger one at a random moment. While a segmentation or explanation runs, the widget moves the
# objects that existed before the run out of the collector's view (``gc.freeze``) so that collections
# stay short, and hands them back (``gc.unfreeze``) when the worker finishes.
FREEZE_GC_DURING_JOBS = True

MODEL_FILTER = "Models (*.pt *.ts *.pt2 *.safetensors *.pth *.onnx *.yaml *.yml);;All files (*)"
NO_GT = "(none: soft Dice vs the model's own prediction)"
NO_ROI = "(none: whole image, MiSuRe only)"
STREAM_SUFFIX = L.STREAM_SUFFIX
PARTIAL_SUFFIX = L.PARTIAL_SUFFIX
METHODS = {"PdCR (Jiang et al. 2026)": "pdcr", "MiSuRe (Hasany et al. 2024)": "misure"}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _notify_error(what: str, exc: BaseException) -> None:
    from napari.utils.notifications import show_error

    if not isinstance(exc, UserError):
        log.error("%s failed:\n%s", what, "".join(traceback.format_exception(exc)))
    show_error(f"{what}: {_error_text(exc)}")


_CLOSING_WORKER: Any = None


def _closing_worker_class() -> Any:
    """A ``GeneratorWorker`` that closes its generator in the worker thread when it stops.

    After ``quit()`` superqt leaves the generator suspended; it would be closed later by the garbage
    collector in whatever thread, so its ``with torch.inference_mode()`` would leave the pool thread in
    inference mode (thread-local) and a later MiSuRe run there could not compute gradients.
    """
    global _CLOSING_WORKER
    if _CLOSING_WORKER is None:
        from napari.qt.threading import GeneratorWorker

        class ClosingGeneratorWorker(GeneratorWorker):
            def work(self) -> Any:
                try:
                    return super().work()
                finally:
                    self._gen.close()

        _CLOSING_WORKER = ClosingGeneratorWorker
    return _CLOSING_WORKER


class _Section(QGroupBox):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.form = QFormLayout(self)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setContentsMargins(6, 6, 6, 6)


class SegExplainWidget(QWidget):
    """Segment and explain in napari: PdCR causal maps and MiSuRe sufficient regions for a drawn RoI."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.loaded: jobs.LoadedModel | None = None
        self.worker: Any = None
        self.job: str | None = None
        self.auto_load_suggested = True
        self.results: dict[str, tuple["Explanation", L.SliceGeometry, list[str]]] = {}
        self._stream: Layer | None = None
        self._stream_geom: L.SliceGeometry | None = None
        self._stream_backup: dict[str, Any] | None = None
        self._pending_partial: np.ndarray | None = None
        self._t_start = 0.0
        self._cancelled = False
        self._suggested_tried: set[str] = set()
        self._gc_frozen = False
        self._steps: list[Any] = []
        self.timings: dict[str, float] = {}  # durations of GUI-thread steps of the last run (seconds)
        self._build_ui()
        self._connect_viewer()
        self._refresh_layer_combos()
        self._update_state()

    # ------------------------------------------------------------------------------------ UI build
    def _build_ui(self) -> None:
        self._partial_timer = QTimer(self)
        self._partial_timer.setSingleShot(True)
        self._partial_timer.setInterval(120)
        self._partial_timer.timeout.connect(self._apply_partial)
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(150)
        self._estimate_timer.timeout.connect(self.update_estimate)
        self._step_timer = QTimer(self)
        self._step_timer.setSingleShot(True)
        self._step_timer.setInterval(15)  # lets other events (and timers) run between steps
        self._step_timer.timeout.connect(self._run_step)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = self.scroll_area = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # content fits the width
        body = QWidget()
        self._body = QVBoxLayout(body)
        self._body.setContentsMargins(4, 4, 4, 4)
        scroll.setWidget(body)
        outer.addWidget(scroll)
        self._build_model_section()
        self._build_segment_section()
        self._build_explain_section()
        self._build_results_section()
        self._body.addStretch(1)
        self._compact_combos()
        self.setMinimumWidth(360)

        self.shortcut_run = QShortcut(QKeySequence("Ctrl+Return"), self)
        self.shortcut_run.activated.connect(self.run)
        self.shortcut_run_keypad = QShortcut(QKeySequence("Ctrl+Enter"), self)
        self.shortcut_run_keypad.activated.connect(self.run)
        self.shortcut_cancel = QShortcut(QKeySequence("Escape"), self)
        self.shortcut_cancel.activated.connect(self.cancel)
        self.shortcut_cancel.setEnabled(False)


    @staticmethod
    def _path_row(sec: "_Section", label: str, placeholder: str, tip: str, browse_to: Any) -> QLineEdit:
        """A path field with a '…' browse button, added to ``sec`` under ``label``."""
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        browse = QPushButton("…")
        browse.setToolTip(tip)
        browse.clicked.connect(browse_to)
        row = QHBoxLayout()
        row.addWidget(edit)
        row.addWidget(browse)
        sec.form.addRow(label, row)
        return edit

    def _build_model_section(self) -> None:
        sec = _Section("1 · Model")
        self.model_path = self._path_row(sec, "Model", "model file (.pt, .pt2, .safetensors, .onnx) or its .yaml "
                                         "card", "choose a model file", self._browse_model)
        self.card_path = self._path_row(sec, "Card", "optional: model card .yaml (default: beside the model)",
                                        "choose a model card", self._browse_card)
        self.device = QComboBox()
        self.device.addItems(self._device_choices())
        self.device.setToolTip("auto = CUDA, then MPS, then CPU")
        self.device.currentTextChanged.connect(self._device_changed)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda: self.load_model())
        self.sample_button = QPushButton("Load sample model")
        self.sample_button.setToolTip("the small 2-D U-Net shipped with the plugin (MNI152 white matter)")
        self.sample_button.clicked.connect(lambda: self.load_sample_model())
        row = QHBoxLayout()
        row.addWidget(self.device, 1)
        row.addWidget(self.load_button, 1)
        sec.form.addRow("Device", row)
        sec.form.addRow(self.sample_button)
        self.model_summary = QLabel("No model loaded.")
        self.model_summary.setWordWrap(True)
        self.model_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        sec.form.addRow(self.model_summary)
        self.cpu_note = QLabel("Running on the CPU: PdCR with the paper's N = 50 can take minutes; "
                               "a CUDA GPU is much faster.")
        self.cpu_note.setToolTip("choose a device above; 'auto' picks CUDA, then MPS, then the CPU")
        self.cpu_note.setWordWrap(True)
        self.cpu_note.setStyleSheet("color: #e8a33d;")
        self.cpu_note.hide()
        sec.form.addRow(self.cpu_note)
        self._body.addWidget(sec)

    def _build_segment_section(self) -> None:
        sec = _Section("2 · Image and segmentation")
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("the image layer to segment and explain (its data is never modified)")
        self.image_combo.currentTextChanged.connect(self._image_changed)
        sec.form.addRow("Image", self.image_combo)
        self.slice_label = QLabel("")
        self.slice_label.setWordWrap(True)
        sec.form.addRow(self.slice_label)
        self.window_combo = QComboBox()
        self.window_combo.addItems(window_choices())
        self.window_combo.setToolTip("display window (contrast limits only; CT presets in Hounsfield units)")
        self.window_combo.activated.connect(lambda *_: self.apply_window(self.window_combo.currentText()))
        sec.form.addRow("Window", self.window_combo)
        self.segment_scope = QComboBox()
        self.segment_scope.addItems(["current slice", "whole volume"])
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(lambda: self.segment())
        row = QHBoxLayout()
        row.addWidget(self.segment_scope)
        row.addWidget(self.segment_button)
        sec.form.addRow("Segment", row)
        self._body.addWidget(sec)

    def _spin(self, lo: float, hi: float, value: float, tip: str, decimals: int | None = None) -> Any:
        w = QDoubleSpinBox() if decimals is not None else QSpinBox()
        if decimals is not None:
            w.setDecimals(decimals)
            w.setSingleStep(10 ** -decimals)
        w.setRange(lo, hi)
        w.setValue(value)
        w.setToolTip(tip)
        w.valueChanged.connect(self._schedule_estimate)
        return w

    def _build_explain_section(self) -> None:
        from superqt import QCollapsible

        sec = _Section("3 · Explain")
        self.method = QComboBox()
        self.method.addItems(list(METHODS))
        self.method.currentTextChanged.connect(self._method_changed)
        sec.form.addRow("Method", self.method)
        self.target = QComboBox()
        self.target.setToolTip("the class whose segmentation inside the RoI is explained")
        sec.form.addRow("Class", self.target)
        self.roi_combo = QComboBox()
        self.roi_combo.setToolTip("Shapes layer: the selected shape, else the newest one (rectangle, polygon or "
                                  "ellipse). Labels layer: its non-zero pixels on the explained slice.")
        self.roi_combo.currentTextChanged.connect(self._schedule_estimate)
        draw = QPushButton("Draw RoI")
        draw.setToolTip("add a Shapes layer 'RoI' on the image and start drawing a rectangle")
        draw.clicked.connect(self.new_roi_layer)
        row = QHBoxLayout()
        row.addWidget(self.roi_combo, 1)
        row.addWidget(draw)
        sec.form.addRow("RoI", row)
        self.gt_combo = QComboBox()
        self._gt_tip = ("optional ground truth: with it the RoI score is hard Dice against the label (the paper's "
                        "setting)")
        self.gt_combo.setToolTip(self._gt_tip)
        sec.form.addRow("Ground truth", self.gt_combo)
        self.pool_combo = QComboBox()
        self.pool_combo.addItems(list(inputs.POOL_CHOICES))
        self.pool_combo.setToolTip("where PdCR's replacement blocks come from (random crops of other images)")
        self.pool_combo.currentTextChanged.connect(self._pool_changed)
        sec.form.addRow("Pool", self.pool_combo)
        self.pool_folder = QLineEdit()
        self.pool_folder.setPlaceholderText("folder of pool images")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_pool)
        self._pool_folder_row = QWidget()
        row = QHBoxLayout(self._pool_folder_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.pool_folder)
        row.addWidget(browse)
        sec.form.addRow("", self._pool_folder_row)
        self._pool_folder_row.hide()

        # advanced parameters (the papers' defaults)
        self.advanced = QCollapsible("Advanced parameters (papers' defaults)")
        adv = QWidget()
        form = QFormLayout(adv)
        form.setContentsMargins(0, 0, 0, 0)
        self.patch = self._spin(2, 64, 8, "block size in pixels (paper: 8)")
        self.screen = self._spin(1, 20, 3, "screening draws S (paper: 3)")
        self.tau = self._spin(0.0, 10.0, 0.02, "τ in Dice points (paper: 0.02)", decimals=3)
        self.n_draws = self._spin(1, 1000, 50, "draws N for a block that passes screening (paper: 50)")
        self.batch = self._spin(0, 1024, 0, "perturbed images per forward batch; 0 = automatic (about 0.25 s "
                                            "per batch, so Cancel acts quickly)")
        self.batch.setSpecialValueText("auto")
        self.seed = self._spin(0, 2**31 - 1, 0, "random seed of the replacement draws / mask init")
        self.threshold = self._spin(0.01, 0.99, 0.5, "probability threshold of a predicted pixel", decimals=2)
        self.iterations = self._spin(0, 2000, 100, "MiSuRe optimisation iterations (paper: 100)")
        self.exclude = self._spin(0, 50, 5, "neighbouring slices left out of a volume pool (each side)")
        self.exclude.valueChanged.connect(self._exclude_changed)
        self._pdcr_rows = [("Patch", self.patch), ("S (screen)", self.screen), ("τ (Dice pts)", self.tau),
                           ("N (draws)", self.n_draws), ("Pool exclude ±", self.exclude)]
        self._misure_rows = [("Iterations", self.iterations)]
        for label, w in self._pdcr_rows + self._misure_rows + [("Batch size", self.batch), ("Seed", self.seed),
                                                                ("Threshold", self.threshold)]:
            form.addRow(label, w)
        self._adv_form = form
        self.advanced.addWidget(adv)
        sec.form.addRow(self.advanced)

        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        sec.form.addRow(self.estimate_label)
        self.run_button = QPushButton("Run  (Ctrl+Return)")
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button = QPushButton("Cancel  (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.run_button, 2)
        row.addWidget(self.cancel_button, 1)
        sec.form.addRow(row)
        self.keep_partial = QCheckBox("keep partial results on Cancel")
        self.keep_partial.setToolTip("keep the streamed map as a layer named '... (partial)' when cancelling")
        sec.form.addRow(self.keep_partial)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m")
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        sec.form.addRow(self.progress)
        sec.form.addRow(self.progress_label)
        self._body.addWidget(sec)
        self._method_changed()

    def _build_results_section(self) -> None:
        sec = self.results_section = _Section("4 · Results")
        self.stats_panel = StatsPanel()
        sec.form.addRow(self.stats_panel)
        self.canvas_colorbar = QCheckBox("colour bar on the maps in the canvas")
        self.canvas_colorbar.setToolTip("napari's colorbar overlay on the PdCR map / MiSuRe saliency (off by "
                                        "default: its first draw pauses the viewer for about 0.1 s on a CPU)")
        self.canvas_colorbar.toggled.connect(self._toggle_canvas_colorbar)
        sec.form.addRow(self.canvas_colorbar)
        self.save_button = QPushButton("Save results…")
        self.save_button.setToolTip("write maps, masks, RoIs and metadata (NIfTI with the scan's geometry when "
                                    "known) and results.json into one folder")
        self.save_button.clicked.connect(lambda: self.save_results())
        self.open_button = QPushButton("Open results…")
        self.open_button.clicked.connect(lambda: self.open_results())
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.open_button)
        sec.form.addRow(row)
        keys = QLabel("<small>Ctrl+Return: Run · Esc: Cancel (while running)</small>")
        sec.form.addRow(keys)
        self._body.addWidget(sec)

    @staticmethod
    def _device_choices() -> list[str]:
        try:
            from ...core.models import available_devices

            return ["auto", *available_devices()]
        except Exception:  # noqa: BLE001 - torch missing: the model load will say so
            return ["auto", "cpu"]

    # ------------------------------------------------------------------------------- viewer events
    def _compact_combos(self) -> None:
        """Combos size to the dock, not to their longest item (long layer names are elided)."""
        for combo in self.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)

    def _connect_viewer(self) -> None:
        ev = self.viewer.layers.events
        ev.inserted.connect(self._on_layer_inserted)
        ev.removed.connect(self._on_layers_changed)
        ev.moved.connect(self._on_layers_changed)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.dims.events.ndisplay.connect(self._on_step)
        self.viewer.dims.events.order.connect(self._on_step)
        for layer in self.viewer.layers:
            self._watch_layer(layer)

    def _watch_layer(self, layer: "Layer") -> None:
        layer.events.name.connect(self._on_layers_changed)
        if L.layer_kind(layer) in ("shapes", "labels"):
            layer.events.data.connect(self._schedule_estimate)
            if L.layer_kind(layer) == "shapes":
                layer.events.highlight.connect(self._schedule_estimate)
                layer.events.data.connect(lambda ev, lay=layer: self._on_shapes_data(lay, ev))

    def _on_shapes_data(self, layer: "Layer", event: Any) -> None:
        """A shape was drawn on the RoI layer: leave the drawing mode, so that a stray drag on the canvas does
        not add another shape that the next Run would silently use (the newest shape is the RoI)."""
        if getattr(event, "action", None) != "added" or L.is_result_layer(layer):  # napari's ActionType.ADDED
            return
        if layer.name != self.roi_combo.currentText() or not str(layer.mode).startswith("add_"):
            return

        def leave() -> None:  # after napari has finished the mouse release that completed the shape
            if layer in self.viewer.layers and str(layer.mode).startswith("add_"):
                layer.mode = "pan_zoom"
                self.viewer.status = (f"RoI drawn on {layer.name!r}; drawing mode left (choose a shape tool of the "
                                      "layer to draw another RoI)")

        QTimer.singleShot(0, leave)

    def _on_layer_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch_layer(layer)
        self._on_layers_changed()
        if L.layer_kind(layer) == "shapes" and not L.is_result_layer(layer):
            self.roi_combo.setCurrentText(layer.name)  # a new Shapes layer is most likely the RoI

    def _on_layers_changed(self, *_: Any) -> None:
        self._refresh_layer_combos()

    def _on_step(self, *_: Any) -> None:
        self._update_slice_label()
        self._schedule_estimate()

    def _schedule_estimate(self, *_: Any) -> None:
        if not self._estimate_timer.isActive():
            self._estimate_timer.start()

    @staticmethod
    def _fill(combo: QComboBox, items: list[str], prefer: str | None = None) -> None:
        current = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(items)
        pick = current if current in items else (prefer if prefer in items else None)
        if pick is not None:
            combo.setCurrentText(pick)
        combo.blockSignals(False)

    def _refresh_layer_combos(self) -> None:
        from napari.layers import Image, Labels, Shapes

        layers = list(self.viewer.layers)
        # the plugin's maps and outlines are no inputs (its segmentations may serve as a ground truth)
        results = {lay.name for lay in layers if L.is_result_layer(lay) and L.result_kind(lay) != "segmentation"}
        images = [lay.name for lay in layers if isinstance(lay, Image) and lay.name not in results]
        before_image = self.image_combo.currentText()
        active = self.viewer.layers.selection.active
        prefer = (active.name if isinstance(active, Image) and active.name in images
                  else (images[-1] if images else None))
        self._fill(self.image_combo, images, prefer)
        rois = [lay.name for lay in reversed(layers) if isinstance(lay, (Shapes, Labels))
                and lay.name not in results and not lay.name.endswith(" segmentation")]
        if self.roi_combo.currentText() == NO_ROI:
            self.roi_combo.blockSignals(True)
            self.roi_combo.clear()  # nothing chosen yet: take the newest RoI layer
            self.roi_combo.blockSignals(False)
        self._fill(self.roi_combo, [*rois, NO_ROI], rois[0] if rois else NO_ROI)
        gts = [lay.name for lay in layers if isinstance(lay, Labels) and lay.name not in results]
        self._fill(self.gt_combo, [NO_GT, *gts], NO_GT)
        if self.image_combo.currentText() != before_image:
            self._image_changed()
        self._update_state()
        self._schedule_estimate()

    # ------------------------------------------------------------------------------- small helpers
    def image_layer(self) -> "Layer | None":
        return self._layer(self.image_combo.currentText())

    def _layer(self, name: str) -> "Layer | None":
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def model(self) -> "SegmentationModel | None":
        return self.loaded.model if self.loaded else None

    @property
    def busy(self) -> bool:
        """A job runs, or its results are still being turned into layers."""
        return self.worker is not None or bool(self._steps)

    @property
    def method_key(self) -> str:
        return METHODS[self.method.currentText()]

    def _update_slice_label(self) -> None:
        image = self.image_layer()
        if image is None:
            self.slice_label.setText("Open an image (File > Open, or File > Open Sample > Segmentation Explainer).")
            return
        try:
            z = inputs.current_slice(self.viewer, image)
        except UserError as exc:
            self.slice_label.setText(f"<span style='color:#e8a33d'>{html.escape(str(exc))}</span>")
            return
        shape = tuple(image.data.shape)
        units = [str(u) for u in getattr(image, "units", ())]
        in_mm = bool(units) and all(u in ("mm", "millimeter") for u in units)
        size = " x ".join(f"{s * sc:.1f}" for s, sc in zip(shape[-2:], image.scale[-2:]))
        extent = f"{size} mm" if in_mm else f"{shape[-2]} x {shape[-1]} px"
        meta = (image.metadata or {}).get("seg_explain", {})
        convention = meta.get("convention", "orientation unknown (no geometry in this layer)")
        if z is None:
            self.slice_label.setText(f"2-D image {shape} ({extent}) · {convention}")
        else:
            self.slice_label.setText(f"volume {shape}: axial slice {z} (the one shown), {extent} · {convention}")

    def apply_window(self, choice: str) -> tuple[float, float] | None:
        """Set the image layer's contrast limits to a CT preset or to its percentiles (data untouched)."""
        image = self.image_layer()
        if image is None:
            return None
        limits = window_limits(window_name(choice), image.data)
        lo = min(limits[0], image.contrast_limits_range[0])
        hi = max(limits[1], image.contrast_limits_range[1])
        image.contrast_limits_range = (lo, hi)
        image.contrast_limits = limits
        return limits

    def _image_changed(self, *_: Any) -> None:
        self._update_slice_label()
        image = self.image_layer()
        is_volume = image is not None and inputs.spatial_ndim(image) == 3
        self.segment_scope.setEnabled(is_volume)
        if not is_volume:
            self.segment_scope.setCurrentText("current slice")
        if image is not None and not is_volume and self.pool_choice() == inputs.POOL_VOLUME:
            others = any(L.layer_kind(lay) == "image" and lay is not image and not L.is_result_layer(lay)
                         for lay in self.viewer.layers)
            self.pool_combo.setCurrentText(inputs.POOL_LAYERS if others else inputs.POOL_SELF)
        self._maybe_offer_model(image)
        self._schedule_estimate()

    def _maybe_offer_model(self, image: "Layer | None") -> None:
        """A layer whose metadata names a model (the sample scan): fill in the path and load it once."""
        meta = image.metadata.get("seg_explain") if image is not None and isinstance(image.metadata, dict) else None
        suggested = (meta or {}).get("model")
        if not suggested or not Path(str(suggested)).exists():
            return
        if not self.model_path.text():
            self.model_path.setText(str(suggested))
        if (self.auto_load_suggested and self.loaded is None and not self.busy
                and str(suggested) not in self._suggested_tried):
            self._suggested_tried.add(str(suggested))
            self.load_model(str(suggested))

    def _method_changed(self, *_: Any) -> None:
        pd = self.method_key == "pdcr"
        for rows, visible in ((self._pdcr_rows, pd), (self._misure_rows, not pd)):
            for _, w in rows:
                w.setVisible(visible)
                label = self._adv_form.labelForField(w)
                if label is not None:
                    label.setVisible(visible)
        self.pool_combo.setEnabled(pd)
        self.keep_partial.setEnabled(pd)
        self.gt_combo.setEnabled(pd)  # MiSuRe does not use a ground truth
        self.gt_combo.setToolTip(self._gt_tip if pd else "MiSuRe does not use a ground truth (PdCR only)")
        self._schedule_estimate()

    def pool_choice(self) -> str:
        """The chosen pool as one of :data:`inputs.POOL_CHOICES` (the volume entry's text follows 'Pool exclude ±')."""
        i = self.pool_combo.currentIndex()
        return inputs.POOL_CHOICES[i] if 0 <= i < len(inputs.POOL_CHOICES) else self.pool_combo.currentText()

    def _pool_changed(self, *_: Any) -> None:
        self._pool_folder_row.setVisible(self.pool_choice() == inputs.POOL_FOLDER)

    def _exclude_changed(self, value: int) -> None:
        self.pool_combo.setItemText(inputs.POOL_CHOICES.index(inputs.POOL_VOLUME), inputs.pool_volume_text(int(value)))

    def _device_changed(self, device: str) -> None:
        if self.loaded is None or self.busy:
            return
        m = self.loaded.model
        from ...core.models import SegmentationModel, resolve_device

        try:
            if resolve_device(device) == m.device:
                return
            moved = SegmentationModel(m.net, m.card, device=device, fmt=m.format, source=m.source, sha256=m.sha256)
        except Exception as exc:  # noqa: BLE001
            _notify_error("changing the device", exc)
            return
        self._start("load", jobs.describe_model, moved, on_return=self._on_model_loaded)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", "", MODEL_FILTER)
        if path:
            self.model_path.setText(path)
            self.load_model(path)

    def _browse_card(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model card", "", "Model cards (*.yaml *.yml)")
        if path:
            self.card_path.setText(path)

    def _browse_pool(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of pool images")
        if path:
            self.pool_folder.setText(path)

    def new_roi_layer(self) -> "Layer | None":
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

    # ---------------------------------------------------------------------------------- state, jobs
    def _update_state(self) -> None:
        busy = self.busy
        have_model = self.loaded is not None
        have_image = self.image_layer() is not None
        self.load_button.setEnabled(not busy)
        self.sample_button.setEnabled(not busy)
        self.device.setEnabled(not busy)
        self.segment_button.setEnabled(not busy and have_model and have_image)
        self.run_button.setEnabled(not busy and have_model and have_image)
        self.cancel_button.setEnabled(busy and self.job in ("segment", "explain"))
        self.shortcut_cancel.setEnabled(busy)
        self.open_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and bool(self.results))

    def _start(self, job: str, func: Any, *args: Any, on_return: Any, on_yield: Any = None) -> Any:
        import inspect

        from napari.qt.threading import create_worker

        if inspect.isgeneratorfunction(func):
            worker = create_worker(jobs.guarded, func, *args, _start_thread=False, _ignore_errors=True,
                                   _worker_class=_closing_worker_class())
        else:
            worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True)
        self.worker, self.job = worker, job
        self._cancelled = False
        self._t_start = time.perf_counter()
        token = worker

        def guarded(handler: Any) -> Any:
            def call(*a: Any) -> None:
                if self.worker is not token or self._cancelled:
                    return
                try:
                    handler(*a)
                except Exception as exc:  # noqa: BLE001 - never lose an error in a slot
                    _notify_error(f"{job} (showing the result)", exc)
            return call

        worker.returned.connect(guarded(on_return))
        if on_yield is not None and hasattr(worker, "yielded"):
            worker.yielded.connect(guarded(on_yield))
        worker.errored.connect(lambda exc: self._on_error(token, job, exc))
        worker.finished.connect(lambda: self._on_finished(token))
        self._update_state()
        if FREEZE_GC_DURING_JOBS and job in ("segment", "explain") and not self._gc_frozen:
            gc.freeze()
            self._gc_frozen = True
        worker.start()
        return worker

    def _on_error(self, token: Any, job: str, exc: BaseException) -> None:
        if self.worker is token:
            self._cancelled = True  # nothing more of this job reaches the viewer (e.g. a queued stream layer)
            self._discard_stream(keep=False)
            if job == "load":
                self.model_summary.setText(
                    "Could not load the model (see the notification)." if self.loaded is None else
                    f"Could not load the new model; still using <b>{self.loaded.model.name}</b> on "
                    f"{self.loaded.model.device}.")
        names = {"load": "Loading the model", "segment": "Segmenting", "explain": "Explaining"}
        _notify_error(names.get(job, job), exc)
        self.progress_label.setText(f"failed: {_error_text(exc)}")

    def _on_finished(self, token: Any) -> None:
        if self.worker is not token:
            return
        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False
        self.worker, self.job = None, None
        self._partial_timer.stop()
        self._update_state()

    def cancel(self) -> None:
        """Stop the running segmentation/explanation at its next step; the viewer is left as before the run."""
        if self.worker is None or self.job not in ("segment", "explain"):
            return
        self._cancelled = True
        self.worker.quit()
        self._partial_timer.stop()
        kept = self._discard_stream(keep=self.keep_partial.isChecked())
        self.progress_label.setText("cancelled" + (f": partial map kept as {kept!r}" if kept else ""))

    # --------------------------------------------------------------------------------------- model
    def load_model(self, path: str | None = None, card: str | None = None) -> Any:
        """Load a model file (or card) in a worker; returns the worker (None if nothing to load)."""
        path = path if path is not None else self.model_path.text().strip()
        card = card if card is not None else (self.card_path.text().strip() or None)
        if not path:
            from napari.utils.notifications import show_error

            show_error("Loading the model: choose a model file first (or press 'Load sample model')")
            return None
        if self.busy:
            return None
        self.model_path.setText(str(path))
        self.model_summary.setText(f"Loading {Path(path).name}…")
        return self._start("load", jobs.load_model_job, str(path), card, self.device.currentText(),
                           on_return=self._on_model_loaded)

    def set_model(self, model: "SegmentationModel") -> None:
        """Use an already loaded :class:`SegmentationModel` (scripts, notebooks, tests); times one batch here."""
        self._on_model_loaded(jobs.describe_model(model))

    def load_sample_model(self) -> Any:
        from ...core.sample import SAMPLE_CARD, sample_path

        try:
            path = sample_path(SAMPLE_CARD)
        except UserError as exc:
            _notify_error("Loading the sample model", exc)
            return None
        if not path.exists():
            _notify_error("Loading the sample model", UserError(f"the sample model card {path} is missing"))
            return None
        self.card_path.clear()
        return self.load_model(str(path))

    def _on_model_loaded(self, info: jobs.LoadedModel) -> None:
        self.loaded = info
        m, card = info.model, info.model.card
        norm = card.normalization + (f" (center {card.ct_center}, width {card.ct_width})"
                                     if card.normalization == "ct_window" else "")
        size = "x".join(map(str, card.input_size)) + f" ({card.fit})" if card.input_size else "any (image size)"
        classes = ", ".join(f"{i}: {n}" for i, n in enumerate(info.class_names))
        timing = (f"{1000 * info.seconds_per_image:.1f} ms per {info.timing_size[0]}x{info.timing_size[1]} image"
                  if np.isfinite(info.seconds_per_image) else "not timed")
        self.model_summary.setText(
            f"<b>{m.name}</b> ({m.format})<br>channels: {card.in_channels or '?'} · classes: {classes}<br>"
            f"input size: {size} · normalisation: {norm}<br>device: <b>{m.device}</b> · {timing}")
        self.cpu_note.setVisible(m.device.type == "cpu")
        self._fill(self.target, info.class_names, info.class_names[1] if len(info.class_names) > 1 else None)
        if len(info.class_names) > 1:
            self.target.setCurrentIndex(1)
        self.device.blockSignals(True)
        self.device.setCurrentText(m.device.type if self.device.currentText() != "auto" else "auto")
        self.device.blockSignals(False)
        from napari.utils.notifications import show_info

        show_info(f"Model {m.name!r} loaded on {m.device}")
        self._schedule_estimate()

    # ------------------------------------------------------------------------------------ segment
    def segment(self) -> Any:
        """Segment the current slice or the whole volume in a worker -> Labels layer '<model> segmentation'."""
        try:
            image = self._checked_image()
            whole = inputs.spatial_ndim(image) == 3 and self.segment_scope.currentText() == "whole volume"
            # the whole volume does not depend on the view; the current slice must be the one shown
            z = inputs.current_slice(self.viewer, image, check_view=not whole)
        except UserError as exc:
            _notify_error("Segmenting", exc)
            return None
        model = self.loaded.model
        geom = L.SliceGeometry.from_layer(image, z if z is not None else None)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_label.setText("segmenting…")
        batch = jobs.plane_batch_size(self.loaded, geom.plane_shape)
        return self._start("segment", jobs.segment_job, model, image.data, None if whole else z,
                           bool(getattr(image, "rgb", False)), batch,
                           on_yield=self._on_progress,
                           on_return=lambda labels: self._on_segmented(labels, geom, whole))

    def _on_segmented(self, labels: np.ndarray, geom: L.SliceGeometry, whole: bool) -> None:
        m = self.loaded.model if self.loaded else None
        name = f"{m.name if m else 'model'} segmentation"
        info = m.describe() if m else None
        existing = self._layer(name)
        if (not whole and geom.is_volume and existing is not None and L.layer_kind(existing) == "labels"
                and tuple(existing.data.shape) == tuple(geom.shape)):
            existing.data[geom.slice_index] = labels
            existing.refresh()
            layer = existing
        else:
            layer = L.add_or_update(self.viewer, L.segmentation_layer_data(labels, geom, name, info))
        counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
        where = "the volume" if whole or not geom.is_volume else f"slice {geom.slice_index}"
        self.progress_label.setText(f"segmented {where} -> {layer.name!r}; pixels per class {counts}")

    # ------------------------------------------------------------------------------------ explain
    def _config(self, plane_shape: tuple[int, int] | None = None) -> Any:
        """The method's config from the widget; the automatic batch size is sized for ``plane_shape`` (default:
        the chosen image's plane), so that one batch takes about 0.25 s and Cancel acts well within a second."""
        from ...core.explainers import MiSuReConfig, PdCRConfig

        if plane_shape is None:
            image = self.image_layer()
            plane_shape = L.SliceGeometry.plane_shape_of(image) if image is not None else (128, 128)
        batch = int(self.batch.value()) or jobs.plane_batch_size(self.loaded, plane_shape)
        if self.method_key == "pdcr":
            return PdCRConfig(patch=int(self.patch.value()), screen=int(self.screen.value()),
                              tau=float(self.tau.value()), n=int(self.n_draws.value()),
                              threshold=float(self.threshold.value()), seed=int(self.seed.value()), batch_size=batch)
        return MiSuReConfig(iterations=int(self.iterations.value()), seed=int(self.seed.value()),
                            threshold=float(self.threshold.value()), batch_size=min(batch, 16))

    def _roi(self, image: "Layer", z: int | None) -> inputs.RoI | None:
        name = self.roi_combo.currentText()
        if name == NO_ROI or not name:
            if self.method_key == "pdcr":
                raise UserError("PdCR needs a RoI: press 'Draw RoI' and draw a rectangle over the structure, or "
                                "choose a Shapes or Labels layer")
            return None
        layer = self._layer(name)
        if layer is None:
            raise UserError(f"the RoI layer {name!r} no longer exists")
        if L.layer_kind(layer) == "shapes":
            return inputs.roi_from_shapes(self.viewer, layer, image, z)
        return inputs.roi_from_labels(layer, image, z)

    def _checked_image(self) -> "Layer":
        """The chosen image layer, once a model is loaded and the layer can be fed to it (else UserError)."""
        if self.loaded is None:
            raise UserError("load a model first ('Load sample model' or choose a model file)")
        image = self.image_layer()
        if image is None:
            raise UserError("open or choose an image layer first")
        inputs.check_image_layer(image)
        return image

    def gather(self) -> tuple[jobs.ExplainRequest, L.SliceGeometry, str]:
        """Collect the explanation request from the widget (GUI thread); raises UserError with advice."""
        image = self._checked_image()
        z = inputs.current_slice(self.viewer, image)  # raises when the viewer does not show a 2-D slice
        roi = self._roi(image, z)
        if roi is not None:
            z = roi.slice_index if roi.slice_index is not None else z
        method = self.method_key
        cfg = self._config(L.SliceGeometry.plane_shape_of(image))
        target = int(self.target.currentIndex())
        if target < 0:
            raise UserError("choose the class to explain")
        plane = inputs.plane_of(image, z)
        label = None
        gt = self.gt_combo.currentText()
        if gt and gt != NO_GT and method == "pdcr":
            gt_layer = self._layer(gt)
            if gt_layer is None:
                raise UserError(f"the ground-truth layer {gt!r} no longer exists")
            label = inputs.label_plane(gt_layer, image, z, target)
        pool = None
        if method == "pdcr":
            pool = inputs.pool_spec(self.pool_choice(), self.viewer, image, z,
                                    self.pool_folder.text().strip(), int(self.exclude.value()))
        geom = L.SliceGeometry.from_layer(image, z)
        req = jobs.ExplainRequest(method=method, model=self.loaded.model, image=plane,
                                  roi=roi.mask if roi is not None else None, target=target, config=cfg, label=label,
                                  pool=pool, geometry=inputs.explanation_geometry(image, z)
                                  | {"roi": roi.description if roi else None})
        desc = (roi.description if roi else "the whole image") + f", class {self.target.currentText()!r}"
        return req, geom, desc

    def run(self) -> Any:
        """Start the chosen explainer in a worker; returns the worker (None when the inputs are not ready)."""
        if self.busy:
            return None
        t0 = time.perf_counter()
        self.timings = {}
        try:
            return self._run()
        finally:
            self.timings["run_click_s"] = time.perf_counter() - t0

    def _run(self) -> Any:
        try:
            req, geom, desc = self.gather()
        except UserError as exc:
            _notify_error("Explaining", exc)
            return None
        except Exception as exc:  # noqa: BLE001
            _notify_error("Explaining", exc)
            return None
        self._pending_partial = None
        self._stream = self._stream_backup = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_label.setText(f"{req.method}: starting on {desc}…")
        worker = self._start("explain", jobs.explain_to_layers_job, req, geom, on_yield=self._on_progress,
                             on_return=lambda result: self._on_explained(*result, geom, desc))
        if req.method == "pdcr":
            # the streamed layer is made on the next event-loop turn, once the worker runs (short GUI steps)
            def begin() -> None:
                if self.worker is worker and not self._cancelled:
                    self._begin_stream(geom)

            self._queue_steps([begin])
        return worker

    def _on_progress(self, ev: Any) -> None:
        total = max(1, int(ev.total))
        self.progress.setRange(0, total)
        self.progress.setValue(min(int(ev.done), total))
        elapsed = time.perf_counter() - self._t_start
        left = elapsed / ev.done * (total - ev.done) if ev.done > 0 and ev.total > 1 else float("nan")
        left_txt = f" · about {jobs.format_seconds(left)} left" if np.isfinite(left) else ""
        self.progress_label.setText(f"{ev.stage}: {int(ev.done):,} / {total:,} forward passes{left_txt}")
        if ev.partial is not None and self._stream is not None:
            self._pending_partial = ev.partial
            if not self._partial_timer.isActive():
                self._partial_timer.start()

    def _apply_partial(self) -> None:
        """Show the streamed map so far (throttled: at most about 8 updates per second)."""
        t0 = time.perf_counter()
        try:
            self._apply_partial_now()
        finally:
            self.timings["partial_update_max_s"] = max(self.timings.get("partial_update_max_s", 0.0),
                                                       time.perf_counter() - t0)

    def _apply_partial_now(self) -> None:
        partial, self._pending_partial = self._pending_partial, None
        layer, geom = self._stream, self._stream_geom
        if partial is None or layer is None or geom is None or layer not in self.viewer.layers:
            return
        if geom.is_volume:
            layer.data[geom.slice_index] = partial
        else:
            layer.data[...] = partial
        lim = L.symmetric_limit(partial)
        if tuple(layer.contrast_limits) != (-lim, lim):
            layer.contrast_limits = (-lim, lim)
        layer.refresh()

    def _begin_stream(self, geom: L.SliceGeometry) -> None:
        """The layer the PdCR map streams into while it runs.

        If a 'PdCR map' of the same shape exists (a rerun), it streams into that layer, renamed
        '... (running)', and its data, name and style are restored on Cancel; otherwise a new layer is
        added. Either way no layer is removed on success (removing a layer costs napari a full
        garbage collection in the GUI thread).
        """
        self._stream_geom = geom
        self._stream_backup = None
        fresh, kwargs, _ = L.pdcr_map_layer_data(np.full(geom.plane_shape, np.nan, np.float32), geom,
                                                 L.PDCR_MAP + STREAM_SUFFIX)
        kwargs["metadata"]["seg_explain"]["status"] = "running"
        existing = self._layer(L.PDCR_MAP)
        if (existing is not None and L.layer_kind(existing) == "image" and not existing.rgb
                and tuple(existing.data.shape) == tuple(geom.shape)):
            self._stream_backup = {"data": existing.data, "metadata": existing.metadata, "name": existing.name,
                                   "contrast_limits": tuple(existing.contrast_limits),
                                   "transform": L.layer_transform(existing)}
            existing.name = kwargs["name"]
            L.set_transform(existing, kwargs)
            existing.data = fresh
            existing.metadata = kwargs["metadata"]
            existing.contrast_limits = kwargs["contrast_limits"]
            self._stream = existing
            return
        stale = self._layer(kwargs["name"])
        if stale is not None:  # left over from an earlier failure
            self.viewer.layers.remove(stale)
        self._stream = L.add_or_update(self.viewer, (fresh, kwargs | {"visible": False}, "image"), colorbar=False)
        stream = self._stream

        # (also when the run has already ended: the layer is then the result or the partial map)
        def show() -> None:
            if stream in self.viewer.layers:
                stream.visible = True

        def colorbar() -> None:  # its first draw in a turn of its own
            if stream in self.viewer.layers and self.canvas_colorbar.isChecked():
                L.show_colorbar(stream)

        self._queue_steps([show, colorbar])

    def _discard_stream(self, keep: bool) -> str | None:
        """Undo the streamed map: restore the layer it streamed into, or remove the new one.

        With ``keep`` the map so far stays as a layer named 'PdCR map (partial)'. Returns that name.
        """
        if keep:
            self._apply_partial()  # flush the latest update not yet shown
        layer, self._stream = self._stream, None
        backup, self._stream_backup = getattr(self, "_stream_backup", None), None
        self._pending_partial = None
        if layer is None or layer not in self.viewer.layers:
            return None
        name = L.PDCR_MAP + PARTIAL_SUFFIX
        meta = {**layer.metadata, "seg_explain": {**layer.metadata.get("seg_explain", {}),
                                                  "status": "partial (cancelled)"}}
        if backup is not None:
            if keep:
                L.add_or_update(self.viewer, (np.array(layer.data, copy=True),
                                              {"name": name, "colormap": layer.colormap,
                                               "contrast_limits": tuple(layer.contrast_limits),
                                               "blending": layer.blending, "opacity": layer.opacity,
                                               "interpolation2d": "nearest", "metadata": meta}
                                              | L.layer_transform(layer), "image"))
            L.set_transform(layer, backup["transform"])
            layer.data = backup["data"]
            layer.metadata = backup["metadata"]
            layer.contrast_limits = backup["contrast_limits"]
            layer.name = backup["name"]
            return name if keep else None
        if not keep:
            self.viewer.layers.remove(layer)
            return None
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer.name = name
        layer.metadata = meta
        return name

    def _on_explained(self, expl: "Explanation", tuples: list[L.LayerDataTuple], geom: L.SliceGeometry,
                      desc: str) -> None:
        """Show a finished explanation (layer data built in the worker), one layer per event-loop turn."""
        stream, self._stream = self._stream, None
        self._stream_backup = None
        if stream is not None and stream in self.viewer.layers:
            if L.PDCR_MAP in self.viewer.layers:
                self.viewer.layers.remove(stream)
            else:
                stream.name = L.PDCR_MAP  # becomes the result layer: updated in place
        names = [t[1]["name"] for t in tuples]
        self.results[expl.method] = (expl, geom, names)
        steps: list[Any] = []
        for t in tuples:
            steps += self._add_layer_steps(t)
        steps.append(lambda: self._announce(expl, desc))
        self._queue_steps(steps)

    def _add_layer_steps(self, layer_data: L.LayerDataTuple) -> list[Any]:
        """Steps adding/updating one layer. A new layer is added hidden and shown one step later, and its
        colorbar (maps) one step after that, so creating it, its first draw (shader compilation) and the
        colorbar's first draw fall in different event-loop turns."""
        name = layer_data[1]["name"]
        if name in self.viewer.layers:
            return [lambda: L.add_or_update(self.viewer, layer_data)]
        hidden = (layer_data[0], {**layer_data[1], "visible": False}, layer_data[2])

        def show() -> None:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = True

        def colorbar() -> None:
            if name in self.viewer.layers and self.canvas_colorbar.isChecked():
                L.show_colorbar(self.viewer.layers[name])

        return [lambda: L.add_or_update(self.viewer, hidden, colorbar=False), show, colorbar]

    def _toggle_canvas_colorbar(self, on: bool) -> None:
        for layer in self.viewer.layers:
            if L.result_kind(layer) in L.COLORBAR_RESULTS and getattr(layer, "colorbar", None) is not None:
                layer.colorbar.visible = on

    def _announce(self, expl: "Explanation", desc: str) -> None:
        self.stats_panel.show_explanation(expl, desc)
        QTimer.singleShot(0, self.show_results_section)
        s = expl.stats
        self.progress.setValue(self.progress.maximum())
        self.progress_label.setText(
            f"{'PdCR' if expl.method == 'pdcr' else 'MiSuRe'} done in {expl.provenance.get('wall_time_s', 0):.1f} s, "
            f"{expl.provenance.get('forward_passes', 0):,} forward passes")
        from napari.utils.notifications import show_info, show_warning

        for w in expl.warnings:
            show_warning(w)
        if expl.method == "pdcr":
            show_info(f"PdCR done: {s.get('negative_share', 0):.0f}% of blocks support the RoI (red), "
                      f"{s.get('positive_share', 0):.0f}% work against it (blue)")
        else:
            show_info(f"MiSuRe done: Dice explained {s.get('dice_explained', 0):.2f}, "
                      f"perturbation ratio {s.get('perturbation_ratio', 0):.2f}")

    def show_results_section(self) -> None:
        """Scroll the dock so that the results are in view: the whole Results section (legend, shares, numbers,
        Save/Open) when it fits, else the results panel (legend, shares, numbers)."""
        body = self.scroll_area.widget()
        if body is not None and body.layout() is not None:
            body.layout().activate()  # the panel has just grown: lay it out before scrolling to it
        fits = self.results_section.height() + 16 <= self.scroll_area.viewport().height()
        self.scroll_area.ensureWidgetVisible(self.results_section if fits else self.stats_panel, 0, 8)

    def _queue_steps(self, steps: list[Any]) -> None:
        """Run GUI steps one per event-loop turn; the widget counts as busy until they are done."""
        self._steps.extend(steps)
        if not self._step_timer.isActive():
            self._step_timer.start()

    def _run_step(self) -> None:
        if not self._steps:
            self._update_state()
            return
        step = self._steps.pop(0)
        t0 = time.perf_counter()
        try:
            step()
        except Exception as exc:  # noqa: BLE001
            self._steps.clear()
            _notify_error("Showing the result", exc)
        self.timings["result_step_max_s"] = max(self.timings.get("result_step_max_s", 0.0),
                                                time.perf_counter() - t0)
        if self._steps:
            self._step_timer.start()
        else:
            self._update_state()

    # ---------------------------------------------------------------------------------- estimate
    def update_estimate(self) -> str:
        """Cost estimate shown before Run (forward passes upper bound and rough time)."""
        text = self._estimate_text()
        self.estimate_label.setText(text)
        return text

    def _estimate_text(self) -> str:
        if self.loaded is None:
            return "Cost: load a model to see an estimate."
        image = self.image_layer()
        if image is None:
            return "Cost: choose an image."
        try:
            inputs.check_image_layer(image)
            z = inputs.current_slice(self.viewer, image)
            spi = jobs.image_seconds(self.loaded, L.SliceGeometry.plane_shape_of(image))
            dev = self.loaded.model.device.type
            if self.method_key == "misure":
                it = int(self.iterations.value())
                from ...core.explainers import MiSuReConfig

                checks = MiSuReConfig().max_dilations + 1
                passes_hi = checks + 3 * it  # stage-1 dilation checks (capped) + forward/backward per step
                return (f"Cost: MiSuRe ≈ {it} optimisation steps + up to {checks} dilation checks "
                        f"(≈ {jobs.format_seconds(passes_hi * spi)} at most on {dev}).")
            roi = self._roi(image, z)
            nb = jobs.pdcr_blocks(roi.mask, int(self.patch.value()))
            s, n = int(self.screen.value()), int(self.n_draws.value())
            hi, lo = nb * (s + n), nb * s
            return (f"Cost: {nb} blocks → at most {nb}×({s}+{n}) = {hi:,} forward passes (at least {lo:,} "
                    f"if screening drops every block): {jobs.format_seconds(lo * spi)} to "
                    f"{jobs.format_seconds(hi * spi)} on {dev} at {1000 * spi:.1f} ms per image.")
        except UserError as exc:
            return f"Cost: {exc}"
        except Exception as exc:  # noqa: BLE001 - the estimate must never break the widget
            return f"Cost: no estimate ({type(exc).__name__})"

    # ----------------------------------------------------------------------------- save / open
    def _segmentation_layers(self) -> list["Layer"]:
        return [lay for lay in self.viewer.layers if L.layer_kind(lay) == "labels"
                and isinstance(lay.metadata, dict)
                and (lay.metadata.get("seg_explain") or {}).get("result") == "segmentation"]

    def save_results(self, folder: str | Path | None = None) -> Path | None:
        """Write the result layers, RoIs and metadata into ``folder`` (asks for it when not given)."""
        from .results_io import save_results

        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save results into folder")
            if not folder:
                return None
        try:
            segs = []
            for lay in self._segmentation_layers():
                meta = lay.metadata.get("seg_explain") or {}
                shape = tuple(lay.data.shape)
                geom = dataclasses.replace(
                    L.SliceGeometry.from_layer(lay, 0 if len(shape) == 3 else None),
                    source_layer=meta.get("source_layer", ""),
                    source_metadata={k: v for k, v in meta.items() if k not in ("result", "slice_index")})
                segs.append((np.asarray(lay.data), {"name": lay.name, "metadata": lay.metadata}, geom))
            path = save_results(folder, list(self.results.values()), segs)
        except Exception as exc:  # noqa: BLE001
            _notify_error("Saving results", exc)
            return None
        from napari.utils.notifications import show_info

        show_info(f"Results saved to {Path(folder)}")
        return path

    def open_results(self, folder: str | Path | None = None) -> list["Layer"]:
        """Read a results folder back into the viewer (layers and the results panel)."""
        from .results_io import open_results

        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Open results folder")
            if not folder:
                return []
        try:
            expls, segs = open_results(folder)
            added = []
            for arr, name, geom, meta in segs:
                added.append(L.add_or_update(self.viewer, (arr, {"name": name, "opacity": 0.5, "metadata": meta}
                                                           | geom.layer_kwargs(), "labels")))
            for expl, geom in expls:
                created = L.add_explanation(self.viewer, expl, geom)
                self.results[expl.method] = (expl, geom, [lay.name for lay in created])
                self.stats_panel.show_explanation(expl, f"opened from {folder}")
                added += created
        except Exception as exc:  # noqa: BLE001
            _notify_error("Opening results", exc)
            return []
        self._update_state()
        return added
