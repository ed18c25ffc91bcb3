"""A method's parameter form, generated from its spec (``spec.params()``): nothing here is written per method.

Numbers become spin boxes with the declared range and step, booleans check boxes, parameters with
``choices`` combo boxes, anything else (or a parameter whose default is None: empty = the default) a text field; every widget's tooltip is the parameter's ``tip``.
Parameters marked ``advanced=False`` go in the form shown at once, the others in the collapsible
'Advanced parameters' form. A number whose tip says that 0 is automatic shows 'auto' for 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

if TYPE_CHECKING:
    from ....core.explainers.base import ExplainerSpec, ParamInfo

INT_MAX = 2**31 - 1
FLOAT_MAX = 1e12


def _decimals(x: float | None) -> int:
    if x is None or x != x:
        return 0
    frac = f"{abs(float(x)):.6f}".rstrip("0").split(".")[1]
    return len(frac)


def param_widget(p: "ParamInfo", on_change: Callable[..., Any]) -> QWidget:
    """The widget of one parameter, set to its default."""
    if p.choices is not None:
        w = QComboBox()
        w.addItems([str(c) for c in p.choices])
        if p.default in p.choices:
            w.setCurrentIndex(list(p.choices).index(p.default))
        w.currentIndexChanged.connect(on_change)
    elif p.default is None or p.type not in (bool, int, float):
        w = QLineEdit("" if p.default is None else str(p.default))
        w.setPlaceholderText("(default)" if p.default is None else "")
        w.textChanged.connect(on_change)
    elif p.type is bool:
        w = QCheckBox()
        w.setChecked(bool(p.default))
        w.toggled.connect(on_change)
    elif p.type is int:
        w = QSpinBox()
        w.setRange(int(max(p.lo, -INT_MAX)) if p.lo is not None else -INT_MAX,
                   int(min(p.hi, INT_MAX)) if p.hi is not None else INT_MAX)
        w.setSingleStep(max(1, int(p.step or 1)))
        w.setValue(int(p.default))
        if p.lo == 0 and "0 = automatic" in p.tip:
            w.setSpecialValueText("auto")
        w.valueChanged.connect(on_change)
    elif p.type is float:
        w = QDoubleSpinBox()
        w.setDecimals(min(6, max(2, _decimals(p.step), _decimals(p.default))))
        w.setRange(float(p.lo) if p.lo is not None else -FLOAT_MAX, float(p.hi) if p.hi is not None else FLOAT_MAX)
        w.setSingleStep(float(p.step) if p.step else 10.0 ** -w.decimals())
        w.setValue(float(p.default))
        w.valueChanged.connect(on_change)
    w.setToolTip(p.tip)
    return w


def widget_value(p: "ParamInfo", w: QWidget) -> Any:
    if p.choices is not None:
        return p.choices[w.currentIndex()]
    if isinstance(w, QCheckBox):
        return w.isChecked()
    if isinstance(w, QSpinBox):
        return int(w.value())
    if isinstance(w, QDoubleSpinBox):
        return float(w.value())
    text = w.text().strip()
    if text == "":
        return p.default
    try:  # a number whose default is None is typed in
        return p.type(text) if p.type in (int, float) else text
    except ValueError:
        return text  # the config's range check names the parameter


class ParamForm:
    """The parameter widgets of one method: ``basic`` (shown at once) and ``advanced`` (collapsible) forms."""

    def __init__(self, spec: "ExplainerSpec", on_change: Callable[..., Any]) -> None:
        self.spec = spec
        self.params = {p.name: p for p in spec.params()}
        self.widgets: dict[str, QWidget] = {}
        self.basic, self.basic_form = self._form()
        self.advanced, self.advanced_form = self._form()
        for p in self.params.values():
            w = self.widgets[p.name] = param_widget(p, on_change)
            (self.advanced_form if p.advanced else self.basic_form).addRow(p.label, w)

    @staticmethod
    def _form() -> tuple[QWidget, QFormLayout]:
        host = QWidget()
        form = QFormLayout(host)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        return host, form

    def values(self) -> dict[str, Any]:
        """Every parameter's current value, by name."""
        return {name: widget_value(p, self.widgets[name]) for name, p in self.params.items()}

    def set_visible(self, on: bool) -> None:
        self.basic.setVisible(on and self.basic_form.rowCount() > 0)
        self.advanced.setVisible(on and self.advanced_form.rowCount() > 0)
