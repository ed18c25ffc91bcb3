"""Section 4 · Runs and results: the results panel of the chosen run, the list of runs (tick to show or hide a
run's layers, select two to compare them side by side in napari's grid, delete), the display options (one
colour scale for the runs shown, the canvas colour bars), Save / Open results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QCheckBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton

from ..stats_panel import StatsPanel
from . import Section

ID_ROLE = Qt.ItemDataRole.UserRole
COMPARE = "Compare side by side"
END_COMPARE = "End comparison"


@dataclass
class RunEntry:
    """One line of the runs list."""

    run_id: str
    text: str
    tooltip: str
    visible: bool


class RunsSection(Section):
    """Callbacks: ``on_visible(run_id, on)``, ``on_select(run_id)``, ``on_compare(run_ids)`` (an empty list ends
    the comparison), ``on_delete(run_ids)``, ``on_save()``, ``on_open()``, ``on_colorbar(on)``."""

    def __init__(self, on_visible: Callable[[str, bool], Any], on_select: Callable[[str], Any],
                 on_compare: Callable[[list[str]], Any], on_delete: Callable[[list[str]], Any],
                 on_save: Callable[[], Any], on_open: Callable[[], Any], on_colorbar: Callable[[bool], Any]) -> None:
        super().__init__("4 · Runs and results")
        self._on_visible, self._on_select, self._on_compare = on_visible, on_select, on_compare
        self.stats_panel = StatsPanel()
        self.form.addRow(self.stats_panel)
        self.runs_list = QListWidget()
        self.runs_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.runs_list.setToolTip("one line per run: tick to show its layers, select one to see its numbers, select "
                                  "two to compare them")
        self.runs_list.setMaximumHeight(110)
        self.runs_list.itemChanged.connect(self._item_changed)
        self.runs_list.itemSelectionChanged.connect(self._selection_changed)
        self.form.addRow("Runs", self.runs_list)
        self.compare_button = QPushButton(COMPARE)
        self.compare_button.setToolTip("the two selected runs side by side (napari grid mode), each over the image")
        self.compare_button.clicked.connect(lambda *_: self._compare_clicked())
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("remove the selected runs' layers from the viewer")
        self.delete_button.clicked.connect(lambda *_: on_delete(self.selected_ids()))
        row = QHBoxLayout()
        row.addWidget(self.compare_button, 2)
        row.addWidget(self.delete_button, 1)
        self.form.addRow(row)
        self.shared_scale = QCheckBox("same colour scale for the runs shown")
        self.shared_scale.setToolTip("signed maps (PdCR) of the runs shown share contrast limits ±L, L = the largest "
                                     "|ATE| among them, so that equal colours mean equal effects (e.g. two runs "
                                     "compared side by side); off: each map is scaled to its own largest |ATE|")
        self.shared_scale.setChecked(True)
        self.form.addRow(self.shared_scale)
        self.canvas_colorbar = QCheckBox("colour bar on the maps in the canvas")
        self.canvas_colorbar.setToolTip("napari's colorbar overlay on the result maps (off by default: its first draw "
                                        "pauses the viewer for about 0.1 s on a CPU)")
        self.canvas_colorbar.toggled.connect(on_colorbar)
        self.form.addRow(self.canvas_colorbar)
        self.save_button = QPushButton("Save results…")
        self.save_button.setToolTip("write every run (maps, masks, RoIs, metadata: NIfTI with the scan's geometry "
                                    "when known), the segmentations and results.json into one folder")
        self.save_button.clicked.connect(lambda *_: on_save())
        self.open_button = QPushButton("Open results…")
        self.open_button.clicked.connect(lambda *_: on_open())
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.open_button)
        self.form.addRow(row)
        self.form.addRow(QLabel("<small>Ctrl+Return: Run · Esc: Cancel (while running)</small>"))
        self.comparing = False
        self._update_buttons()

    def set_runs(self, entries: list[RunEntry], current: str | None = None) -> None:
        """Rebuild the list (no callbacks); ``current`` is selected when given, else the selection is kept."""
        keep = set(self.selected_ids()) if current is None else {current}
        lst = self.runs_list
        lst.blockSignals(True)
        lst.clear()
        for e in entries:
            item = QListWidgetItem(e.text)
            item.setData(ID_ROLE, e.run_id)
            item.setToolTip(e.tooltip)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if e.visible else Qt.CheckState.Unchecked)
            lst.addItem(item)
            if e.run_id in keep:
                item.setSelected(True)
        lst.blockSignals(False)
        self._update_buttons()

    def ids(self) -> list[str]:
        return [self.runs_list.item(i).data(ID_ROLE) for i in range(self.runs_list.count())]

    def selected_ids(self) -> list[str]:
        return [item.data(ID_ROLE) for item in self.runs_list.selectedItems()]

    def select(self, run_ids: list[str]) -> None:
        for i in range(self.runs_list.count()):
            item = self.runs_list.item(i)
            item.setSelected(item.data(ID_ROLE) in run_ids)

    def set_comparing(self, on: bool) -> None:
        self.comparing = on
        self.compare_button.setText(END_COMPARE if on else COMPARE)
        self._update_buttons()

    def _item_changed(self, item: QListWidgetItem) -> None:
        self._on_visible(item.data(ID_ROLE), item.checkState() == Qt.CheckState.Checked)

    def _selection_changed(self) -> None:
        ids = self.selected_ids()
        if len(ids) == 1:
            self._on_select(ids[0])
        self._update_buttons()

    def _compare_clicked(self) -> None:
        self._on_compare([] if self.comparing else self.selected_ids())

    def _update_buttons(self) -> None:
        n = len(self.selected_ids())
        self.compare_button.setEnabled(self.comparing or n == 2)
        self.delete_button.setEnabled(n > 0)
