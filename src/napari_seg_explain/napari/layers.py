"""``Explanation`` -> napari layer data tuples, named and styled from the explainer's spec; adding and updating
result layers in a viewer.

Each result layer is one ``ResultLayer`` of the method's :class:`~napari_seg_explain.core.explainers.base.ExplainerSpec`
(``spec.layers``), drawn in its style (:mod:`~napari_seg_explain.napari.colormaps`) and named
``"<Method> <layer title> · <run label>"``, e.g. ``PdCR map · RoI 1 · white_matter``; the run label is the RoI and
the class (``Explanation.run``), so that every run keeps layers of its own. Placement in the viewer (the slice,
the source layer's transform) is :mod:`~napari_seg_explain.napari.slice_geometry`.

Every result layer has ``metadata = {"seg_explain": <source layer's seg_explain metadata> | {"result":
"<method>_<key>", "source_layer", "slice_index", "run_id", "method", "layer_key", "style", "colorbar"},
"explanation": Explanation.metadata()}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .colormaps import (  # noqa: F401 - re-exported: the layer module is where callers look for them
    DIVERGING_COLORS,
    MASK_COLORMAP,
    MASK_CONTOUR,
    MASK_OPACITY,
    ROI_COLOR,
    diverging_colormap,
    image_style,
    saliency_colormap,
    symmetric_limit,
    volume_diverging_colormap,
    volume_limit,
)
from .slice_geometry import TRANSFORM_KEYS, SliceGeometry, layer_transform, set_transform  # noqa: F401

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from ..core.explainers.base import ResultLayer
    from ..core.results import Explanation

LayerDataTuple = tuple[Any, dict[str, Any], str]

STREAM_SUFFIX = " (running)"  # a map while it streams in
PARTIAL_SUFFIX = " (partial)"  # a streamed map kept on Cancel
SEP = " · "  # between the layer's title and the run label


def result_kind(layer: Any) -> str | None:
    """``metadata['seg_explain']['result']`` of a layer the plugin made (``"<method>_map"``,
    ``"segmentation"``, ...), else None."""
    seg = seg_meta(layer)
    kind = seg.get("result")
    return str(kind) if kind else None


def seg_meta(layer: Any) -> dict[str, Any]:
    """``layer.metadata['seg_explain']`` when it is a dict, else ``{}``."""
    meta = getattr(layer, "metadata", None)
    seg = meta.get("seg_explain") if isinstance(meta, dict) else None
    return seg if isinstance(seg, dict) else {}


def layer_name(title: str, layer_title: str, label: str = "") -> str:
    """``"PdCR map · RoI 1 · white_matter"`` from the method title, the layer title and the run label."""
    base = f"{title} {layer_title}"
    return base + SEP + label if label else base


def run_label(expl: "Explanation") -> str:
    """``"RoI 1 · white_matter"``: the RoI and class of a run (empty for an explanation without run info)."""
    run = expl.run or {}
    parts = [str(run[k]) for k in ("roi_name", "class_name") if run.get(k)]
    return SEP.join(parts)


def result_layers(method: str, amap: np.ndarray | None = None) -> tuple[str, tuple["ResultLayer", ...]]:
    """The title and result layers of ``method``; a method no longer registered (a folder written with a
    plugin not installed here) gets its map (diverging if it has negative values) and its RoI outline."""
    from ..core.errors import UserError
    from ..core.explainers import registry
    from ..core.explainers.base import ResultLayer

    try:
        spec = registry.get(method)
        return spec.title, spec.layers
    except UserError:
        signed = amap is not None and bool(np.nanmin(np.asarray(amap, float), initial=0.0) < 0)
        return method, (ResultLayer("map", "map", "diverging" if signed else "saliency", colorbar=True),
                        ResultLayer("roi", "RoI", "outline"))


def is_result_layer(layer: Any) -> bool:
    """True for the plugin's own output layers: ``metadata['seg_explain']['result']`` is set, or the layer is
    named like a result layer of a registered method (``"PdCR map"``, ``"PdCR map · RoI 1 · ..."``, also with
    the ' (running)' / ' (partial)' suffix)."""
    if result_kind(layer) is not None:
        return True
    from ..core.explainers import registry

    name = str(getattr(layer, "name", ""))
    for suffix in (STREAM_SUFFIX, PARTIAL_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for spec in registry.specs():
        for rl in spec.layers:
            base = layer_name(spec.title, rl.title)
            if name == base or name.startswith(base + SEP):
                return True
    return False


def result_metadata(geom: SliceGeometry, result: str, explanation: dict[str, Any] | None,
                    **extra: Any) -> dict[str, Any]:
    """``layer.metadata`` of a result layer: the source's ``seg_explain`` entry plus what this layer is."""
    seg = dict(geom.source_metadata) | {"result": result, "source_layer": geom.source_layer,
                                        "slice_index": geom.slice_index} | extra
    if geom.whole:
        seg["whole_volume"] = True  # a 3-D model's map (volume colormap, widened contrast limits)
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


