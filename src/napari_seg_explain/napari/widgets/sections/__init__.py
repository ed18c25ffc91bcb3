"""The dock's sections, top to bottom: model, image and segmentation, explain, runs and results.

Each section is a titled group of plain Qt widgets; it knows nothing of the viewer's layers beyond the names
it is given, and calls back into the dock for anything that does work. The helpers here are shared by them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPushButton, QWidget


class Section(QGroupBox):
    """A titled group with a form layout whose fields grow with the dock."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.form = QFormLayout(self)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setContentsMargins(6, 6, 6, 6)


def path_row(placeholder: str, tip: str, browse: Callable[[], Any]) -> tuple[QLineEdit, QWidget]:
    """A path field with a '…' browse button: ``(field, row widget)``."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    button = QPushButton("…")
    button.setToolTip(tip)
    button.clicked.connect(lambda *_: browse())
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit)
    lay.addWidget(button)
    return edit, row


def fill_combo(combo: QComboBox, items: list[str], prefer: str | None = None) -> None:
    """Replace the items, keeping the current one if still there (else ``prefer``), without signals."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(items)
    pick = current if current in items else (prefer if prefer in items else None)
    if pick is not None:
        combo.setCurrentText(pick)
    combo.blockSignals(False)


def compact_combos(root: QWidget) -> None:
    """Combos size to the dock, not to their longest item (long layer names are elided)."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
