"""Section 3 · Explain: the method (every registered explainer), the class, the RoI, the ground truth and the
pool, the method's parameter form, the cost estimate, Run / Compare… / Cancel and the progress.

What is offered follows the chosen method's spec: the ground truth only for a method that uses a label
(``uses("label")``), the pool only for one that uses a pool, 'no RoI' only for one that does not require a RoI;
the parameter forms are generated (:mod:`.params`) and only the chosen method's are shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from .. import pools
from . import Section, path_row
from .image import WARN
from .params import ParamForm

if TYPE_CHECKING:
    from ....core.explainers.base import ExplainerSpec

NO_GT = "(none: soft Dice vs the model's own prediction)"
NO_ROI = "(none: the whole image)"
GT_TIP = "optional ground truth: with it the RoI score is hard Dice against the label (the paper's setting)"
#: the speed choice of a method with opt-in speed modes (PdCR): the parameters each choice sets in the form
FAST, EXACT = "fast", "exact"
MODES = {FAST: ("Fast preview (adaptive N, coarse map first)", {"preview": True, "adaptive": True}),
         EXACT: ("Exact (paper)", {"preview": False, "adaptive": False})}
MODE_TIP = ("Fast preview: a whole coarse map streams after screening (blocks not yet estimated show their screening "
            "mean) and each block stops drawing once its ATE is settled (adaptive N, about half the passes).\n"
            "Exact (paper): every block that passes screening gets all N draws; blocks not yet estimated stay empty.")


class ExplainSection(Section):
    """``on_change()`` when anything the cost estimate depends on changes; ``on_draw()``, ``on_run()``,
    ``on_cancel()`` for the buttons."""

    def __init__(self, on_change: Callable[..., Any], on_draw: Callable[[], Any], on_run: Callable[[], Any],
                 on_cancel: Callable[[], Any], on_compare: Callable[[], Any] | None = None) -> None:
        from superqt import QCollapsible

        from ....core.explainers import registry

        super().__init__("3 · Explain")
        self._on_change = on_change
        self.method = QComboBox()
        self.specs: dict[str, ExplainerSpec] = {}
        for spec in registry.specs():
            self.specs[spec.name] = spec
            self.method.addItem(spec.label, spec.name)
            self.method.setItemData(self.method.count() - 1, spec.description or spec.label,
                                    Qt.ItemDataRole.ToolTipRole)
        self.method.currentIndexChanged.connect(lambda *_: self.apply_spec())
        self.form.addRow("Method", self.method)
        self.target = QComboBox()
        self.target.setToolTip("the class whose segmentation inside the RoI is explained")
        self.form.addRow("Class", self.target)

        self.roi_combo = QComboBox()
        self.roi_combo.setToolTip("Shapes layer: the selected shape, else the newest one (rectangle, polygon or "
                                  "ellipse). Labels layer: its non-zero pixels on the explained slice.")
        self.roi_combo.currentTextChanged.connect(on_change)
        draw = QPushButton("Draw RoI")
        draw.setToolTip("add a Shapes layer 'RoI' on the image and start drawing a rectangle")
        draw.clicked.connect(lambda *_: on_draw())
        row = QHBoxLayout()
        row.addWidget(self.roi_combo, 1)
        row.addWidget(draw)
        self.form.addRow("RoI", row)
        self.every_shape = QCheckBox("every shape of the RoI layer (PdCR: one shared run per slice)")
        self.every_shape.setToolTip("explain each shape of the Shapes layer ('RoI 1', 'RoI 2', ... by shape number), "
                                    "each a run with its own layers; with PdCR (exact screening) the shapes on one slice "
                                    "share one run (every perturbed image scored for every RoI: about the cost of "
                                    "one, the same maps), other runs go one after the other")
        self.every_shape.toggled.connect(on_change)
        self.form.addRow(self.every_shape)
        self.roi_slices = QSpinBox()
        self.roi_slices.setRange(0, 100)
        self.roi_slices.setValue(2)
        self.roi_slices.setToolTip("3-D models: a shape drawn on slice z is the RoI on slices z - k .. z + k (its "
                                   "mask on every slice of the range); a Labels layer gives its voxels on all slices")
        self.roi_slices.valueChanged.connect(on_change)
        self.form.addRow("RoI slices ±", self.roi_slices)
        self.form.setRowVisible(self.roi_slices, False)

        self.gt_combo = QComboBox()
        self.gt_combo.setToolTip(GT_TIP)
        self.form.addRow("Ground truth", self.gt_combo)
        self.pool_combo = QComboBox()
        self.pool_combo.addItems(list(pools.POOL_CHOICES))
        self.pool_combo.setToolTip("where replacement blocks come from (random crops of other images)")
        self.pool_combo.currentIndexChanged.connect(lambda *_: self._pool_changed())
        self.form.addRow("Pool", self.pool_combo)
        self.pool_folder, self._pool_folder_row = path_row("folder of pool images", "choose the pool folder",
                                                           self._browse_pool)
        self.form.addRow("", self._pool_folder_row)
        self._pool_folder_row.hide()

        self.forms = {name: ParamForm(spec, on_change) for name, spec in self.specs.items()}
        for f in self.forms.values():
            self.form.addRow(f.basic)
        self.advanced = QCollapsible("Advanced parameters (papers' defaults)")
        adv = QWidget()
        adv_form = QFormLayout(adv)
        adv_form.setContentsMargins(0, 0, 0, 0)
        for f in self.forms.values():
            adv_form.addRow(f.advanced)
        self.exclude = QSpinBox()
        self.exclude.setRange(0, 50)
        self.exclude.setValue(5)
        self.exclude.setToolTip("neighbouring slices left out of a volume pool (each side)")
        self.exclude.valueChanged.connect(self._exclude_changed)
        self.exclude.valueChanged.connect(on_change)
        adv_form.addRow("Pool exclude ±", self.exclude)
        self._adv_form = adv_form
        self.advanced.addWidget(adv)
        self.form.addRow(self.advanced)

        self.mode = QComboBox()
        for key, (text, _values) in MODES.items():
            self.mode.addItem(text, key)
        self.mode.setToolTip(MODE_TIP)
        self.mode.currentIndexChanged.connect(lambda *_: self._mode_changed())
        for name, f in self.forms.items():  # the form's own check boxes follow the choice, and set it back
            for key in MODES[FAST][1]:
                if key in f.widgets and isinstance(f.widgets[key], QCheckBox):
                    f.widgets[key].toggled.connect(lambda *_, n=name: self._sync_mode(n))
        self.form.addRow("Mode", self.mode)
        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        self.form.addRow(self.estimate_label)
        self.run_button = QPushButton("Run  (Ctrl+Return)")
        self.run_button.clicked.connect(lambda *_: on_run())
        self.compare_button = QPushButton("Compare…")
        self.compare_button.setToolTip("run several methods on the chosen RoI, evaluate each map (attribution "
                                       "score, deletion / insertion curves) and show them side by side")
        self.compare_button.clicked.connect(lambda *_: on_compare() if on_compare is not None else None)
        self.compare_button.setVisible(on_compare is not None)
        self.set_fast(True)  # the widget answers fast by default; the paper's exact mode is one click away
        self.cancel_button = QPushButton("Cancel  (Esc)")
        self.cancel_button.clicked.connect(lambda *_: on_cancel())
        row = QHBoxLayout()
        row.addWidget(self.run_button, 2)
        row.addWidget(self.compare_button, 1)
        row.addWidget(self.cancel_button, 1)
        self.form.addRow(row)
        self.keep_partial = QCheckBox("keep partial results on Cancel")
        self.keep_partial.setToolTip("keep the map streamed so far as a layer named '... (partial)' when cancelling")
        self.form.addRow(self.keep_partial)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m")
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        self.form.addRow(self.progress)
        self.form.addRow(self.progress_label)

    # ------------------------------------------------------------------------------ the method
    @property
    def method_key(self) -> str:
        return str(self.method.currentData())

    @property
    def spec(self) -> "ExplainerSpec":
        return self.specs[self.method_key]

    def set_method(self, name: str) -> None:
        index = self.method.findData(name)
        if index < 0:
            raise ValueError(f"no method {name!r} in the list ({', '.join(self.specs)})")
        self.method.setCurrentIndex(index)

    def param(self, name: str, method: str | None = None) -> QWidget:
        """The form widget of parameter ``name`` of ``method`` (default: the chosen one)."""
        return self.forms[method or self.method_key].widgets[name]

    def values(self) -> dict[str, Any]:
        return self.forms[self.method_key].values()

    def apply_spec(self) -> None:
        """Show the chosen method's parameters; offer the pool, ground truth and 'no RoI' as its spec says."""
        spec = self.spec
        for name, f in self.forms.items():
            f.set_visible(name == spec.name)
        pool = spec.uses("pool")
        self.pool_combo.setEnabled(pool)
        self._pool_folder_row.setVisible(pool and self.pool_choice() == pools.POOL_FOLDER)
        self.exclude.setVisible(pool)
        label = self._adv_form.labelForField(self.exclude)
        if label is not None:
            label.setVisible(pool)
        self.form.setRowVisible(self.mode, self._has_modes(spec.name))
        self.gt_combo.setEnabled(spec.uses("label"))
        self.gt_combo.setToolTip(GT_TIP if spec.uses("label") else f"{spec.title} does not use a ground truth")
        self._on_change()

    # ------------------------------------------------------------------------- fast / exact
    def _has_modes(self, method: str) -> bool:
        widgets = self.forms[method].widgets
        return all(isinstance(widgets.get(k), QCheckBox) for k in MODES[FAST][1])

    @property
    def fast(self) -> bool:
        """The speed choice: fast preview (True) or the paper's exact mode."""
        return self.mode.currentData() == FAST

    def set_fast(self, on: bool) -> None:
        """Choose 'Fast preview' (``on``) or 'Exact (paper)': sets Preview and Adaptive N in the forms with them."""
        index = self.mode.findData(FAST if on else EXACT)
        if index != self.mode.currentIndex():
            self.mode.setCurrentIndex(index)
        else:
            self._mode_changed()

    def _mode_changed(self) -> None:
        values = MODES[str(self.mode.currentData())][1]
        for name, f in self.forms.items():
            if self._has_modes(name):
                for key, value in values.items():
                    f.widgets[key].setChecked(value)
        self._on_change()

    def _sync_mode(self, method: str) -> None:
        """Preview and Adaptive N changed by hand: the choice shows 'Fast' when both are on, 'Exact' when both off."""
        if method != self.method_key:
            return
        on = {k: self.forms[method].widgets[k].isChecked() for k in MODES[FAST][1]}
        for key, (_text, values) in MODES.items():
            if on == values and self.mode.currentData() != key:
                self.mode.blockSignals(True)
                self.mode.setCurrentIndex(self.mode.findData(key))
                self.mode.blockSignals(False)

    # --------------------------------------------------------------------------------- the pool
    def pool_choice(self) -> str:
        """The chosen pool as one of :data:`pools.POOL_CHOICES` (the volume entry's text follows 'Pool exclude ±')."""
        i = self.pool_combo.currentIndex()
        return pools.POOL_CHOICES[i] if 0 <= i < len(pools.POOL_CHOICES) else self.pool_combo.currentText()

    def set_pool(self, choice: str) -> None:
        """Choose pool ``choice`` (one of :data:`pools.POOL_CHOICES`)."""
        if choice in pools.POOL_CHOICES and choice != self.pool_choice():
            self.pool_combo.setCurrentIndex(pools.POOL_CHOICES.index(choice))

    def offer_volume_pool(self, is_volume: bool) -> None:
        """The other slices of the image are a pool only for a volume of more than one slice."""
        item = self.pool_combo.model().item(pools.POOL_CHOICES.index(pools.POOL_VOLUME))
        if item is not None:
            item.setEnabled(is_volume)
            item.setToolTip("" if is_volume else "this image has no other slices (a 2-D image or a one-slice volume)")

    def _pool_changed(self) -> None:
        self._pool_folder_row.setVisible(self.spec.uses("pool") and self.pool_choice() == pools.POOL_FOLDER)
        self._on_change()

    def _exclude_changed(self, value: int) -> None:
        self.pool_combo.setItemText(pools.POOL_CHOICES.index(pools.POOL_VOLUME), pools.pool_volume_text(int(value)))

    def _browse_pool(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of pool images")
        if path:
            self.pool_folder.setText(path)

    # ------------------------------------------------------------------------------- progress
    def show_roi_slices(self, on: bool) -> None:
        """The 'RoI slices ±' row: shown for 3-D models only."""
        self.form.setRowVisible(self.roi_slices, bool(on))

    def show_estimate(self, text: str, ok: bool) -> None:
        """The cost line; orange when the Run would stop (it says why and which control to change)."""
        self.estimate_label.setStyleSheet("" if ok else f"color: {WARN};")
        self.estimate_label.setText(text)

    def show_progress(self, done: int, total: int, text: str) -> None:
        total = max(1, int(total))
        self.progress.setRange(0, total)
        self.progress.setValue(min(int(done), total))
        self.progress_label.setText(text)

    def set_enabled(self, can_run: bool, can_cancel: bool) -> None:
        self.run_button.setEnabled(can_run)
        self.compare_button.setEnabled(can_run)
        self.cancel_button.setEnabled(can_cancel)
