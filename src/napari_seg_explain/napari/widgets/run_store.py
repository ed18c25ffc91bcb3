"""The runs shown in the viewer: each explanation with its own layers, found again by its run id.

A run is one :class:`~napari_seg_explain.core.jobs.ExplainJob` result. Its layers are named by method, RoI and
class (``PdCR map · RoI 1 · white_matter``); a second run of another id with the same RoI and class name (other
parameters, a moved shape) gets ``#2``, ``#3`` after its label. A rerun with the same id (identical inputs)
updates that run's layers in place. A run lives as long as one of its layers is in the viewer: deleting every
layer of a run (in the dock or in napari's layer list) forgets it. Showing a run (a new result, a rerun, a run
opened from a folder) hides every other run's layers, so that results never pile up on the canvas; the other
runs stay in the runs list, unticked. No Qt here; napari layers only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import layers as L

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ...core.results import Explanation
    from ..slice_geometry import SliceGeometry


@dataclass
class RunRecord:
    """One run: its explanation, where its layers go, and its layers by ``ResultLayer.key``."""

    run_id: str
    method: str
    title: str  # the method's title, e.g. "PdCR"
    label: str  # "RoI 1 · white_matter" (+ " #2" for a second run of that label)
    expl: "Explanation"
    geom: "SliceGeometry"
    layers: dict[str, "Layer"] = field(default_factory=dict)
    desc: str = ""
    _limits: dict[str, float] | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """What the runs list shows: ``PdCR · RoI 1 · white_matter``."""
        return f"{self.title}{L.SEP}{self.label}"

    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers.values()]

    def own_limits(self) -> dict[str, float]:
        """``L`` of each of its signed (``"diverging"``) layers by key: the largest ``|value|`` of that array,
        the contrast limits ``(-L, L)`` the layer has on a scale of its own."""
        if self._limits is None:
            _, specs = L.result_layers(self.expl.method, self.expl.map)
            arrays = {"map": self.expl.map, **self.expl.maps}
            self._limits = {rl.key: L.symmetric_limit(arrays[rl.key]) for rl in specs
                            if rl.style == "diverging" and arrays.get(rl.key) is not None}
        return self._limits


class RunStore:
    """Runs in the order they were made (a rerun moves to the end)."""

    def __init__(self, viewer: "napari.Viewer") -> None:
        self.viewer = viewer
        self.records: dict[str, RunRecord] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(list(self.records.values()))

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.records

    def get(self, run_id: str) -> RunRecord | None:
        return self.records.get(run_id)

    def latest(self, method: str | None = None) -> RunRecord | None:
        """The newest run (of ``method``), or None."""
        for rec in reversed(list(self.records.values())):
            if method is None or rec.method == method:
                return rec
        return None

    def label_for(self, run_id: str, method: str, base: str, taken: set[str] = frozenset()) -> str:
        """The label of run ``run_id``: its own when it is shown, else ``base`` made unique among the runs of
        ``method`` (and ``taken``, labels planned in the same Run) with ``#2``, ``#3``, ..."""
        rec = self.records.get(run_id)
        if rec is not None and self.live_layers(rec):
            return rec.label
        used = {r.label for r in self.records.values() if r.method == method and r.run_id != run_id} | set(taken)
        label, k = base, 2
        while label in used:
            label, k = f"{base} #{k}", k + 1
        return label

    def live_layers(self, rec: RunRecord) -> list["Layer"]:
        return [lay for lay in rec.layers.values() if lay in self.viewer.layers]

    def prune(self) -> bool:
        """Forget runs none of whose layers is left in the viewer; True if one was forgotten."""
        gone = [rid for rid, rec in self.records.items() if not self.live_layers(rec)]
        for rid in gone:
            del self.records[rid]
        return bool(gone)

    # ------------------------------------------------------------------------------ showing
    def put_steps(self, run_id: str, title: str, label: str, expl: "Explanation", geom: "SliceGeometry",
                  tuples: list[L.LayerDataTuple], stream: "Layer | None", colorbar_on: Callable[[], bool],
                  desc: str = "") -> list[Callable[[], Any]]:
        """GUI steps that show a finished run: update its layers in place (a rerun, or the layer its map
        streamed into), add the new ones (hidden, shown a turn later, their colorbar a turn after that, so
        creating a layer, its first draw and the colorbar's first draw fall in different event-loop turns);
        the first step hides every other run, the last step records the run."""
        old = self.records.get(run_id)
        rec = RunRecord(run_id, expl.method, title, label, expl, geom,
                        dict(old.layers) if old is not None else {}, desc)
        if stream is not None:
            rec.layers["map"] = stream
        steps: list[Callable[[], Any]] = [lambda: self.hide_others(run_id)]
        keys = [t[1]["metadata"]["seg_explain"]["layer_key"] for t in tuples]
        for i, (key, data) in enumerate(zip(keys, tuples)):
            steps += self._layer_steps(rec, key, data, keys[i + 1:], colorbar_on)

        def record() -> None:
            self.records.pop(run_id, None)
            rec.layers = {k: lay for k, lay in rec.layers.items() if k in keys and lay in self.viewer.layers}
            self.records[run_id] = rec

        return [*steps, record]

    def _layer_steps(self, rec: RunRecord, key: str, data: L.LayerDataTuple, later: list[str],
                     colorbar_on: Callable[[], bool]) -> list[Callable[[], Any]]:
        layer = rec.layers.get(key)
        if layer is not None and layer in self.viewer.layers:
            def update() -> None:
                if not L.update_layer(layer, data):  # another kind or shape: replace it where it was
                    index = self.viewer.layers.index(layer)
                    self.viewer.layers.remove(layer)
                    rec.layers[key] = L.insert_layer(self.viewer, data, index, colorbar=colorbar_on())
                elif not layer.visible:  # a rerun of a run that was hidden: shown again
                    layer.visible = True
            return [update]
        hidden = (data[0], {**data[1], "visible": False}, data[2])

        def add() -> None:
            # below the run's layers that come later in its spec (e.g. under the map that streamed in)
            above = [rec.layers[k] for k in later if k in rec.layers and rec.layers[k] in self.viewer.layers]
            index = self.viewer.layers.index(above[0]) if above else None
            rec.layers[key] = L.insert_layer(self.viewer, hidden, index, colorbar=False)

        def show() -> None:
            lay = rec.layers.get(key)
            if lay is not None and lay in self.viewer.layers:
                lay.visible = True

        def colorbar() -> None:
            lay = rec.layers.get(key)
            if lay is not None and lay in self.viewer.layers and colorbar_on():
                L.show_colorbar(lay)

        return [add, show, colorbar]

    def add_now(self, run_id: str, title: str, label: str, expl: "Explanation", geom: "SliceGeometry",
                tuples: list[L.LayerDataTuple], colorbar_on: Callable[[], bool], desc: str = "") -> RunRecord:
        """Show a run at once (opening a results folder): the same as running :meth:`put_steps`' steps (the
        other runs are hidden)."""
        for step in self.put_steps(run_id, title, label, expl, geom, tuples, None, colorbar_on, desc):
            step()
        return self.records[run_id]

    # ---------------------------------------------------------------------------- visibility
    def is_visible(self, rec: RunRecord) -> bool:
        return any(lay.visible for lay in self.live_layers(rec))

    def set_visible(self, rec: RunRecord, on: bool) -> None:
        for lay in self.live_layers(rec):
            if lay.visible != on:
                lay.visible = on

    def hide_others(self, run_id: str) -> None:
        """Hide the layers of every run but ``run_id`` (they stay in the store)."""
        for rec in self:
            if rec.run_id != run_id:
                self.set_visible(rec, False)

    def show_only(self, run_id: str) -> None:
        """Show run ``run_id``'s layers and hide every other run's."""
        self.hide_others(run_id)
        rec = self.records.get(run_id)
        if rec is not None:
            self.set_visible(rec, True)

    def delete(self, rec: RunRecord) -> None:
        """Remove the run's layers from the viewer and forget it."""
        for lay in self.live_layers(rec):
            self.viewer.layers.remove(lay)
        self.records.pop(rec.run_id, None)
