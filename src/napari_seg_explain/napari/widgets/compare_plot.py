"""The docked plot of a method comparison: every method's deletion curve (solid) and insertion curve (dashed), RoI
Dice against the fraction of blocks perturbed (deletion) or restored (insertion), and a table of each method's
attribution score, deletion AUC and insertion AUC (:func:`napari_seg_explain.core.evaluation.evaluation`).

Drawn with a plain matplotlib ``Figure`` on a ``FigureCanvasQTAgg`` (no pyplot: no global figure manager, nothing
that needs a display beyond the Qt widget itself), so it works under Xvfb and offscreen Qt platforms alike.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

#: the table's columns: (header, key of the evaluation dict, format)
COLUMNS = (("Method", "", ""), ("Attribution score", "attribution_score", "{:+.3f}"),
           ("Deletion AUC ↓", "deletion_auc", "{:.3f}"), ("Insertion AUC ↑", "insertion_auc", "{:.3f}"))
TITLE = "Compare methods: curves"


class CurvesPlot(QWidget):
    """Deletion / insertion curves of several methods on one RoI, and their numbers in a table."""

    def __init__(self, parent: QWidget | None = None) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(parent)
        self.figure = Figure(figsize=(5.0, 2.6), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c[0] for c in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.table)
        lay.addWidget(self.note)
        #: method title -> (deletion line, insertion line), as drawn last
        self.lines: dict[str, tuple[Any, Any]] = {}
        self.results: list[tuple[str, dict[str, Any]]] = []

    def show_results(self, results: list[tuple[str, dict[str, Any]]], note: str = "") -> None:
        """Draw ``(method title, evaluation dict)`` pairs: one colour per method, deletion solid, insertion dashed."""
        self.results = list(results)
        ax = self.axes
        ax.clear()
        self.lines = {}
        colors = [f"C{i % 10}" for i in range(len(results))]
        for (title, ev), color in zip(results, colors):
            x = ev["fractions"]
            (d,) = ax.plot(x, ev["deletion_curve"], color=color, lw=1.8, label=title)
            (i,) = ax.plot(x, ev["insertion_curve"], color=color, lw=1.2, ls="--", label="_nolegend_")
            self.lines[title] = (d, i)
        ax.set_xlabel("fraction of the blocks outside the RoI perturbed (deletion) / restored (insertion)",
                      fontsize="small")
        metric = str(results[0][1].get("metric", "")) if results else ""
        ax.set_ylabel("RoI " + metric.replace("_", " ") if metric else "RoI Dice", fontsize="small")
        ax.set_xlim(0, 1)
        ax.grid(True, alpha=0.3)
        if results:
            ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5),
                      title="solid: deletion, dashed: insertion", title_fontsize="small")
        self.canvas.draw_idle()
        self.table.setRowCount(len(results))
        for r, (title, ev) in enumerate(results):
            for c, (_, key, fmt) in enumerate(COLUMNS):
                text = title if not key else _fmt(fmt, ev.get(key))
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeRowsToContents()
        rows = sum(self.table.rowHeight(r) for r in range(len(results)))
        self.table.setFixedHeight(self.table.horizontalHeader().height() + rows + 4)
        self.note.setText(note)
        self.note.setVisible(bool(note))

    def deletion_curves(self) -> dict[str, list[float]]:
        """Each method's deletion curve as drawn (tests, scripts)."""
        return {title: [float(v) for v in d.get_ydata()] for title, (d, _) in self.lines.items()}

    def insertion_curves(self) -> dict[str, list[float]]:
        return {title: [float(v) for v in i.get_ydata()] for title, (_, i) in self.lines.items()}


def _fmt(fmt: str, value: Any) -> str:
    try:
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return "–"
