"""Section 2 · Image and segmentation: the image layer, the slice shown, the display window, Segment."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton

from ....core.errors import UserError
from ...windows import window_choices
from .. import inputs
from ..contrasts import ContrastList
from . import Section

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

SCOPE_SLICE = "current slice"
SCOPE_VOLUME = "whole volume"
WARN = "#e8a33d"  # orange: something the user should notice before Run


def slice_text(viewer: "napari.Viewer", image: "Layer | None", explained: Sequence[int] | None = None,
               three_d: bool = False) -> str:
    """The line under the image: 2-D or the slice shown, the size (in mm when known), the orientation.

    ``explained``: the slices a Run would explain (a RoI drawn on a slice explains that slice); when they are
    not the one shown, the line says so (in orange).
    """
    if image is None:
        return "Open an image (File > Open, or File > Open Sample > Segmentation Explainer)."
    if three_d:  # a 3-D model explains the whole volume, in any view
        meta3 = (image.metadata or {}).get("seg_explain", {})
        conv3 = meta3.get("convention", "orientation unknown (no geometry in this layer)")
        return (f"volume {tuple(image.data.shape)}: the 3-D model explains the whole volume (a context box around "
                f"the RoI), in the 2-D or 3-D view · {conv3}")
    try:
        z = inputs.current_slice(viewer, image)
    except UserError as exc:
        return f"<span style='color:{WARN}'>{html.escape(str(exc))}</span>"
    shape = tuple(image.data.shape)
    units = [str(u) for u in getattr(image, "units", ())]
    in_mm = bool(units) and all(u in ("mm", "millimeter") for u in units)
    size = " x ".join(f"{s * sc:.1f}" for s, sc in zip(shape[-2:], image.scale[-2:]))
    extent = f"{size} mm" if in_mm else f"{shape[-2]} x {shape[-1]} px"
    meta = (image.metadata or {}).get("seg_explain", {})
    convention = meta.get("convention", "orientation unknown (no geometry in this layer)")
    if z is None:
        return f"2-D image {shape} ({extent}) · {convention}"
    if not inputs.is_volume(image):
        return f"one-slice volume {shape}, explained as a 2-D image ({extent}) · {convention}"
    others = sorted({int(k) for k in explained or () if int(k) != z})
    if others:
        what = html.escape(inputs.explained_text(explained, None), quote=False)
        return (f"volume {shape}: axial slice {z} shown; <span style='color:{WARN}'>Run {what}</span>, "
                f"{extent} · {convention}")
    return f"volume {shape}: axial slice {z} (the one shown), {extent} · {convention}"


class ImageSection(Section):
    """``on_image()`` when another image is chosen, ``on_window(choice)``, ``on_segment()``,
    ``on_contrasts()`` when the ticked contrasts or their order change."""

    def __init__(self, on_image: Callable[[], Any], on_window: Callable[[str], Any],
                 on_segment: Callable[[], Any], on_contrasts: Callable[[], Any] = lambda: None) -> None:
        super().__init__("2 · Image and segmentation")
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("the image layer to segment and explain (its data is never modified)")
        self.image_combo.currentTextChanged.connect(lambda *_: on_image())
        self.form.addRow("Image", self.image_combo)
        self.slice_label = QLabel("")
        self.slice_label.setWordWrap(True)
        self.form.addRow(self.slice_label)
        self.contrasts = ContrastList()  # a multi-channel model: one layer per contrast (hidden otherwise)
        self.contrasts.itemChanged.connect(lambda *_: on_contrasts())
        self.contrasts.model().rowsMoved.connect(lambda *_: on_contrasts())
        self.contrasts_label = QLabel("Contrasts")
        self.form.addRow(self.contrasts_label, self.contrasts)
        self.contrasts.hide()
        self.contrasts_label.hide()
        self.window_combo = QComboBox()
        self.window_combo.addItems(window_choices())
        self.window_combo.setToolTip("display window (contrast limits only; CT presets in Hounsfield units)")
        self.window_combo.activated.connect(lambda *_: on_window(self.window_combo.currentText()))
        self.form.addRow("Window", self.window_combo)
        self.segment_scope = QComboBox()
        self.segment_scope.addItems([SCOPE_SLICE, SCOPE_VOLUME])
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(lambda *_: on_segment())
        row = QHBoxLayout()
        row.addWidget(self.segment_scope)
        row.addWidget(self.segment_button)
        self.form.addRow("Segment", row)

    def show_contrasts(self, viewer: "napari.Viewer", image: "Layer | None", model: Any,
                       skip: set[str] = frozenset()) -> None:
        """The Contrasts list, shown (and refilled) for a model with several input channels."""
        self.contrasts.refresh(viewer, image, model, skip)
        self.contrasts_label.setVisible(not self.contrasts.isHidden())

    def set_volume(self, is_volume: bool) -> None:
        """Only a volume (of more than one slice) can be segmented whole."""
        self.segment_scope.setEnabled(is_volume)
        self.segment_scope.setToolTip("segment the slice shown, or every slice of the volume" if is_volume else
                                      "a 2-D image (or a one-slice volume) is segmented as one slice")
        if not is_volume:
            self.segment_scope.setCurrentText(SCOPE_SLICE)

    def whole_volume(self) -> bool:
        return self.segment_scope.currentText() == SCOPE_VOLUME
