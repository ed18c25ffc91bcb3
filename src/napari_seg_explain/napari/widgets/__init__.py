"""Dock widgets of napari-seg-explain (manifest: ``napari_seg_explain.napari.widgets:SegExplainWidget``)."""

from .dock import SegExplainWidget

__all__ = ["SegExplainWidget"]
