"""``Explanation`` -> napari layer data tuples, and adding/updating result layers in a viewer.

Layer contract (shared with the reader): a volume layer is ``(slices, rows, cols)`` and napari slices it
along axis 0, so the explained 2-D plane of a volume is ``layer.data[z]``; 2-D layers are ``(rows, cols)``;
RGB layers ``(rows, cols, 3)``. A map of one slice is placed at ``z`` of a volume-shaped array (NaN, or 0
for masks, elsewhere) and carries the source layer's ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``
(its whole data-to-world transform), ``axis_labels`` and ``units``.

Colour conventions (DESIGN.md): the PdCR map is shown with a diverging colormap, red = negative ATE (the
block supports the RoI segmentation), blue = positive (it works against it), transparent at exactly 0
(irrelevant) and at NaN (not evaluated: the RoI and the blocks touching it), with symmetric contrast limits
``(-L, L)``, ``L = max |ATE|``. MiSuRe's saliency uses inferno, transparent at 0; its sufficient region is a
Labels layer.

Every result layer has ``metadata = {"seg_explain": <source layer's seg_explain metadata> | {"result": ...,
"source_layer": ..., "slice_index": ...}, "explanation": Explanation.metadata()}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer
    from napari.utils.colormaps import Colormap

    from ..core.results import Explanation

LayerDataTuple = tuple[Any, dict[str, Any], str]

PDCR_MAP = "PdCR map"
PDCR_ROI = "PdCR RoI"
MISURE_SALIENCY = "MiSuRe saliency"
MISURE_REGION = "MiSuRe sufficient region"
MISURE_ROI = "MiSuRe RoI"
RESULT_NAMES = (PDCR_MAP, PDCR_ROI, MISURE_SALIENCY, MISURE_REGION, MISURE_ROI)
STREAM_SUFFIX = " (running)"  # the PdCR map while it streams in
PARTIAL_SUFFIX = " (partial)"  # the PdCR map kept on Cancel
ROI_COLOR = "lime"
TRANSFORM_KEYS = ("scale", "translate", "rotate", "shear", "affine")


def result_kind(layer: Any) -> str | None:
    """``metadata['seg_explain']['result']`` of a layer the plugin made (``"pdcr_map"``, ``"segmentation"``,
    ...), else None."""
    meta = getattr(layer, "metadata", None)
    seg = meta.get("seg_explain") if isinstance(meta, dict) else None
    kind = seg.get("result") if isinstance(seg, dict) else None
    return str(kind) if kind else None


def is_result_layer(layer: Any) -> bool:
    """True for the plugin's own output layers: ``metadata['seg_explain']['result']`` is set, or the layer has
    a result layer's name (also with the ' (running)' / ' (partial)' suffix)."""
    if result_kind(layer) is not None:
        return True
    name = str(getattr(layer, "name", ""))
    for suffix in (STREAM_SUFFIX, PARTIAL_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name in RESULT_NAMES


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

# the PdCR colormap: colour stops at fractions of the contrast range (-L .. +L). The centre band is fully
# transparent (its half-width is small enough that any |ATE| above 0.2 % of L is coloured); weak effects
# are pale and see-through, so the scan stays readable, strong ones saturated and opaque.
_CENTRE = 0.001
PDCR_COLORS = {
    "strong_support": (0.70, 0.02, 0.10, 1.0),   # -L: dark red, opaque
    "weak_support": (0.98, 0.45, 0.35, 0.40),    # just below 0: light red, see-through
    "weak_against": (0.40, 0.60, 1.00, 0.40),    # just above 0: light blue, see-through
    "strong_against": (0.05, 0.20, 0.80, 1.0),   # +L: dark blue, opaque
}


@lru_cache(maxsize=None)
def pdcr_colormap() -> "Colormap":
    """Diverging colormap for ATE maps: red (negative, supports) -> transparent (0) -> blue (positive)."""
    from napari.utils.colormaps import Colormap

    c = PDCR_COLORS
    clear = (1.0, 1.0, 1.0, 0.0)
    return Colormap(
        colors=[c["strong_support"], c["weak_support"], clear, clear, c["weak_against"], c["strong_against"]],
        controls=[0.0, 0.5 - _CENTRE, 0.5 - _CENTRE / 2, 0.5 + _CENTRE / 2, 0.5 + _CENTRE, 1.0],
        name="pdcr_diverging", display_name="PdCR (red supports, blue works against)",
    )


@lru_cache(maxsize=None)
def saliency_colormap() -> "Colormap":
    """Inferno with alpha 0 at the bottom: pixels of zero saliency are transparent."""
    from napari.utils.colormaps import Colormap
    from napari.utils.colormaps.colormap_utils import ensure_colormap

    base = ensure_colormap("inferno")
    ramp = np.linspace(0.0, 1.0, 63)
    colors = np.vstack([[0.0, 0.0, 0.0, 0.0], base.map(ramp)])
    controls = np.concatenate([[0.0], 0.002 + ramp * 0.998])
    return Colormap(colors=colors, controls=controls, name="inferno_transparent_zero",
                    display_name="inferno (transparent at 0)")


def symmetric_limit(amap: np.ndarray) -> float:
    """``L`` of the symmetric contrast limits ``(-L, L)``: the largest finite ``|value|`` (1 if all 0/NaN)."""
    from ..core.figure import pdcr_limits

    return pdcr_limits(np.asarray(amap, dtype=np.float32))


# ------------------------------------------------------------------------------------- geometry
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

    def __post_init__(self) -> None:
        if len(self.shape) not in (2, 3):
            raise ValueError(f"a result layer is 2-D or a (slices, rows, cols) volume, got shape {self.shape}")
        if len(self.shape) == 3:
            if self.slice_index is None or not 0 <= int(self.slice_index) < self.shape[0]:
                raise ValueError(f"slice_index {self.slice_index} is not a slice of a volume of shape {self.shape}")
        elif self.slice_index not in (None, 0):
            raise ValueError(f"slice_index {self.slice_index} given for a 2-D layer")

    @classmethod
    def from_layer(cls, layer: "Layer", slice_index: int | None = None) -> "SliceGeometry":
        """Geometry of an image (or labels) layer; ``slice_index`` is required for volume layers."""
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
                   rotate=_matrix(tf["rotate"]), shear=tf["shear"], affine=_matrix(tf["affine"]))

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

    def place(self, plane: np.ndarray, fill: float | int = np.nan, dtype: Any = None) -> np.ndarray:
        """The 2-D ``plane`` in a layer-shaped array (``fill`` elsewhere); a copy for 2-D layers."""
        plane = np.asarray(plane)
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
                          "source_layer": self.source_layer, "source_metadata": self.source_metadata})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SliceGeometry":
        tup = lambda v: tuple(v) if v is not None else None  # noqa: E731
        mat = lambda v: _matrix(v) if v is not None else None  # noqa: E731
        return cls(shape=tuple(int(s) for s in d["shape"]), slice_index=d.get("slice_index"),
                   scale=tup(d.get("scale")), translate=tup(d.get("translate")), axis_labels=tup(d.get("axis_labels")),
                   units=tup(d.get("units")), source_layer=d.get("source_layer", ""),
                   source_metadata=dict(d.get("source_metadata") or {}), rotate=mat(d.get("rotate")),
                   shear=tup(d.get("shear")), affine=mat(d.get("affine")))


