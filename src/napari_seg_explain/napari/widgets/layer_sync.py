"""Keeps the dock's layer choices in step with the viewer: image, RoI and ground-truth lists, the slice line and
the cost estimate follow layers being added, renamed, moved, removed or drawn on, and the slice shown.

A shape drawn on the RoI layer ends that layer's drawing mode, so that a stray drag on the canvas does not add
another shape that the next Run would silently use (the newest shape is the RoI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer

from .. import layers as L
from .sections import fill_combo
from .sections.explain import NO_GT, NO_ROI

if TYPE_CHECKING:
    from napari.layers import Layer


class LayerSync:
    """Connects the viewer's events to ``dock`` (the :class:`~.dock.SegExplainWidget`)."""

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.viewer = dock.viewer

    def connect(self) -> None:
        ev = self.viewer.layers.events
        ev.inserted.connect(self._on_inserted)
        ev.removed.connect(self._on_removed)
        ev.moved.connect(self.refresh)
        dims = self.viewer.dims.events
        for event in (dims.current_step, dims.ndisplay, dims.order):
            event.connect(self._on_step)
        for layer in self.viewer.layers:
            self._watch(layer)

    def _watch(self, layer: "Layer") -> None:
        layer.events.name.connect(self.refresh)
        layer.events.visible.connect(self.dock.runs_changed)
        if L.layer_kind(layer) in ("shapes", "labels"):
            layer.events.data.connect(self.dock.schedule_estimate)
            if L.layer_kind(layer) == "shapes":
                layer.events.highlight.connect(self.dock.schedule_estimate)
                layer.events.data.connect(lambda ev, lay=layer: self._on_shapes_data(lay, ev))

    def _on_shapes_data(self, layer: "Layer", event: Any) -> None:
        if getattr(event, "action", None) != "added" or L.is_result_layer(layer):  # napari's ActionType.ADDED
            return
        if layer.name != self.dock.roi_combo.currentText() or not str(layer.mode).startswith("add_"):
            return

        def leave() -> None:  # after napari has finished the mouse release that completed the shape
            if layer in self.viewer.layers and str(layer.mode).startswith("add_"):
                layer.mode = "pan_zoom"
                self.viewer.status = (f"RoI drawn on {layer.name!r}; drawing mode left (choose a shape tool of the "
                                      "layer to draw another RoI)")

        QTimer.singleShot(0, leave)

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch(layer)
        self.refresh()
        if L.layer_kind(layer) == "shapes" and not L.is_result_layer(layer):
            self.dock.roi_combo.setCurrentText(layer.name)  # a new Shapes layer is most likely the RoI

    def _on_removed(self, *_: Any) -> None:
        self.refresh()
        if self.dock.controller.runs.prune():
            self.dock.runs_changed()

    def _on_step(self, *_: Any) -> None:
        self.dock.update_slice_label()
        self.dock.schedule_estimate()

    def refresh(self, *_: Any) -> None:
        """Refill the image, RoI and ground-truth lists (the plugin's maps and outlines are no inputs; its
        segmentations may serve as a ground truth)."""
        from napari.layers import Image, Labels, Shapes

        dock = self.dock
        layers = list(self.viewer.layers)
        results = {lay.name for lay in layers if L.is_result_layer(lay) and L.result_kind(lay) != "segmentation"}
        images = [lay.name for lay in layers if isinstance(lay, Image) and lay.name not in results]
        before = dock.image_combo.currentText()
        active = self.viewer.layers.selection.active
        prefer = (active.name if isinstance(active, Image) and active.name in images
                  else (images[-1] if images else None))
        fill_combo(dock.image_combo, images, prefer)
        rois = [lay.name for lay in reversed(layers) if isinstance(lay, (Shapes, Labels))
                and lay.name not in results and not lay.name.endswith(" segmentation")]
        if dock.roi_combo.currentText() == NO_ROI:
            dock.roi_combo.blockSignals(True)
            dock.roi_combo.clear()  # nothing chosen yet: take the newest RoI layer
            dock.roi_combo.blockSignals(False)
        fill_combo(dock.roi_combo, [*rois, NO_ROI], rois[0] if rois else NO_ROI)
        gts = [lay.name for lay in layers if isinstance(lay, Labels) and lay.name not in results]
        fill_combo(dock.gt_combo, [NO_GT, *gts], NO_GT)
        if dock.image_combo.currentText() != before:
            dock.image_changed()
        dock.update_state()
        dock.schedule_estimate()