def roi_layer_data(roi: np.ndarray, geom: SliceGeometry, name: str) -> LayerDataTuple:
    """The RoI outline as a Shapes layer tuple (lime edge, no face) at the explained slice."""
    roi = np.asarray(roi)
    if geom.whole:  # a 3-D RoI (rows, cols, slices): its outline on every slice it covers
        shapes, data = [], []
        for k in np.flatnonzero(roi.any(axis=(0, 1))):
            for verts, t in roi_outline(roi[..., k]):
                shapes.append((verts, t))
                data.append(np.column_stack([np.full(len(verts), float(k)), verts]))
    else:
        shapes = roi_outline(roi)
        data = []
        for verts, _ in shapes:
            if geom.is_volume:
                verts = np.column_stack([np.full(len(verts), float(geom.slice_index)), verts])
            data.append(verts)
    kwargs = {"name": name, "shape_type": [t for _, t in shapes], "edge_color": ROI_COLOR,
              "face_color": "transparent", "edge_width": max(0.5, min(geom.plane_shape) / 200),
              "opacity": 1.0, "ndim": len(geom.shape)} | geom.layer_kwargs()
    return data, kwargs, "shapes"


# --------------------------------------------------------------------------------- result layers
def _layer_array(expl: "Explanation", key: str) -> np.ndarray | None:
    if key == "map":
        return expl.map
    if key == "roi":
        return expl.roi
    return expl.maps.get(key)


def result_layer_data(rl: "ResultLayer", arr: np.ndarray, geom: SliceGeometry, name: str,
                      metadata: dict[str, Any]) -> LayerDataTuple:
    """One result layer in its style: an Image (diverging/saliency), a Labels mask, or the RoI outline."""
    if rl.style == "outline":
        data, kwargs, kind = roi_layer_data(arr, geom, name)
        return data, kwargs | {"metadata": metadata}, kind
    if rl.style == "mask":
        return (geom.place(np.asarray(arr) != 0, 0, np.uint8),
                {"name": name, "opacity": MASK_OPACITY, "blending": "translucent", "colormap": MASK_COLORMAP,
                 "metadata": metadata} | geom.layer_kwargs(), "labels")
    plane = np.asarray(arr, dtype=np.float32)
    fill = np.nan if rl.style == "diverging" else 0.0
    style = image_style(rl.style, plane)
    if rl.style == "saliency" and metadata.get("seg_explain", {}).get("method") in DATA_LIMITS:
        style["contrast_limits"] = data_limits(plane)
    return (geom.place(plane, fill, np.float32),
            {"name": name, "metadata": metadata} | style | volume_style(geom, rl.style, plane)
            | geom.layer_kwargs(), "image")


#: methods whose saliency maps are drawn from their own minimum to maximum rather than 0..1: a RISE map is the
#: mean RoI Dice over random masks, so its values cluster around the mean (e.g. 0.30-0.36) and look flat on 0..1
DATA_LIMITS = frozenset({"rise"})


def data_limits(plane: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values of ``plane`` (``(0, 1)`` when none; widened when they are all equal)."""
    finite = np.asarray(plane, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        pad = max(abs(lo) * 1e-3, 1e-6)
        lo, hi = lo - pad, hi + pad
    return (lo, hi)


def volume_style(geom: SliceGeometry, style: str = "", plane: np.ndarray | None = None) -> dict[str, Any]:
    """A whole-volume map in napari's 3-D view: ``translucent`` rendering (each voxel's colour and opacity
    accumulate along the ray, so depth shows; napari's default, maximum intensity, would hide negative values);
    a signed map gets the volume colormap (NaN transparent in 3-D too) and its widened limits."""
    if not geom.whole:
        return {}
    out: dict[str, Any] = {"rendering": "translucent"}
    if style == "diverging" and plane is not None:
        lim = volume_limit(symmetric_limit(plane))
        out |= {"colormap": volume_diverging_colormap(), "contrast_limits": (-lim, lim)}
    return out


def explanation_layer_data(expl: "Explanation", geom: SliceGeometry, label: str | None = None
                           ) -> list[LayerDataTuple]:
    """Every result layer of one explanation, in the order of its spec's ``layers`` (absent arrays, e.g. no
    RoI, are left out). ``label`` (default: :func:`run_label`) ends each layer's name."""
    meta = expl.metadata()
    title, layers = result_layers(expl.method, expl.map)
    label = run_label(expl) if label is None else label
    out = []
    for rl in layers:
        arr = _layer_array(expl, rl.key)
        if arr is None:
            continue
        md = result_metadata(geom, f"{expl.method}_{rl.key}", meta, run_id=expl.run.get("id"), method=expl.method,
                             layer_key=rl.key, style=rl.style, colorbar=rl.colorbar)
        out.append(result_layer_data(rl, arr, geom, layer_name(title, rl.title, label), md))
    return out