def result_metadata(geom: SliceGeometry, result: str, explanation: dict[str, Any] | None) -> dict[str, Any]:
    """``layer.metadata`` of a result layer: the source's ``seg_explain`` entry plus what this layer is."""
    seg = dict(geom.source_metadata) | {"result": result, "source_layer": geom.source_layer,
                                        "slice_index": geom.slice_index}
    out: dict[str, Any] = {"seg_explain": seg}
    if explanation is not None:
        out["explanation"] = explanation
    return out


# ------------------------------------------------------------------------------------ RoI outline
def roi_outline(roi: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Outline of a boolean ``(H, W)`` mask as Shapes data: ``[(vertices (N, 2) row/col, shape_type)]``.

    A filled box becomes one ``rectangle`` on the pixel edges (``y0 - 0.5 .. y1 - 0.5``); any other mask
    becomes one ``polygon`` per contour (scikit-image ``find_contours`` at 0.5).
    """
    roi = np.asarray(roi, bool)
    if not roi.any():
        return []
    rows, cols = np.nonzero(roi)
    y0, x0, y1, x1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    if roi[y0:y1, x0:x1].all() and roi.sum() == (y1 - y0) * (x1 - x0):
        corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float) - 0.5
        return [(corners, "rectangle")]
    from skimage.measure import find_contours

    padded = np.pad(roi.astype(np.uint8), 1)
    out = []
    for contour in find_contours(padded, 0.5):
        if len(contour) >= 3:
            out.append((contour[:-1] - 1.0 if np.allclose(contour[0], contour[-1]) else contour - 1.0, "polygon"))
    return out


def roi_layer_data(roi: np.ndarray, geom: SliceGeometry, name: str,
                   explanation: dict[str, Any] | None = None) -> LayerDataTuple:
    """The RoI outline as a Shapes layer tuple (lime edge, no face) at the explained slice."""
    shapes = roi_outline(roi)
    data = []
    for verts, _ in shapes:
        if geom.is_volume:
            verts = np.column_stack([np.full(len(verts), float(geom.slice_index)), verts])
        data.append(verts)
    kwargs = {"name": name, "shape_type": [t for _, t in shapes], "edge_color": ROI_COLOR,
              "face_color": "transparent", "edge_width": max(0.5, min(geom.plane_shape) / 200),
              "opacity": 1.0, "metadata": result_metadata(geom, "roi", explanation),
              "ndim": len(geom.shape)} | geom.layer_kwargs()
    return data, kwargs, "shapes"


# --------------------------------------------------------------------------------- result layers
def pdcr_map_layer_data(amap: np.ndarray, geom: SliceGeometry, name: str = PDCR_MAP,
                        explanation: dict[str, Any] | None = None) -> LayerDataTuple:
    """The PdCR ATE map as an Image layer tuple: diverging colormap, symmetric limits, over the scan."""
    amap = np.asarray(amap, dtype=np.float32)
    lim = symmetric_limit(amap)
    kwargs = {"name": name, "colormap": pdcr_colormap(), "contrast_limits": (-lim, lim),
              "blending": "translucent", "opacity": 0.85, "interpolation2d": "nearest",
              "metadata": result_metadata(geom, "pdcr_map", explanation)} | geom.layer_kwargs()
    return geom.place(amap, np.nan, np.float32), kwargs, "image"


def explanation_layer_data(expl: "Explanation", geom: SliceGeometry) -> list[LayerDataTuple]:
    """All result layers of one explanation (PdCR: map + RoI; MiSuRe: saliency + sufficient region [+ RoI])."""
    meta = expl.metadata()
    if expl.method == "pdcr":
        out = [pdcr_map_layer_data(expl.map, geom, PDCR_MAP, meta)]
        if expl.roi is not None:
            out.append(roi_layer_data(expl.roi, geom, PDCR_ROI, meta))
        return out
    if expl.method == "misure":
        sal = np.asarray(expl.map, dtype=np.float32)
        out = [(geom.place(sal, 0.0, np.float32),
                {"name": MISURE_SALIENCY, "colormap": saliency_colormap(), "contrast_limits": (0.0, 1.0),
                 "blending": "translucent", "opacity": 0.85, "interpolation2d": "nearest",
                 "metadata": result_metadata(geom, "misure_saliency", meta)} | geom.layer_kwargs(), "image")]
        region = expl.maps.get("sufficient_region")
        if region is not None:
            out.insert(0, (geom.place(np.asarray(region) != 0, 0, np.uint8),
                           {"name": MISURE_REGION, "opacity": 0.35, "blending": "translucent",
                            "colormap": {0: "transparent", 1: "cyan", None: "transparent"},
                            "metadata": result_metadata(geom, "misure_sufficient_region", meta)}
                           | geom.layer_kwargs(), "labels"))
        if expl.roi is not None:
            out.append(roi_layer_data(expl.roi, geom, MISURE_ROI, meta))
        return out
    raise ValueError(f"no layers defined for explanation method {expl.method!r}")


def segmentation_layer_data(labels: np.ndarray, geom: SliceGeometry, name: str,
                            model_info: dict[str, Any] | None = None) -> LayerDataTuple:
    """A segmentation as a Labels layer tuple (volume-shaped when ``labels`` is one plane of a volume)."""
    labels = np.asarray(labels)
    data = labels if labels.shape == tuple(geom.shape) else geom.place(labels, 0, labels.dtype)
    meta = result_metadata(geom, "segmentation", None)
    if model_info is not None:
        meta["seg_explain"]["segmentation_model"] = model_info
    return data, {"name": name, "opacity": 0.5, "metadata": meta} | geom.layer_kwargs(), "labels"


# ------------------------------------------------------------------------------ viewer updating
def layer_kind(layer: Any) -> str:
    """``"image"``, ``"labels"``, ``"shapes"`` or ``"other"`` (public API, no private layer attributes)."""
    from napari.layers import Image, Labels, Shapes

    for cls, kind in ((Labels, "labels"), (Image, "image"), (Shapes, "shapes")):
        if isinstance(layer, cls):
            return kind
    return "other"


#: result layers that show their colorbar in the canvas when they are created (napari >= 0.6 image layers)
COLORBAR_RESULTS = ("pdcr_map", "misure_saliency")


def show_colorbar(layer: "Layer") -> bool:
    """Show the colorbar of a new PdCR map / MiSuRe saliency layer in the canvas (napari's layer colorbar
    overlay, top right); later updates leave it as the user set it. Returns whether it is shown."""
    bar = getattr(layer, "colorbar", None)
    if bar is None or result_kind(layer) not in COLORBAR_RESULTS:
        return False
    bar.visible = True
    return True


_STYLE_KEYS = ("axis_labels", "units", "metadata", "colormap", "contrast_limits", "blending", "opacity",
               "interpolation2d")


def add_or_update(viewer: "napari.Viewer", layer_data: LayerDataTuple, colorbar: bool = True) -> "Layer":
    """Add a layer, or, if one of that name and type exists, replace its data and style in place.

    Keeps the user's active layer selected (adding a layer would otherwise select the new one). A new PdCR map
    or MiSuRe saliency layer shows its colorbar when ``colorbar`` (see :func:`show_colorbar`).
    """
    from napari.layers import Layer

    data, kwargs, layer_type = layer_data
    name = kwargs["name"]
    active = viewer.layers.selection.active
    if name in viewer.layers:
        old = viewer.layers[name]
        new_ndim = kwargs.get("ndim") if layer_type == "shapes" else np.ndim(data)
        same_kind = layer_kind(old) == layer_type and old.ndim == new_ndim
        if same_kind and layer_type in ("image", "labels") and old.data.shape == np.shape(data) \
                and not getattr(old, "rgb", False):
            set_transform(old, kwargs)
            old.data = data
            for key in _STYLE_KEYS:
                if key in kwargs:
                    setattr(old, key, kwargs[key])
            old.refresh()
            return old
        if same_kind and layer_type == "shapes":
            set_transform(old, kwargs)
            for key in ("metadata", "opacity"):
                if key in kwargs:
                    setattr(old, key, kwargs[key])
            old.data = []
            if data:
                old.add(data, shape_type=kwargs["shape_type"], edge_color=kwargs["edge_color"],
                        face_color=kwargs["face_color"], edge_width=kwargs["edge_width"])
            return old
        index = viewer.layers.index(old)
        viewer.layers.remove(old)
        layer = Layer.create(data, kwargs, layer_type)
        if colorbar:
            show_colorbar(layer)
        viewer.layers.insert(index, layer)
    else:
        layer = Layer.create(data, kwargs, layer_type)
        if colorbar:
            show_colorbar(layer)
        layer = viewer.add_layer(layer)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def add_explanation(viewer: "napari.Viewer", expl: "Explanation", geom: SliceGeometry) -> list["Layer"]:
    """Add (or update) every result layer of ``expl``."""
    return [add_or_update(viewer, ld) for ld in explanation_layer_data(expl, geom)]
