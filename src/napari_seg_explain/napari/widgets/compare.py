"""Two runs side by side in napari's grid mode, each over the image; then the viewer put back as it was.

napari's grid places ``stride`` consecutive layers of the layer list in each viewbox and leaves out viewboxes
with no visible layer. A comparison therefore moves, to the bottom of the layer list, the image and the first
run's layers, then a second view of the image (a layer sharing the image's data, no copy) and the second
run's layers, with a stride of one image plus the longer run; every other layer is hidden. The run with more
layers goes first, so each viewbox starts with its image. :meth:`Comparison.end` removes the second view and
restores the layer order, visibility and grid settings. Layers are compared with
:func:`~napari_seg_explain.napari.layers.same_layer` (the viewer of a widget docked from the Plugins menu is a
proxy that wraps each layer anew). No Qt here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import layers as L

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from .run_store import RunRecord, RunStore

COMPARE_SUFFIX = " (compare)"


class Comparison:
    """Start with :meth:`start`, undo with :meth:`end`."""

    def __init__(self, viewer: "napari.Viewer", store: "RunStore", image: "Layer",
                 runs: list["RunRecord"]) -> None:
        if len(runs) != 2:
            raise ValueError("a comparison shows two runs")
        self.viewer, self.store, self.image = viewer, store, image
        self.runs = sorted(runs, key=lambda r: -len(store.live_layers(r)))  # the longer first: see the docstring
        self.order: list[Layer] = []
        self.visible: dict[int, tuple[Layer, bool]] = {}
        self.grid: dict[str, Any] = {}
        self.second_view: Layer | None = None
        self.active = False

    def remember_view(self) -> None:
        """What :meth:`stop` puts back: the layer order, each layer's visibility and the grid settings."""
        self.order = list(self.viewer.layers)
        self.visible = {id(L.unwrap(lay)): (lay, bool(lay.visible)) for lay in self.order}
        grid = viewer_grid(self.viewer)
        self.grid = {"enabled": grid.enabled, "stride": grid.stride, "shape": tuple(grid.shape)}

    def start(self) -> None:
        viewer = self.viewer
        self.remember_view()
        grid = viewer_grid(viewer)
        first, second = (self.store.live_layers(r) for r in self.runs)
        self.second_view = self._second_view()
        wanted = [self.image, *first, self.second_view, *second]
        rest = [lay for lay in viewer.layers if not any(L.same_layer(lay, w) for w in wanted)]
        for lay in rest:
            lay.visible = False
        for lay in wanted:
            lay.visible = True
        _reorder(viewer, wanted + rest)
        grid.stride = 1 + len(first)
        grid.shape = (-1, -1)
        grid.enabled = True
        self.active = True

    def _second_view(self) -> "Layer":
        """The image once more (same data array, transform and display), for the second viewbox."""
        from napari.layers import Image

        img = self.image
        kwargs = {"name": img.name + COMPARE_SUFFIX, "rgb": getattr(img, "rgb", False),
                  "units": img.units, "axis_labels": img.axis_labels,
                  "colormap": img.colormap, "contrast_limits": tuple(img.contrast_limits),
                  "gamma": img.gamma, "blending": img.blending, "opacity": img.opacity,
                  "metadata": {"seg_explain": {"result": "compare"}}} | L.layer_transform(img)
        layer = Image(img.data, **kwargs)
        self.viewer.layers.append(layer)
        return layer

    def shows(self, run_id: str) -> bool:
        return self.active and any(r.run_id == run_id for r in self.runs)

    def end(self) -> None:
        """The viewer as before :meth:`start`; layers removed meanwhile stay removed, new ones stay on top."""
        if not self.active:
            return
        self.active = False
        viewer = self.viewer
        if self.second_view is not None and self.second_view in viewer.layers:
            viewer.layers.remove(self.second_view)
        self.second_view = None
        grid = viewer_grid(viewer)
        grid.enabled = self.grid["enabled"]
        grid.stride = self.grid["stride"]
        grid.shape = self.grid["shape"]
        present = [lay for lay in self.order if lay in viewer.layers]
        newer = [lay for lay in viewer.layers if not any(L.same_layer(lay, p) for p in present)]
        _reorder(viewer, present + newer)
        for lay, was_visible in self.visible.values():
            if lay in viewer.layers:
                lay.visible = was_visible


def viewer_grid(viewer: "napari.Viewer") -> Any:
    """The viewer's grid settings: ``viewer.canvas.grid`` (napari >= 0.9), else ``viewer.grid``."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def _reorder(viewer: "napari.Viewer", target: list["Layer"]) -> None:
    """Move the layers into the order ``target`` (every layer of the viewer, each once)."""
    for i, lay in enumerate(target):
        j = viewer.layers.index(lay)
        if j != i:
            viewer.layers.move(j, i)
