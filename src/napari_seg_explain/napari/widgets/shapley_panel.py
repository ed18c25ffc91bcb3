"""Per-input values in the results panel: a signed bar per contrast (channel), the ranking and, when the run
has one, its agreement with a clinician's ranking; painted with plain Qt.

Keyed on the run's stats, not on the method: any run whose stats hold ``shapley`` (one value per contrast)
and ``contrasts`` (their names) gets the bars; ``ranking`` / ``ranking_names`` give the ranking line (else it
is the values' order), ``kendall_tau`` and ``top1_match`` the agreement line.

Several models (e.g. the folds of a cross-validated model; in the dock: several runs selected in the runs list,
:func:`runs_across_models`): when the stats carry ``across_models`` (the
explainer's aggregate: ``shapley`` = mean, ``shapley_std``, ``ranking``, ``rank_variance``, ``n_models``), the bars
show the mean with ± one standard deviation as error bars, the ranking is that of the mean, and a line gives each
contrast's rank variance across the models."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

VALUES_KEY, NAMES_KEY = "shapley", "contrasts"

CAPTION = "Value per contrast (bar: signed, scaled to the largest |value|)"

POSITIVE = QColor(214, 96, 77)   # helps the segmentation
NEGATIVE = QColor(67, 147, 195)  # hurts it


def has_contrast_values(stats: dict[str, Any]) -> bool:
    """Whether ``stats`` hold one value per named contrast (what :class:`ContrastBars` draws)."""
    values, names = stats.get(VALUES_KEY), stats.get(NAMES_KEY)
    try:
        return values is not None and names is not None and len(values) == len(names) > 0
    except TypeError:
        return False


def across_models(stats: dict[str, Any]) -> dict[str, Any] | None:
    """The stats' summary across several models, when it has one value and one spread per contrast."""
    agg = stats.get("across_models")
    if not isinstance(agg, dict) or not has_contrast_values(agg):
        return None
    std = agg.get("shapley_std")
    try:
        return agg if std is not None and len(std) == len(agg[VALUES_KEY]) else None
    except TypeError:
        return None


def runs_across_models(expls: list[Any]) -> dict[str, Any] | None:
    """Several runs' per-contrast values (e.g. one Shapley run per fold model, on the same RoI), as the stats of
    the first with their summary across the runs (``across_models``, the explainer's aggregate); None unless
    there are two or more runs with values for the same contrasts."""
    stats = [getattr(e, "stats", None) or {} for e in expls]
    if len(stats) < 2 or not all(has_contrast_values(s) for s in stats):
        return None
    if any(list(s[NAMES_KEY]) != list(stats[0][NAMES_KEY]) for s in stats):
        return None
    from ...core.explainers.shapley import across_models

    return dict(stats[0], across_models=across_models(expls))


def rank_variance_text(agg: dict[str, Any]) -> str:
    """``"Rank variance across 5 models: T1 0.00, T2 0.30, ..."`` (ranks 0 = most important), or ""."""
    var = agg.get("rank_variance")
    names = [str(n) for n in agg.get(NAMES_KEY) or []]
    if var is None or len(var) != len(names):
        return ""
    n = agg.get("n_models")
    return (f"Rank variance across {n} models: " if n else "Rank variance: ") + ", ".join(
        f"{name} {float(v):.2f}" for name, v in zip(names, var))


def ranking_text(stats: dict[str, Any]) -> str:
    """``"FLAIR > T2 > T1c > T1"``: the stats' ranking (names, else indices into the contrasts, else the
    values sorted, largest first)."""
    names = [str(n) for n in stats.get(NAMES_KEY) or []]
    ranked = stats.get("ranking_names")
    if not ranked:
        order = stats.get("ranking")
        if order is None:
            values = [float(v) for v in stats.get(VALUES_KEY) or []]
            order = sorted(range(len(values)), key=lambda i: -values[i])
        ranked = [names[int(i)] if 0 <= int(i) < len(names) else str(i) for i in order]
    return " > ".join(str(n) for n in ranked)


def agreement_text(stats: dict[str, Any]) -> str:
    """The agreement with a clinician's ranking (Kendall's tau, top-1 match), or "" when the run has none."""
    parts = []
    tau = stats.get("kendall_tau")
    if isinstance(tau, (int, float)):
        parts.append(f"Kendall's tau {float(tau):.2f}")
    top1 = stats.get("top1_match")
    if top1 is not None:
        parts.append(f"top-1 {'matches' if bool(top1) else 'differs'}")
    return "Clinician's ranking: " + ", ".join(parts) if parts else ""


