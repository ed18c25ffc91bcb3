"""npe2 sample data: the shipped MNI152 T1 scan (with the sample model's card), its label and a PNG slice.

Each function returns napari layer data tuples made by this plugin's reader (so the layers carry the same
geometry and ``metadata["seg_explain"]`` as an opened file); none of them touches a viewer.
"""

from __future__ import annotations

from typing import Any

from ..core.sample import SAMPLE_CARD, SAMPLE_LABEL, SAMPLE_VOLUME, sample_path, sample_slices
from .reader import read_layers

__all__ = ["sample_scan", "sample_label", "sample_slice"]

LayerData = tuple[Any, dict[str, Any], str]


def _with_model(layers: list[LayerData]) -> list[LayerData]:
    """Point ``metadata["seg_explain"]["model"]`` at the sample model's card, when it is installed."""
    card = sample_path(SAMPLE_CARD)
    if card.is_file():
        for _data, kwargs, _type in layers:
            kwargs["metadata"]["seg_explain"]["model"] = str(card)
    return layers


def sample_scan() -> list[LayerData]:
    """MNI152 T1 volume (1.5 mm, ``(107, 128, 104)`` axial layer), with the sample model's card path."""
    return _with_model(read_layers(sample_path(SAMPLE_VOLUME)))


def sample_label() -> list[LayerData]:
    """MNI152 white-matter label (a Labels layer with the scan's geometry)."""
    return read_layers(sample_path(SAMPLE_LABEL))


def sample_slice() -> list[LayerData]:
    """One axial slice of the MNI152 T1 as a PNG (the middle of the shipped slices), with the model's card."""
    slices = sample_slices()
    if not slices:
        from ..core.errors import UserError

        raise UserError("the sample PNG slices are missing from this installation; reinstall napari-seg-explain")
    return _with_model(read_layers(slices[len(slices) // 2]))
