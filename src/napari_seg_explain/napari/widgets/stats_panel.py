"""The results panel: a run's statistics as its method's spec lists them (``spec.stats``), a colour legend of
its map's style and, for a signed map with effect shares, share bars; painted with plain Qt.

The legend of a signed map gives its absolute scale: the colours run from ``-L`` to ``+L`` in the map's unit
(PdCR: Dice points), ``L`` being the limit the map layer is drawn with (its own ``max |value|``, or the one
shared by the runs shown, see :mod:`.results_view`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import re

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt
from qtpy.QtGui import QBrush, QColor, QFont, QLinearGradient, QPainter, QPen
from qtpy.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ..colormaps import DIVERGING_COLORS
from .shapley_panel import ContrastValuesPanel

if TYPE_CHECKING:
    from ...core.results import Explanation


def _qcolor(rgba: tuple[float, ...]) -> QColor:
    return QColor.fromRgbF(*[float(c) for c in rgba])


RED = _qcolor(DIVERGING_COLORS["strong_support"])
BLUE = _qcolor(DIVERGING_COLORS["strong_against"])
GRAY = QColor(150, 150, 150)


class LegendBar(QWidget):
    """Colour legend of the shown map: diverging (red, transparent, blue) or saliency (inferno)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.style = "diverging"
        self.limit = 1.0
        self.unit = ""
        self.note = ""
        self.setMinimumHeight(60)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(260, 60)

    def set_state(self, style: str, limit: float, unit: str = "", note: str = "") -> None:
        """``style`` ``"diverging"`` (from ``-limit`` to ``+limit``, in ``unit``) or ``"saliency"``; ``note`` says
        whose scale it is (e.g. "shared by the 2 runs shown")."""
        self.style, self.limit, self.unit, self.note = style, float(limit), unit, note
        self.update()

    def caption(self) -> str:
        """The line under the bar: the scale in words."""
        if self.style != "diverging":
            return ""
        scale = f"colour scale ±{self.limit:.2g}" + (f" {self.unit}" if self.unit else "")
        return scale + (f", {self.note}" if self.note else "")

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w = self.width()
        bar = QRectF(4, 4, w - 8, 14)
        # checkerboard under the bar, so "transparent" reads as transparent
        for i in range(int(bar.width() // 7) + 1):
            for j in range(2):
                if (i + j) % 2:
                    p.fillRect(QRectF(bar.x() + 7 * i, bar.y() + 7 * j, 7, 7), QColor(205, 205, 205))
                else:
                    p.fillRect(QRectF(bar.x() + 7 * i, bar.y() + 7 * j, 7, 7), QColor(245, 245, 245))
        grad = QLinearGradient(bar.left(), 0, bar.right(), 0)
        if self.style == "diverging":
            c = DIVERGING_COLORS
            grad.setColorAt(0.0, _qcolor(c["strong_support"]))
            grad.setColorAt(0.495, _qcolor(c["weak_support"]))
            grad.setColorAt(0.4951, QColor(0, 0, 0, 0))
            grad.setColorAt(0.5049, QColor(0, 0, 0, 0))
            grad.setColorAt(0.505, _qcolor(c["weak_against"]))
            grad.setColorAt(1.0, _qcolor(c["strong_against"]))
            labels = (f"−{self.limit:.2g} supports RoI", "0 irrelevant", f"+{self.limit:.2g} works against")
        else:
            from matplotlib import colormaps

            cmap = colormaps["inferno"]
            for t in np.linspace(0, 1, 11):
                grad.setColorAt(float(t), _qcolor(cmap(float(t))))
            grad.setColorAt(0.0, QColor(0, 0, 0, 0))
            labels = ("0 (transparent)", "saliency", "1")
        p.fillRect(bar, QBrush(grad))
        p.setPen(QPen(QColor(120, 120, 120)))
        p.drawRect(bar)
        p.setPen(self.palette().color(self.foregroundRole()))
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1))
        p.setFont(f)
        y = int(bar.bottom()) + 16
        fm = p.fontMetrics()
        p.drawText(int(bar.left()), y, labels[0])
        p.drawText(int(bar.center().x() - fm.horizontalAdvance(labels[1]) / 2), y, labels[1])
        p.drawText(int(bar.right() - fm.horizontalAdvance(labels[2])), y, labels[2])
        caption = self.caption()
        if caption:
            p.drawText(int(bar.left()), y + fm.height() + 1,
                       fm.elidedText(caption, Qt.TextElideMode.ElideRight, int(bar.width())))
        p.end()


