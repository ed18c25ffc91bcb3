"""The runs list and the results panel at work: show or hide a run's layers, show a run's numbers, compare two
runs side by side, delete runs, the canvas colour bars, Save results… and Open results…."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from ...core.errors import UserError
from .. import layers as L
from .compare import Comparison
from .runner import notify_error
from .sections.runs import RunEntry

if TYPE_CHECKING:
    from napari.layers import Layer

    from .run_store import RunRecord


class ResultsView:
    """Runs the runs section of ``dock`` (the SegExplainWidget) over its controller's run store."""

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.viewer = dock.viewer
        self.store = dock.controller.runs
        self.section = dock.runs_section
        self.comparison: Comparison | None = None

    def refresh(self, current: str | None = None) -> None:
        """The runs list as the store has them (with each run's visibility)."""
        entries = []
        for rec in self.store:
            tip = f"{rec.desc}\nrun id {rec.run_id}\nlayers: {', '.join(rec.layer_names())}"
            entries.append(RunEntry(rec.run_id, rec.display, tip, self.store.is_visible(rec)))
        self.section.set_runs(entries, current)
        self.dock.update_state()

    def show_run(self, run_id: str) -> None:
        """A run has just been shown: select it, show its numbers, scroll the results into view."""
        self.refresh(current=run_id)
        self.select(run_id)
        QTimer.singleShot(0, self.scroll_into_view)

    def select(self, run_id: str) -> None:
        rec = self.store.get(run_id)
        if rec is not None:
            title = f"{rec.label} ({rec.desc})" if rec.desc else rec.label
            self.section.stats_panel.show_explanation(rec.expl, title)

    def set_visible(self, run_id: str, on: bool) -> None:
        rec = self.store.get(run_id)
        if rec is not None:
            self.store.set_visible(rec, on)

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

    # ----------------------------------------------------------------------------- save / open
    def save(self, folder: str | Path | None = None) -> Path | None:
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dock, "Save results into folder")
            if not folder:
                return None
        try:
            path = self.dock.controller.save(folder)
        except Exception as exc:  # noqa: BLE001
            notify_error("Saving results", exc)
            return None
        from napari.utils.notifications import show_info

        show_info(f"Results saved to {Path(folder)} ({len(self.store)} runs)")
        return path

    def open(self, folder: str | Path | None = None) -> list["Layer"]:
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
        self.refresh(current=last.run_id if last else None)
        if last is not None:
            self.select(last.run_id)
        return added
