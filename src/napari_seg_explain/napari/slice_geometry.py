"""Where a 2-D result goes in the viewer: the source layer's shape, the explained slice and its whole transform.

Layer contract (shared with the reader): a volume layer is ``(slices, rows, cols)`` and napari slices it along
axis 0, so the explained 2-D plane of a volume is ``layer.data[z]``; 2-D layers are ``(rows, cols)``; RGB
layers ``(rows, cols, 3)``. A map of one slice is placed at ``z`` of a volume-shaped array (NaN, or 0 for
masks, elsewhere) and carries the source layer's ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``
(its whole data-to-world transform), ``axis_labels`` and ``units``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Layer

TRANSFORM_KEYS = ("scale", "translate", "rotate", "shear", "affine")


def _matrix(m: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(m, dtype=float))


def layer_transform(layer: Any) -> dict[str, Any]:
    """A layer's whole data-to-world transform as layer keyword arguments (``scale``, ``translate``,
    ``rotate``, ``shear``, ``affine``): a layer made with them maps every data position where ``layer`` does."""
    return {"scale": tuple(float(s) for s in layer.scale), "translate": tuple(float(t) for t in layer.translate),
            "rotate": np.array(layer.rotate, dtype=float), "shear": tuple(float(v) for v in np.ravel(layer.shear)),
            "affine": np.array(layer.affine.affine_matrix, dtype=float)}


def set_transform(layer: Any, transform: dict[str, Any]) -> None:
    """Give ``layer`` the transform in ``transform`` (keys of :data:`TRANSFORM_KEYS`; missing keys are left)."""
    for key in TRANSFORM_KEYS:
        if transform.get(key) is not None:
            setattr(layer, key, transform[key])


@dataclass(frozen=True)
class SliceGeometry:
    """Where a 2-D result goes: the source layer's spatial shape, the explained slice and its transform.

    ``shape``: ``(slices, rows, cols)`` or ``(rows, cols)`` (an RGB layer's colour axis excluded);
    ``slice_index``: the explained plane ``z`` of a volume (``None`` for 2-D layers).
    """

    shape: tuple[int, ...]
    slice_index: int | None = None
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    axis_labels: tuple[str, ...] | None = None
    units: tuple[str, ...] | None = None
    source_layer: str = ""
    source_metadata: dict[str, Any] = field(default_factory=dict)
    # the rest of the source layer's data-to-world transform (napari's rotate matrix, shear values and
    # extra affine matrix); None: napari's defaults (identity)
    rotate: tuple[tuple[float, ...], ...] | None = None
    shear: tuple[float, ...] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None
    # a 3-D model's result: the whole volume, given in the core's display order (rows, cols, slices) and
    # placed into (slices, rows, cols); ``slice_index`` is then the slice the viewer is brought to (the RoI's)
    whole: bool = False

    def __post_init__(self) -> None:
        if len(self.shape) not in (2, 3):
            raise ValueError(f"a result layer is 2-D or a (slices, rows, cols) volume, got shape {self.shape}")
        if len(self.shape) == 3:
            if self.slice_index is None or not 0 <= int(self.slice_index) < self.shape[0]:
                raise ValueError(f"slice_index {self.slice_index} is not a slice of a volume of shape {self.shape}")
        elif self.slice_index not in (None, 0):
            raise ValueError(f"slice_index {self.slice_index} given for a 2-D layer")
        if self.whole and len(self.shape) != 3:
            raise ValueError("a whole-volume result needs a (slices, rows, cols) layer")

    @classmethod
    def from_layer(cls, layer: "Layer", slice_index: int | None = None, whole: bool = False) -> "SliceGeometry":
        """Geometry of an image (or labels) layer; ``slice_index`` is required for volume layers; ``whole``: a
        3-D model's whole-volume result."""
        shape = tuple(int(s) for s in layer.data.shape)
        if getattr(layer, "rgb", False):
            shape = shape[:-1]
        ndim = len(shape)
        labels = tuple(str(a) for a in getattr(layer, "axis_labels", ())) or None
        units = tuple(str(u) for u in getattr(layer, "units", ())) or None
        meta = layer.metadata.get("seg_explain") if isinstance(layer.metadata, dict) else None
        tf = layer_transform(layer)
        return cls(shape=shape, slice_index=int(slice_index) if ndim == 3 else None,
                   scale=tf["scale"], translate=tf["translate"], axis_labels=labels, units=units,
                   source_layer=layer.name, source_metadata=dict(meta) if isinstance(meta, dict) else {},
                   rotate=_matrix(tf["rotate"]), shear=tf["shear"], affine=_matrix(tf["affine"]), whole=bool(whole))

    @staticmethod
    def plane_shape_of(layer: "Layer") -> tuple[int, int]:
        """``(rows, cols)`` of a layer's 2-D plane (an RGB layer's colour axis excluded)."""
        shape = layer.data.shape[-3:-1] if getattr(layer, "rgb", False) else layer.data.shape[-2:]
        return (int(shape[0]), int(shape[1]))

    @property
    def is_volume(self) -> bool:
        return len(self.shape) == 3

    @property
    def plane_shape(self) -> tuple[int, int]:
        return (int(self.shape[-2]), int(self.shape[-1]))

    @property
    def result_shape(self) -> tuple[int, ...]:
        """The shape of the results :meth:`place` takes: the plane, or the volume in display order
        ``(rows, cols, slices)`` for a whole-volume result."""
        return (*self.shape[1:], self.shape[0]) if self.whole else self.plane_shape

    def place(self, plane: np.ndarray, fill: float | int = np.nan, dtype: Any = None) -> np.ndarray:
        """The 2-D ``plane`` in a layer-shaped array (``fill`` elsewhere); a copy for 2-D layers."""
        plane = np.asarray(plane)
        if self.whole:
            if plane.shape != self.result_shape:
                raise ValueError(f"a result of shape {plane.shape} does not fit the volume {self.result_shape} "
                                 "(rows, cols, slices)")
            return np.array(np.moveaxis(plane, -1, 0), dtype=dtype or plane.dtype, copy=True)
        if plane.shape != self.plane_shape:
            raise ValueError(f"a result of shape {plane.shape} does not fit the layer's plane {self.plane_shape}")
        dtype = dtype or plane.dtype
        if not self.is_volume:
            return np.array(plane, dtype=dtype, copy=True)
        out = np.full(self.shape, fill, dtype=dtype)
        out[self.slice_index] = plane
        return out

    def layer_kwargs(self) -> dict[str, Any]:
        """``scale``, ``translate``, ``rotate``, ``shear``, ``affine``, ``axis_labels``, ``units`` (those known)."""
        kw: dict[str, Any] = {}
        for key in TRANSFORM_KEYS:
            value = getattr(self, key)
            if value is not None:
                kw[key] = np.array(value, dtype=float) if key in ("rotate", "affine") else value
        if self.axis_labels is not None:
            kw["axis_labels"] = self.axis_labels
        if self.units is not None:
            kw["units"] = self.units
        return kw

    def to_dict(self) -> dict[str, Any]:
        from ..core.results import _jsonable

        return _jsonable({"shape": list(self.shape), "slice_index": self.slice_index, "scale": self.scale,
                          "translate": self.translate, "rotate": self.rotate, "shear": self.shear,
                          "affine": self.affine, "axis_labels": self.axis_labels, "units": self.units,
                          "source_layer": self.source_layer, "source_metadata": self.source_metadata,
                          "whole": self.whole})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SliceGeometry":
        tup = lambda v: tuple(v) if v is not None else None  # noqa: E731
        mat = lambda v: _matrix(v) if v is not None else None  # noqa: E731
        return cls(shape=tuple(int(s) for s in d["shape"]), slice_index=d.get("slice_index"),
                   scale=tup(d.get("scale")), translate=tup(d.get("translate")), axis_labels=tup(d.get("axis_labels")),
                   units=tup(d.get("units")), source_layer=d.get("source_layer", ""),
                   source_metadata=dict(d.get("source_metadata") or {}), rotate=mat(d.get("rotate")),
                   shear=tup(d.get("shear")), affine=mat(d.get("affine")), whole=bool(d.get("whole", False)))
