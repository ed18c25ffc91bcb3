"""Dock widgets of napari-seg-explain (manifest: ``napari_seg_explain.napari.widgets:SegExplainWidget``)."""

from .main_widget import SegExplainWidget

__all__ = ["SegExplainWidget"]