class ShareBars(QWidget):
    """Horizontal bars: shares (%) of supporting (red), opposing (blue) and irrelevant (gray) blocks."""

    ROWS = (("supports (red)", "negative_share", RED), ("works against (blue)", "positive_share", BLUE),
            ("irrelevant", "irrelevant_share", GRAY))

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shares: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.setMinimumHeight(60)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(260, 60)

    def set_stats(self, stats: dict[str, Any]) -> None:
        self.shares = {k: float(stats.get(k, 0.0) or 0.0) for _, k, _ in self.ROWS}
        self.counts = {"negative_share": int(stats.get("n_negative", 0) or 0),
                       "positive_share": int(stats.get("n_positive", 0) or 0),
                       "irrelevant_share": int(stats.get("n_irrelevant", 0) or 0)}
        self.update()

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        fg = self.palette().color(self.foregroundRole())
        fm = p.fontMetrics()
        label_w = max(fm.horizontalAdvance(name) for name, _, _ in self.ROWS) + 8
        value_w = fm.horizontalAdvance("100.0% (9999)") + 6
        bar_w = max(20, self.width() - label_w - value_w - 8)
        row_h = 18
        for i, (name, key, color) in enumerate(self.ROWS):
            y = 2 + i * (row_h + 2)
            share = self.shares.get(key, 0.0)
            p.setPen(fg)
            p.drawText(QRectF(0, y, label_w, row_h), int(Qt.AlignmentFlag.AlignVCenter), name)
            p.fillRect(QRectF(label_w, y + 3, bar_w, row_h - 6), QColor(128, 128, 128, 50))
            p.fillRect(QRectF(label_w, y + 3, bar_w * share / 100.0, row_h - 6), color)
            p.setPen(fg)
            p.drawText(QRectF(label_w + bar_w + 6, y, value_w, row_h), int(Qt.AlignmentFlag.AlignVCenter),
                       f"{share:.1f}% ({self.counts.get(key, 0)})")
        p.end()


class StatsPanel(QWidget):
    """What the papers report for the last explanation, with its legend (empty until a result exists)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("No result yet: draw a RoI and press Run.")
        self.title.setWordWrap(True)
        self.legend = LegendBar()
        self.bars = ShareBars()
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(10)
        self.grid.setVerticalSpacing(1)
        self.values: dict[str, QLabel] = {}
        self.contrasts = ContrastValuesPanel()
        lay.addWidget(self.title)
        lay.addWidget(self.legend)
        lay.addWidget(self.bars)
        lay.addWidget(self.contrasts)
        lay.addLayout(self.grid)
        self.legend.hide()
        self.bars.hide()
        self.contrasts.hide()

    def _set_rows(self, rows: list[tuple[str, str]]) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.values = {}
        for i, (name, value) in enumerate(rows):
            k = QLabel(name)
            v = QLabel(value)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            v.setWordWrap(True)
            self.grid.addWidget(k, i, 0)
            self.grid.addWidget(v, i, 1)
            self.values[name] = v

    def clear(self) -> None:
        self.title.setText("No result yet: draw a RoI and press Run.")
        self.legend.hide()
        self.bars.hide()
        self.contrasts.clear()
        self._set_rows([])

    def set_scale(self, limit: float, note: str = "") -> None:
        """The legend's ``L`` (the signed map drawn from ``-L`` to ``+L``) and whose scale it is."""
        if self.legend.style == "diverging":
            self.legend.set_state("diverging", limit, self.legend.unit, note)

    def show_explanation(self, expl: "Explanation", title: str = "", limit: float | None = None,
                         note: str = "") -> None:
        """The statistics of ``expl`` its spec lists (``spec.stats``), then forward passes, time and device; the
        legend of its map, a signed one from ``-limit`` to ``+limit`` (default: its own ``max |value|``)."""
        from ...core.errors import UserError
        from ...core.explainers import registry
        from ..layers import result_layers, symmetric_limit

        s, prov = expl.stats, expl.provenance
        name, layers = result_layers(expl.method, expl.map)
        try:
            spec = registry.get(expl.method)
            stats, head = spec.stats, f"{spec.title}: {spec.description}" if spec.description else spec.title
            description = spec.description
        except UserError:
            stats, head, description = (), name, ""
        time_s = prov.get("wall_time_s")
        common = [("forward passes", f"{int(prov.get('forward_passes', s.get('forward_passes', 0)) or 0):,}"),
                  ("wall time", f"{time_s:.1f} s" if isinstance(time_s, (int, float)) else "?"),
                  ("device", str((prov.get("model") or {}).get("device", "?")))]
        map_layer = next((rl for rl in layers if rl.key == "map"), None)
        style = map_layer.style if map_layer is not None else ""
        shares = style == "diverging" and all(k in s for _, k, _ in ShareBars.ROWS)
        in_bars = {k for _, k, _ in ShareBars.ROWS} if shares else set()
        rows = [(st.label, _fmt(st.fmt, s[st.key])) for st in stats if s.get(st.key) is not None
                and st.key not in in_bars]
        if style in ("diverging", "saliency"):
            if style == "diverging":
                lim = symmetric_limit(expl.map) if limit is None else float(limit)
                self.legend.set_state(style, lim, map_unit(map_layer, description), note)
            else:
                self.legend.set_state(style, 1.0)
            self.legend.show()
        else:
            self.legend.hide()
        if shares:
            self.bars.set_stats(s)
        self.bars.setVisible(shares)
        unit = map_unit(None, description)
        self.contrasts.set_stats(s, unit[3:] if unit.startswith("in ") else unit)
        self.title.setText(f"<b>{head}</b>" + (f"<br>{title}" if title else ""))
        self._set_rows(rows + common)

    def text(self) -> str:
        """The panel's numbers as plain text (for tests and logs)."""
        return "; ".join(f"{k}: {v.text()}" for k, v in self.values.items())


def map_unit(layer: Any, description: str = "") -> str:
    """The unit of a method's map: the result layer's ``unit`` when its spec declares one, else the last
    parenthesis of the method's description ("... (Dice points).")."""
    unit = getattr(layer, "unit", "") or ""
    if unit:
        return str(unit)
    found = re.findall(r"\(([^()]{1,30})\)", description or "")
    return found[-1] if found else ""


def _fmt(fmt: str, value: Any) -> str:
    """``fmt.format(value)``, or ``str(value)`` when the value does not fit the format (e.g. a float for ``{:d}``)."""
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
