"""Multi-contrast input from several napari layers: a model with several input channels (T1, T1c, T2, FLAIR...)
is fed co-registered image layers of the same shape, one per contrast, stacked as channels.

:class:`ContrastList` (in the image section, shown when the loaded model takes more than one channel) lists the
image layers of the chosen image's shape, and each channel of a 4-D layer ``(contrasts, slices, rows, cols)``
whose last three axes match it (named ``"layer [i]"``). The ticked ones, top to bottom, are the channels. When
the model names its channels (an nnU-Net's dataset.json, or a card's ``channels: [T1, T1c, T2, FLAIR]``), the
list is put in that order and the layers whose name holds a channel name as a word (``T2``, ``sub-01_FLAIR``,
``scan [T1c]``) are ticked; otherwise the order is the user's (drag to reorder).

:func:`stacked_plane` is what the controller calls in place of :func:`.inputs.plane_of`: the explained plane
``(C, H, W)`` and the channel names (the layers' names), or the image's own plane when no contrast is ticked;
:func:`stacked_volume` the same for 3-D models and models with their own preprocessing (nnU-Net, MONAI bundles),
which take the whole volume.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem

from ...core.errors import UserError
from .. import layers as L
from . import inputs

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from ...core.models import SegmentationModel

_CHANNEL = re.compile(r"^(?P<layer>.*) \[(?P<index>\d+)\]$")
_WORDS = re.compile(r"[^0-9A-Za-z]+")


def model_channels(model: "SegmentationModel | None") -> int:
    """The number of input channels the model takes (its card's ``in_channels``; 1 when unknown)."""
    if model is None:
        return 1
    names = channel_names(model)
    return int(model.card.in_channels or len(names) or 1)


def channel_names(model: "SegmentationModel | None") -> tuple[str, ...]:
    """The model's channel names (an nnU-Net's dataset.json, a bundle's metadata, a card's ``channels``), or ``()``."""
    return tuple(str(n) for n in getattr(model, "channel_names", ()) or ()) if model is not None else ()


def matches(layer_name: str, channel: str) -> bool:
    """``channel`` is the layer's name or one of its words (``T1`` matches ``sub-01_T1`` but not ``T1c``)."""
    words = [w.lower() for w in _WORDS.split(layer_name) if w]
    return layer_name.lower() == channel.lower() or channel.lower() in words


def candidates(viewer: "napari.Viewer", image: "Image | None", skip: set[str] = frozenset()) -> list[str]:
    """Names of the inputs that can be a contrast of ``image``: image layers of its shape (itself first), and
    ``"layer [i]"`` for each channel of a 4-D layer whose last three axes are its shape."""
    from napari.layers import Image

    if image is None or getattr(image, "rgb", False):
        return []
    shape = tuple(image.data.shape)
    out = [image.name]
    for lay in viewer.layers:
        if (not isinstance(lay, Image) or lay is image or lay.name in skip or getattr(lay, "rgb", False)
                or (L.is_result_layer(lay) and L.result_kind(lay) != "segmentation")):
            continue
        if tuple(lay.data.shape) == shape:
            out.append(lay.name)
        elif lay.data.ndim == len(shape) + 1 == 4 and tuple(lay.data.shape[1:]) == shape:
            out += [f"{lay.name} [{i}]" for i in range(lay.data.shape[0])]
    return out


def _source(viewer: "napari.Viewer", name: str) -> tuple[Any, int | None]:
    """The layer an entry reads and, for a 4-D layer's channel, the channel index."""
    if name in viewer.layers:
        return viewer.layers[name], None
    m = _CHANNEL.match(name)
    if m and m["layer"] in viewer.layers:
        return viewer.layers[m["layer"]], int(m["index"])
    raise UserError(f"the contrast layer {name!r} no longer exists: tick the contrasts again")


def _chosen_arrays(viewer: "napari.Viewer", image: "Image", chosen: tuple[str, ...] | list[str],
                   model: "SegmentationModel | None") -> list[np.ndarray]:
    """The ticked contrasts' arrays (each of ``image``'s shape), checked against the model's channel count."""
    want = model_channels(model)
    if len(chosen) != want:
        raise UserError(f"the model takes {want} contrasts ({', '.join(channel_names(model)) or 'its channels'}): "
                        f"tick {want} layers under 'Contrasts' (ticked: {len(chosen)})")
    shape = tuple(image.data.shape)
    out = []
    for name in chosen:
        layer, channel = _source(viewer, name)
        data = layer.data if channel is None else layer.data[channel]
        if tuple(data.shape) != shape:
            raise UserError(f"the contrast {name!r} has shape {tuple(data.shape)}, the image {image.name!r} "
                            f"{shape}: pick co-registered layers of one shape")
        out.append(data)
    return out


def stacked_volume(viewer: "napari.Viewer", image: "Image", chosen: tuple[str, ...] | list[str],
                   model: "SegmentationModel | None") -> tuple[np.ndarray, list[str]]:
    """3-D models and models with their own preprocessing: the ticked contrasts as the core's
    ``(C, rows, cols, slices)`` float32 volume (display order, as :func:`.inputs.volume_of`) and their names;
    without any, ``image``'s own volume and ``[]``."""
    if not chosen:
        return inputs.volume_of(image), []
    inputs.volume_of(image)  # the same checks (a volume, not RGB)
    arrays = _chosen_arrays(viewer, image, chosen, model)
    return np.stack([np.moveaxis(np.asarray(a, dtype=np.float32), 0, -1) for a in arrays]), [str(n) for n in chosen]


def stacked_pool(pool: Any, viewer: "napari.Viewer", image: "Image", chosen: tuple[str, ...] | list[str],
                 model: "SegmentationModel | None") -> Any:
    """A 2-D run's :class:`.pools.PoolSpec` for the ticked contrasts: the other slices of the volume are taken from
    every contrast (stacked as channels); the image itself needs nothing; other layers or a folder hold one
    contrast per image, which does not fit: a UserError says which pool to choose."""
    if not chosen or pool is None or pool.kind == "self":
        return pool
    if pool.kind == "volume":
        pool.arrays = _chosen_arrays(viewer, image, chosen, model)
        pool.description += f", contrasts {', '.join(chosen)}"
        return pool
    raise UserError("with several contrasts the perturbation pool must hold every contrast: set Pool to the other "
                    "slices of this volume, or the image itself")


def stacked_plane(viewer: "napari.Viewer", image: "Image", z: int | None, chosen: tuple[str, ...] | list[str],
                  model: "SegmentationModel | None") -> tuple[np.ndarray, list[str]]:
    """The explained plane ``(C, H, W)`` float32 of the ticked contrasts (in the list's order) and their names;
    without any, ``image``'s own plane and ``[]``. Raises a UserError when the count is not the model's."""
    if not chosen:
        return inputs.plane_of(image, z), []
    planes = [np.asarray(a[z] if z is not None and a.ndim == 3 else a, dtype=np.float32)
              for a in _chosen_arrays(viewer, image, chosen, model)]
    return np.stack(planes), [str(n) for n in chosen]


class ContrastList(QListWidget):
    """Checkable, reorderable list of the possible contrasts (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setToolTip("the model takes several contrasts: tick one co-registered layer per contrast, in the "
                        "model's channel order (top = channel 0; drag to reorder)")
        self.setMaximumHeight(110)
        self._key: tuple[Any, ...] = ()

    def chosen(self) -> tuple[str, ...]:
        """The ticked entries, top to bottom (``()`` while hidden: a one-channel model)."""
        if self.isHidden():
            return ()
        return tuple(self.item(i).text() for i in range(self.count())
                     if self.item(i).checkState() == Qt.CheckState.Checked)

    def refresh(self, viewer: "napari.Viewer", image: "Image | None", model: "SegmentationModel | None",
                skip: set[str] = frozenset()) -> None:
        """Show the list for a multi-channel model and refill it when the candidates change (ticks kept)."""
        n = model_channels(model)
        if n <= 1:  # the usual case: nothing to list (cheap: this runs on every slice step)
            self._key = ()
            self.clear()
            self.hide()
            return
        names = channel_names(model)
        cands = candidates(viewer, image, skip)
        key = (n, names, tuple(cands))
        self.setVisible(n > 1)
        if key == self._key:
            return
        self._key = key
        ticked = set(self.chosen()) if self.count() else None
        if names:  # the model's order: matching layers first, in channel order
            ranked = [next((c for c in cands if matches(c, ch)), None) for ch in names]
            order = [c for c in ranked if c] + [c for c in cands if c not in ranked]
        else:
            order = cands
        auto = {c for c in ranked if c} if names else (set(cands) if len(cands) == n else set())
        self.clear()
        for name in order:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsDragEnabled)
            on = (name in ticked) if ticked else (name in auto)
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.addItem(item)

    def set_chosen(self, names: list[str]) -> None:
        """Tick exactly ``names``, in that order at the top (scripts, tests)."""
        items = {self.item(i).text(): self.item(i) for i in range(self.count())}
        missing = [n for n in names if n not in items]
        if missing:
            raise UserError(f"no contrast layer named {', '.join(missing)}")
        rest = [t for t in items if t not in names]
        self.clear()
        for name in [*names, *rest]:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsDragEnabled)
            item.setCheckState(Qt.CheckState.Checked if name in names else Qt.CheckState.Unchecked)
            self.addItem(item)