def stream_layer_data(rl: "ResultLayer", plane: np.ndarray, geom: SliceGeometry, name: str, method: str,
                      run_id: str) -> LayerDataTuple:
    """The layer a map streams into while its run goes on (pending pixels NaN)."""
    md = result_metadata(geom, f"{method}_{rl.key}", None, run_id=run_id, method=method, layer_key=rl.key,
                         style=rl.style, colorbar=rl.colorbar, status="running")
    plane = np.asarray(plane, dtype=np.float32)
    style = rl.style if rl.style in ("diverging", "saliency") else "diverging"
    return (geom.place(plane, np.nan, np.float32),
            {"name": name, "metadata": md} | image_style(style, plane) | volume_style(geom, style, plane)
            | geom.layer_kwargs(),
            "image")


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
def unwrap(layer: Any) -> Any:
    """The layer itself: a widget docked from napari's Plugins menu gets a viewer proxy whose layers are new
    proxy objects at every access, so layers are compared with :func:`same_layer`, never with ``is``."""
    return getattr(layer, "__wrapped__", layer)


def same_layer(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same layer (each either the layer or a napari proxy of it)."""
    return unwrap(a) is unwrap(b)


def layer_kind(layer: Any) -> str:
    """``"image"``, ``"labels"``, ``"shapes"`` or ``"other"`` (public API, no private layer attributes)."""
    from napari.layers import Image, Labels, Shapes

    for cls, kind in ((Labels, "labels"), (Image, "image"), (Shapes, "shapes")):
        if isinstance(layer, cls):
            return kind
    return "other"


def apply_style_after_create(layer: "Layer") -> None:
    """Display settings napari's layer constructors do not take: a ``"mask"`` result is drawn as an outline
    (Labels ``contour``; napari draws contours in 2-D views)."""
    if seg_meta(layer).get("style") == "mask" and hasattr(layer, "contour"):
        layer.contour = MASK_CONTOUR


def show_colorbar(layer: "Layer") -> bool:
    """Show the colorbar of a new result map whose spec asks for one (napari's layer colorbar overlay, top
    right); later updates leave it as the user set it. Returns whether it is shown."""
    bar = getattr(layer, "colorbar", None)
    if bar is None or not seg_meta(layer).get("colorbar"):
        return False
    bar.visible = True
    return True


_STYLE_KEYS = ("axis_labels", "units", "metadata", "colormap", "contrast_limits", "blending", "opacity",
               "interpolation2d", "rendering")


def update_layer(layer: "Layer", layer_data: LayerDataTuple) -> bool:
    """Replace ``layer``'s data, transform and style in place (same kind and shape; Shapes: its shapes).
    Returns False, leaving the layer alone, when it cannot take ``layer_data`` in place."""
    data, kwargs, layer_type = layer_data
    new_ndim = kwargs.get("ndim") if layer_type == "shapes" else np.ndim(data)
    if layer_kind(layer) != layer_type or layer.ndim != new_ndim:
        return False
    if layer_type in ("image", "labels") and layer.data.shape == np.shape(data) and not getattr(layer, "rgb", False):
        set_transform(layer, kwargs)
        layer.data = data
        for key in _STYLE_KEYS:
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        apply_style_after_create(layer)
        layer.refresh()
    elif layer_type == "shapes":
        set_transform(layer, kwargs)
        for key in ("metadata", "opacity"):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        layer.data = []
        if data:
            layer.add(data, shape_type=kwargs["shape_type"], edge_color=kwargs["edge_color"],
                      face_color=kwargs["face_color"], edge_width=kwargs["edge_width"])
    else:
        return False
    if layer.name != kwargs["name"]:
        layer.name = kwargs["name"]
    return True


def insert_layer(viewer: "napari.Viewer", layer_data: LayerDataTuple, index: int | None = None,
                 colorbar: bool = True) -> "Layer":
    """Add a new layer at ``index`` (default: on top), keeping the user's active layer selected."""
    from napari.layers import Layer

    active = viewer.layers.selection.active
    layer = Layer.create(*layer_data)
    apply_style_after_create(layer)
    if colorbar:
        show_colorbar(layer)
    if index is None:
        viewer.add_layer(layer)
    else:
        viewer.layers.insert(index, layer)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def add_or_update(viewer: "napari.Viewer", layer_data: LayerDataTuple, colorbar: bool = True) -> "Layer":
    """Add a layer, or, if one of that name exists, update it in place (or replace it at its position when it
    is of another kind or shape)."""
    name = layer_data[1]["name"]
    if name not in viewer.layers:
        return insert_layer(viewer, layer_data, colorbar=colorbar)
    old = viewer.layers[name]
    if update_layer(old, layer_data):
        return old
    index = viewer.layers.index(old)
    viewer.layers.remove(old)
    return insert_layer(viewer, layer_data, index, colorbar=colorbar)
