"""The runs list and the results panel at work: show or hide a run's layers, show a run's numbers, compare two
runs side by side, delete runs, one colour scale for the runs shown, the canvas colour bars, Save results…
and Open results…; and a fitted view kept fitted when the canvas changes size.

Display rules (docs/napari_plugin.md, "Runs and results"):

* showing a run (a new result, a rerun, a run opened from a folder) hides the other runs' layers
  (:meth:`~.run_store.RunStore.put_steps`); they stay in the runs list, unticked;
* with *same colour scale for the runs shown* (on by default) the signed (``"diverging"``) maps of the runs
  shown share contrast limits ``(-L, L)``, ``L`` the largest ``|value|`` among them, so that two runs compared
  side by side, or ticked together, are read on one scale; the legend and the canvas colour bar give ``±L``;
* *Open results…* brings every run back, shows the last one (its layers only, its numbers) and moves the
  viewer to its explained slice;
* *Save results…* into a folder that is not empty asks first (:attr:`ResultsView.confirm_overwrite`); called
  with a folder (scripts, tests) it refuses a non-empty one unless ``overwrite=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QMessageBox

from ...core.errors import UserError
from .. import layers as L
from .compare import Comparison
from .results_io import folder_entries
from .runner import notify_error, notify_info
from .sections.runs import RunEntry

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from .run_store import RunRecord


class ViewFit:
    """Keeps the view fitted when the canvas changes size (result layers widen the layer controls, the dock is
    added, the window is resized), as long as the user has not zoomed or panned since the view was last fitted
    (napari fits it when the first layer is added and on *Reset view*). A zoomed or panned view is left alone."""

    def __init__(self, viewer: "napari.Viewer") -> None:
        self.viewer = viewer
        # made with layers already open (the usual way: image first, then the dock): their view counts as fitted
        self.fitted: tuple[Any, ...] | None = self._camera() if len(viewer.layers) else None
        viewer.events.reset_view.connect(self._on_reset)
        viewer.canvas.events.size.connect(self._on_size)

    def _camera(self) -> tuple[Any, ...]:
        cam = self.viewer.camera
        return (np.array(cam.center, float), float(cam.zoom), np.array(cam.angles, float))

    def is_fitted(self) -> bool:
        if self.fitted is None:
            return False
        now = self._camera()
        return all(np.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(now, self.fitted))

    def _on_reset(self, *_: Any) -> None:
        self.fitted = self._camera()

    def _on_size(self, *_: Any) -> None:
        if len(self.viewer.layers) and self.is_fitted():
            self.viewer.reset_view()


class ResultsView:
    """Runs the runs section of ``dock`` (the SegExplainWidget) over its controller's run store."""

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.viewer = dock.viewer
        self.store = dock.controller.runs
        self.section = dock.runs_section
        self.comparison: Comparison | None = None
        self.current: str | None = None  # the run whose numbers the panel shows
        #: asked before writing into a non-empty folder: ``(folder, names in it) -> write?`` (tests replace it)
        self.confirm_overwrite: Callable[[Path, list[str]], bool] = self._ask_overwrite
        self.view_fit = ViewFit(self.viewer)
        self.section.shared_scale.toggled.connect(lambda *_: self.apply_scale())
        self.section.runs_list.itemSelectionChanged.connect(self.select_many)

    def refresh(self, current: str | None = None) -> None:
        """The runs list as the store has them (with each run's visibility), and the colour scale of the maps."""
        entries = []
        for rec in self.store:
            tip = f"{rec.desc}\nrun id {rec.run_id}\nlayers: {', '.join(rec.layer_names())}"
            entries.append(RunEntry(rec.run_id, rec.display, tip, self.store.is_visible(rec)))
        self.section.set_runs(entries, current)
        self.apply_scale()
        self.dock.update_state()

    def show_run(self, run_id: str) -> None:
        """A run has just been shown: select it, show its numbers, scroll the results into view."""
        self.refresh(current=run_id)
        self.select(run_id)
        QTimer.singleShot(0, self.scroll_into_view)

    def select(self, run_id: str) -> None:
        rec = self.store.get(run_id)
        if rec is not None:
            self.current = run_id
            title = f"{rec.label} ({rec.desc})" if rec.desc else rec.label
            limit, note = self.scale_of(rec)
            self.section.stats_panel.show_explanation(rec.expl, title, limit, note)

    def select_many(self) -> bool:
        """Several runs selected with values per contrast (Shapley; e.g. one run per fold model on the same RoI):
        the panel shows their mean ± standard deviation per contrast and the rank variance
        (:func:`.shapley_panel.runs_across_models`). Returns whether it did."""
        from .shapley_panel import runs_across_models

        recs = [self.store.get(rid) for rid in self.section.selected_ids()]
        recs = [r for r in recs if r is not None]
        stats = runs_across_models([r.expl for r in recs]) if len(recs) > 1 else None
        if stats is None:
            return False
        models = {str((r.expl.provenance.get("model") or {}).get("sha256") or r.run_id) for r in recs}
        panel = self.section.stats_panel
        panel.legend.hide()
        panel.bars.hide()
        panel._set_rows([("runs selected", str(len(recs))), ("models", str(len(models)))])  # noqa: SLF001
        panel.contrasts.set_stats(stats)
        panel.title.setText("<b>Across the selected runs</b><br>" + ", ".join(r.label for r in recs))
        return True

    def set_visible(self, run_id: str, on: bool) -> None:
        """Tick (show) or untick (hide) a run in the runs list; a run ticked on is shown at its slice."""
        rec = self.store.get(run_id)
        if rec is not None:
            self.store.set_visible(rec, on)
            if on and self.comparison is None:
                self.go_to_slice(rec)

    # ------------------------------------------------------------------------------ colour scale
    def shared_limit(self) -> tuple[float | None, int]:
        """``(L, n)``: the largest ``L`` of the signed maps of the ``n`` runs shown that have one (None, 0 if
        none)."""
        limits = [max(rec.own_limits().values()) for rec in self.store
                  if rec.own_limits() and self.store.is_visible(rec)]
        return (max(limits), len(limits)) if limits else (None, 0)

    def scale_of(self, rec: "RunRecord") -> tuple[float | None, str]:
        """The limit ``rec``'s map is drawn with and whose it is (for the legend)."""
        own = rec.own_limits().get("map")
        if own is None:
            return None, ""
        if not self.section.shared_scale.isChecked():
            return own, "this run's own scale"
        common, n = self.shared_limit()
        if common is not None and n > 1 and self.store.is_visible(rec):
            return common, f"shared by the {n} runs shown"
        return own, ""

    def apply_scale(self) -> None:
        """Contrast limits of every run's signed maps: ``±L`` shared by the runs shown (option on), else each
        map's own; the legend of the run in the panel follows."""
        common, _ = self.shared_limit()
        shared = self.section.shared_scale.isChecked() and common is not None
        for rec in self.store:
            shown = self.store.is_visible(rec)
            for key, own in rec.own_limits().items():
                lay = rec.layers.get(key)
                if lay is None or lay not in self.viewer.layers or L.layer_kind(lay) != "image":
                    continue
                lim = float(common if shared and shown else own)
                if L.seg_meta(lay).get("whole_volume"):
                    lim = L.volume_limit(lim)
                if not np.allclose(lay.contrast_limits, (-lim, lim)):
                    lay.contrast_limits = (-lim, lim)
        rec = self.store.get(self.current) if self.current else None
        if rec is not None:
            limit, note = self.scale_of(rec)
            if limit is not None:
                self.section.stats_panel.set_scale(limit, note)

    # ---------------------------------------------------------------------------------- compare
    def compare(self, run_ids: list[str]) -> None:
        """The two runs side by side in napari's grid, each over its image; no runs: end the comparison."""
        self.end_compare()
        if not run_ids:
            return
        recs = [self.store.get(rid) for rid in run_ids]
        if len(recs) != 2 or any(r is None for r in recs):
            notify_error("Comparing", UserError("select two runs to compare"))
            return
        image = self.dock.controller.layer(recs[0].geom.source_layer)
        image = image if image is not None else self.dock.image_layer()
        if image is None:
            notify_error("Comparing", UserError("the image the runs were made on is no longer open"))
            return
        self.comparison = Comparison(self.viewer, self.store, image, recs)
        self.comparison.start()
        self.section.set_comparing(True)
        self.refresh()

    def end_compare(self) -> None:
        if self.comparison is not None:
            self.comparison.end()
            self.comparison = None
            self.section.set_comparing(False)
            self.refresh()

    def delete(self, run_ids: list[str]) -> None:
        """Remove the runs' layers from the viewer (and forget the runs)."""
        if self.comparison is not None and any(self.comparison.shows(rid) for rid in run_ids):
            self.end_compare()
        for rid in run_ids:
            rec = self.store.get(rid)
            if rec is not None:
                self.store.delete(rec)
        if not len(self.store):
            self.section.stats_panel.clear()
            self.current = None
        self.refresh()

    def toggle_colorbar(self, on: bool) -> None:
        for layer in self.viewer.layers:
            if L.seg_meta(layer).get("colorbar") and getattr(layer, "colorbar", None) is not None:
                layer.colorbar.visible = on

    def scroll_into_view(self) -> None:
        """The whole section (panel, runs list, Save/Open) when it fits, else the results panel."""
        scroll = self.dock.scroll_area
        body = scroll.widget()
        if body is not None and body.layout() is not None:
            body.layout().activate()  # the panel has just grown: lay it out before scrolling to it
        fits = self.section.height() + 16 <= scroll.viewport().height()
        scroll.ensureWidgetVisible(self.section if fits else self.section.stats_panel, 0, 8)

    def go_to_slice(self, rec: "RunRecord") -> None:
        """Move the viewer to the slice ``rec`` explained (a run of a volume)."""
        z = rec.geom.slice_index
        layer = rec.layers.get("map") or next(iter(self.store.live_layers(rec)), None)
        if z is None or layer is None or layer not in self.viewer.layers or layer.ndim < 3:
            return
        centre = [float(z), *((s - 1) / 2 for s in rec.geom.shape[1:])]
        world = np.asarray(layer.data_to_world(centre), float)
        axis = self.viewer.dims.ndim - layer.ndim
        if axis >= 0:
            self.viewer.dims.set_point(axis, float(world[0]))

    # ----------------------------------------------------------------------------- save / open
    def _ask_overwrite(self, folder: Path, entries: list[str]) -> bool:
        listed = "results.json" in entries
        shown = ", ".join(entries[:5]) + (f", … ({len(entries)} in all)" if len(entries) > 5 else "")
        text = (f"{folder} is not empty ({shown}).\n\n"
                + ("Its results.json is replaced; the files it lists that this save does not write again are "
                   "removed. Other files are left alone." if listed else
                   "Files of the same names are replaced; other files are left alone.")
                + "\n\nSave the results into this folder?")
        answer = QMessageBox.question(self.dock, "Save results", text,
                                      QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Cancel,
                                      QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Save

    def save(self, folder: str | Path | None = None, overwrite: bool = False) -> Path | None:
        """Write every run into ``folder`` (chosen in a dialog when None). A non-empty folder: the dialog's
        choice is confirmed (:attr:`confirm_overwrite`); a folder given here needs ``overwrite=True``."""
        asked = folder is None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dock, "Save results into folder")
            if not folder:
                return None
        folder = Path(folder)
        entries = folder_entries(folder) if folder.is_dir() else []
        if entries and not overwrite:
            if not asked:
                notify_error("Saving results", UserError(
                    f"{folder} is not empty: choose an empty folder (or pass overwrite=True to replace the "
                    "results in it)"))
                return None
            if not self.confirm_overwrite(folder, entries):
                return None
        try:
            path = self.dock.controller.save(folder)
        except Exception as exc:  # noqa: BLE001
            notify_error("Saving results", exc)
            return None
        n = len(self.store)
        notify_info(f"Results saved: {n} run{'' if n == 1 else 's'}\nin {folder}")
        return path

    def open(self, folder: str | Path | None = None) -> list["Layer"]:
        """Read a results folder back: every run in the runs list, the last one shown (its layers only, its
        numbers, its slice), the others hidden; colour bars as the checkbox says."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dock, "Open results folder")
            if not folder:
                return []
        self.end_compare()
        try:
            added, records = self.dock.controller.open(folder, self.dock.colorbar_on)
        except Exception as exc:  # noqa: BLE001
            notify_error("Opening results", exc)
            return []
        last: RunRecord | None = records[-1] if records else None
        if last is not None:
            self.store.show_only(last.run_id)
            self.go_to_slice(last)
        self.toggle_colorbar(self.dock.colorbar_on())
        self.refresh(current=last.run_id if last else None)
        if last is not None:
            self.select(last.run_id)
            QTimer.singleShot(0, self.scroll_into_view)
        n = len(records)
        notify_info(f"Results opened: {n} run{'' if n == 1 else 's'}\nfrom {folder}")
        return added