class ContrastBars(QWidget):
    """One row per contrast: its name, a bar from a centre line (right: positive, left: negative) scaled to the
    largest ``|value|``, and the value as text."""

    ROW_H = 18

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.names: list[str] = []
        self.values: list[float] = []
        self.errors: list[float] = []  # ± one standard deviation per bar (several models), or empty
        self.unit = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(260, self._height())

    def _height(self) -> int:
        return 4 + len(self.values) * (self.ROW_H + 2)

    def set_values(self, names: list[str], values: list[float], unit: str = "",
                   errors: list[float] | None = None) -> None:
        """One bar per name; ``errors``: the half-length of each bar's error bar (e.g. a standard deviation)."""
        self.names, self.values, self.unit = [str(n) for n in names], [float(v) for v in values], unit
        self.errors = [abs(float(e)) if e == e else 0.0 for e in errors] if errors is not None else []
        self.setFixedHeight(self._height())
        self.update()

    @property
    def scale(self) -> float:
        """The ``|value|`` a full half-bar stands for (the largest one, error bar included; 1 when all are 0)."""
        errs = self.errors if len(self.errors) == len(self.values) else [0.0] * len(self.values)
        big = max((abs(v) + e for v, e in zip(self.values, errs)), default=0.0)
        return big if big > 0 else 1.0

    def fractions(self) -> list[float]:
        """Each bar's signed length as a fraction of a full half-bar (the largest ``|value|`` is ±1)."""
        return [v / self.scale for v in self.values]

    def error_spans(self) -> list[tuple[float, float]]:
        """Each error bar's ends as fractions of a full half-bar (value ∓ error), or ``[]`` without errors."""
        if len(self.errors) != len(self.values):
            return []
        return [((v - e) / self.scale, (v + e) / self.scale) for v, e in zip(self.values, self.errors)]

    def value_text(self, i: int) -> str:
        err = f" ± {self.errors[i]:.3f}" if len(self.errors) == len(self.values) else ""
        return f"{self.values[i]:+.3f}{err}" + (f" {self.unit}" if self.unit else "")

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        fg = self.palette().color(self.foregroundRole())
        fm = p.fontMetrics()
        label_w = max((fm.horizontalAdvance(n) for n in self.names), default=0) + 8
        value_w = max((fm.horizontalAdvance(self.value_text(i)) for i in range(len(self.values))), default=0) + 6
        bar_w = max(20, self.width() - label_w - value_w - 8)
        half = bar_w / 2
        mid = label_w + half
        spans = self.error_spans()
        for i, (name, frac) in enumerate(zip(self.names, self.fractions())):
            y = 2 + i * (self.ROW_H + 2)
            p.setPen(fg)
            p.drawText(QRectF(0, y, label_w, self.ROW_H), int(Qt.AlignmentFlag.AlignVCenter), name)
            p.fillRect(QRectF(label_w, y + 3, bar_w, self.ROW_H - 6), QColor(128, 128, 128, 50))
            length = half * abs(frac)
            x = mid if frac >= 0 else mid - length
            p.fillRect(QRectF(x, y + 3, length, self.ROW_H - 6), POSITIVE if frac >= 0 else NEGATIVE)
            if spans:  # error bar: a whisker from value - error to value + error, with end caps
                lo, hi = (mid + half * max(-1.0, min(1.0, f)) for f in spans[i])
                cy = y + self.ROW_H / 2
                p.setPen(QPen(fg, 1.5))
                p.drawLine(int(lo), int(cy), int(hi), int(cy))
                for end in (lo, hi):
                    p.drawLine(int(end), int(y + 4), int(end), int(y + self.ROW_H - 4))
            p.setPen(fg)
            p.drawText(QRectF(label_w + bar_w + 6, y, value_w, self.ROW_H), int(Qt.AlignmentFlag.AlignVCenter),
                       self.value_text(i))
        p.setPen(QPen(QColor(120, 120, 120)))
        if self.values:
            p.drawLine(int(mid), 2, int(mid), self._height() - 2)
        p.end()


class ContrastValuesPanel(QWidget):
    """The bars, the ranking line and the clinician agreement line (hidden when the stats have no values)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.caption = QLabel(CAPTION)
        self.caption.setWordWrap(True)
        self.bars = ContrastBars()
        self.ranking_label = QLabel()
        self.ranking_label.setWordWrap(True)
        self.ranking_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.variance_label = QLabel()
        self.variance_label.setWordWrap(True)
        self.agreement_label = QLabel()
        self.agreement_label.setWordWrap(True)
        for w in (self.caption, self.bars, self.ranking_label, self.variance_label, self.agreement_label):
            lay.addWidget(w)

    def set_stats(self, stats: dict[str, Any], unit: str = "") -> bool:
        """Show ``stats``' per-contrast values; hide (and return False) when they have none."""
        if not has_contrast_values(stats):
            self.bars.set_values([], [])
            self.ranking_label.setText("")
            self.variance_label.setText("")
            self.agreement_label.setText("")
            self.hide()
            return False
        agg = across_models(stats)
        if agg is not None:
            self.bars.set_values(list(agg[NAMES_KEY]), list(agg[VALUES_KEY]), unit, list(agg["shapley_std"]))
            n = agg.get("n_models", "several")
            self.caption.setText(f"Mean value per contrast over {n} models, ± one standard deviation "
                                 "(bar: signed, scaled to the largest |mean| + sd)")
            self.ranking_label.setText(f"Ranking (mean of {n} models): " + ranking_text(agg))
            self.variance_label.setText(rank_variance_text(agg))
        else:
            self.bars.set_values(list(stats[NAMES_KEY]), list(stats[VALUES_KEY]), unit)
            self.caption.setText(CAPTION)
            self.ranking_label.setText("Ranking: " + ranking_text(stats))
            self.variance_label.setText("")
        self.variance_label.setVisible(bool(self.variance_label.text()))
        agreement = agreement_text(stats)
        self.agreement_label.setText(agreement)
        self.agreement_label.setVisible(bool(agreement))
        self.show()
        return True

    def clear(self) -> None:
        self.set_stats({})
