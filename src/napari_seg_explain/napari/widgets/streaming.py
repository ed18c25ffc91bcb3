"""Streams the partial map of a running explanation into a layer, for any method whose progress carries one.

A method's :class:`~napari_seg_explain.core.progress.Progress` may carry ``partial``: its map so far (NaN where
nothing is known yet). The first partial of a run makes the layer it streams into, named after the run's map
layer with ' (running)' and drawn in that layer's style (``spec.layers``, key ``"map"``); later partials
replace its data, at most about 8 times a second. A rerun of a run that is shown (same run id) streams into
that run's own map layer, renamed while it runs, and gives back its data, name and style on Cancel; a new
run's layer is added. When the run ends the layer becomes the run's map layer (no layer is removed on
success: removing one costs napari a full garbage collection in the GUI thread). On Cancel the layer is
removed, or kept as '... (partial)'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from .. import layers as L
from ..colormaps import stream_limits, volume_limit

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ...core.explainers.base import ResultLayer
    from ..slice_geometry import SliceGeometry


@dataclass
class StreamTarget:
    """Where run ``k``'s partial maps go: its map layer's spec entry, final name and, on a rerun, the layer."""

    geom: "SliceGeometry"
    layer: "ResultLayer"
    name: str
    method: str
    run_id: str
    existing: "Layer | None" = None

    def layer_data(self) -> "L.LayerDataTuple":
        """The empty layer the map streams into (NaN everywhere; volume-shaped for a slice of a volume). Qt-free:
        the worker makes it (:func:`~.jobs.explain_runs_job`), as filling a large volume takes seconds."""
        return L.stream_layer_data(self.layer, np.full(self.geom.result_shape, np.nan, np.float32), self.geom,
                                   self.name + L.STREAM_SUFFIX, self.method, self.run_id)


class Streamer:
    """The stream layer of the running job list (one run at a time)."""

    def __init__(self, viewer: "napari.Viewer", parent: QObject, queue_steps: Callable[[list[Any]], None],
                 colorbar_on: Callable[[], bool], timings: dict[str, float]) -> None:
        self.viewer = viewer
        self.targets: list[StreamTarget | None] = []
        self.index = -1
        self.layer: Layer | None = None
        self._backup: dict[str, Any] | None = None
        self._pending: np.ndarray | None = None
        self._prepared: dict[int, Any] = {}
        self._queue_steps = queue_steps
        self._colorbar_on = colorbar_on
        self.timings = timings
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(120)
        self._timer.timeout.connect(self.apply)

    def reset(self, targets: list[StreamTarget | None]) -> None:
        """A new job list: ``targets[k]`` for run ``k`` (None: that run does not stream)."""
        self.stop()
        self.targets, self.index, self.layer, self._backup, self._pending = list(targets), -1, None, None, None
        self._prepared = {}

    def prepare(self, index: int, layer_data: Any) -> None:
        """Run ``index``'s empty stream layer, made in the worker (:meth:`StreamTarget.layer_data`)."""
        if 0 <= index < len(self.targets) and self.targets[index] is not None:
            self._prepared[index] = layer_data

    def stop(self) -> None:
        self._timer.stop()

    def push(self, index: int, partial: np.ndarray) -> None:
        """Run ``index``'s map so far; the layer is made on its first partial, updates are throttled."""
        if not 0 <= index < len(self.targets) or self.targets[index] is None:
            return
        if index != self.index:
            t0 = time.perf_counter()
            self._begin(index, partial)
            self.timings["stream_begin_s"] = time.perf_counter() - t0
        self._pending = partial
        if not self._timer.isActive():
            self._timer.start()

    def apply(self) -> None:
        """Show the latest partial map (at most about 8 updates per second)."""
        t0 = time.perf_counter()
        try:
            partial, self._pending = self._pending, None
            layer = self.layer
            target = self.targets[self.index] if 0 <= self.index < len(self.targets) else None
            if partial is None or layer is None or target is None or layer not in self.viewer.layers:
                return
            if target.geom.whole:  # a 3-D model's whole-volume map (display order)
                layer.data[...] = np.moveaxis(partial, -1, 0)
            elif target.geom.is_volume:
                layer.data[target.geom.slice_index] = partial
            else:
                layer.data[...] = partial
            limits = stream_limits(target.layer.style, partial)
            if target.geom.whole and target.layer.style == "diverging":
                limits = (-volume_limit(limits[1]), volume_limit(limits[1]))
            if tuple(layer.contrast_limits) != limits:
                layer.contrast_limits = limits
            layer.refresh()
        finally:
            self.timings["partial_update_max_s"] = max(self.timings.get("partial_update_max_s", 0.0),
                                                       time.perf_counter() - t0)

    def _begin(self, index: int, partial: np.ndarray) -> None:
        self.stop()
        self.index, self._backup, self._pending = index, None, None
        target = self.targets[index]
        assert target is not None
        fresh = self._prepared.pop(index, None)
        data, kwargs, _ = fresh if fresh is not None else target.layer_data()
        old = target.existing
        if (old is not None and old in self.viewer.layers and L.layer_kind(old) == "image" and not old.rgb
                and tuple(old.data.shape) == tuple(target.geom.shape)):
            self._backup = {"data": old.data, "metadata": old.metadata, "name": old.name,
                            "contrast_limits": tuple(old.contrast_limits), "transform": L.layer_transform(old)}
            old.name = kwargs["name"]
            L.set_transform(old, kwargs)
            old.data = data
            old.metadata = kwargs["metadata"]
            old.contrast_limits = kwargs["contrast_limits"]
            self.layer = old
            return
        stale = kwargs["name"]
        if stale in self.viewer.layers:  # left over from an earlier failure
            self.viewer.layers.remove(stale)
        layer = self.layer = L.insert_layer(self.viewer, (data, kwargs | {"visible": False}, "image"),
                                            colorbar=False)

        # (also when the run has already ended: the layer is then the result or the partial map)
        def show() -> None:
            if layer in self.viewer.layers:
                layer.visible = True

        def colorbar() -> None:  # its first draw in a turn of its own
            if layer in self.viewer.layers and self._colorbar_on():
                L.show_colorbar(layer)

        self._queue_steps([show, colorbar])

    def adopt(self, index: int) -> "Layer | None":
        """Run ``index`` ended: hand its stream layer over (it becomes the run's map layer)."""
        if index != self.index:
            return None
        self.stop()
        layer, self.layer, self._backup, self._pending = self.layer, None, None, None
        return layer if layer is not None and layer in self.viewer.layers else None

    def discard(self, keep: bool) -> str | None:
        """Undo the stream: give a rerun's layer back its data, or remove the new layer. With ``keep`` the map
        so far stays as a layer named '<map name> (partial)'; returns that name."""
        if keep:
            self.apply()  # flush the latest update not yet shown
        self.stop()
        layer, self.layer = self.layer, None
        backup, self._backup = self._backup, None
        target = self.targets[self.index] if 0 <= self.index < len(self.targets) else None
        self._pending, self.index, self._prepared = None, -1, {}
        if layer is None or target is None or layer not in self.viewer.layers:
            return None
        name = target.name + L.PARTIAL_SUFFIX
        meta = {**layer.metadata, "seg_explain": {**L.seg_meta(layer), "status": "partial (cancelled)"}}
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        if backup is not None:
            if keep:
                L.insert_layer(self.viewer, (np.array(layer.data, copy=True),
                                             {"name": name, "colormap": layer.colormap,
                                              "contrast_limits": tuple(layer.contrast_limits),
                                              "blending": layer.blending, "opacity": layer.opacity,
                                              "interpolation2d": "nearest", "metadata": meta}
                                             | L.layer_transform(layer), "image"), colorbar=False)
            L.set_transform(layer, backup["transform"])
            layer.data = backup["data"]
            layer.metadata = backup["metadata"]
            layer.contrast_limits = backup["contrast_limits"]
            layer.name = backup["name"]
            return name if keep else None
        if not keep:
            self.viewer.layers.remove(layer)
            return None
        layer.name = name
        layer.metadata = meta
        return name
