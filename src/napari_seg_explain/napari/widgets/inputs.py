"""Turn napari layers into the arrays the core takes: the explained plane, the RoI, the label, the pool.

Runs in the GUI thread (fast: copies and rasterisation only); never modifies a layer. Every problem the
user can fix raises :class:`~napari_seg_explain.core.errors.UserError` with a message saying what to do.

Coordinates: a volume layer is ``(slices, rows, cols)``; its explained plane is ``layer.data[z]`` with
``z`` the slice the viewer shows (``layer.world_to_data(viewer.dims.point)[0]``). That is the plane on the
screen only while the viewer is in 2-D and displays the layer's rows and columns (napari's default axis
order); otherwise :func:`current_slice` raises a UserError asking for the 2-D axial view. Shapes are mapped into
the image layer's data coordinates through world coordinates, so a Shapes layer with a different
scale/translate than the image still gives the right pixels. A pixel belongs to a drawn RoI when its
centre lies inside the shape (napari pixel ``i`` spans ``i - 0.5 .. i + 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import napari
    from napari.layers import Image, Labels, Layer, Shapes


AREA_SHAPES = ("rectangle", "polygon", "ellipse")


def spatial_ndim(layer: "Layer") -> int:
    """Spatial dimensions of an image layer (an RGB layer's colour axis excluded)."""
    return layer.data.ndim - (1 if getattr(layer, "rgb", False) else 0)


def n_slices(layer: "Layer") -> int:
    """Slices of a volume layer along its first axis (1 for a 2-D layer)."""
    return int(layer.data.shape[0]) if spatial_ndim(layer) == 3 else 1


def is_volume(layer: "Layer") -> bool:
    """A volume with more than one slice: a one-slice volume (a single DICOM file opens as ``(1, rows, cols)``)
    is treated as a 2-D image (no other slices to draw a pool from, nothing to segment as a whole volume)."""
    return n_slices(layer) > 1


def check_image_layer(layer: "Image") -> None:
    nd = spatial_ndim(layer)
    if nd not in (2, 3):
        raise UserError(f"layer {layer.name!r} has {nd} spatial dimensions {tuple(layer.data.shape)}; pick a 2-D "
                        "image or a (slices, rows, cols) volume")


def require_slice_view(viewer: "napari.Viewer", layer: "Layer") -> None:
    """Raise a UserError unless the canvas shows ``layer``'s explained plane: its rows and columns, in 2-D.

    The plugin explains a 2-D plane ``layer.data[z]`` (a volume is sliced along its first axis); in the 3-D view,
    or with a ``dims.order`` that displays other axes (a sagittal or coronal reslice of the volume), the
    canvas would show something else than what is explained.
    """
    nd = spatial_ndim(layer)
    dims = viewer.dims
    if nd == 3 and dims.ndisplay == 3:
        raise UserError(f"switch to 2-D axial view: the viewer shows {layer.name!r} in 3-D, but the explained plane "
                        "is one slice, the one the viewer shows in 2-D (press the 2D/3D toggle at the bottom left "
                        "of the canvas, or Ctrl+Y)")
    n = dims.ndim
    rows_cols = {n - 2, n - 1}  # the layer's last two axes, as world axes
    displayed = {int(a) for a in dims.displayed}
    if not rows_cols <= displayed:
        first = n - spatial_ndim(layer)
        shown = ", ".join(str(a - first) for a in sorted(displayed) if a >= first)
        raise UserError(f"switch to 2-D axial view: the canvas shows axes ({shown}) of {layer.name!r}, but the "
                        f"plugin explains its slices along axis 0 (rows and columns = axes {nd - 2}, {nd - 1}); "
                        f"restore napari's axis order ({tuple(range(n))}, e.g. with the 'roll dimensions' button "
                        "until the axial slice is shown)")


def current_slice(viewer: "napari.Viewer", layer: "Layer", check_view: bool = True) -> int | None:
    """The slice of ``layer`` the viewer shows (``None`` for 2-D layers).

    With ``check_view`` (the default) it first makes sure the canvas shows that plane
    (:func:`require_slice_view`).
    """
    if check_view:
        require_slice_view(viewer, layer)
    if spatial_ndim(layer) != 3:
        return None
    z = layer.world_to_data(tuple(viewer.dims.point))[0]
    return int(np.clip(np.round(z), 0, layer.data.shape[0] - 1))


def explained_text(slices: Sequence[int], shown: int | None) -> str:
    """'explains slice 64 (the RoI's slice; the viewer shows 74)' for RoIs drawn on slices other than the one
    shown (``shown=None``: without the slice shown)."""
    slices = sorted({int(k) for k in slices})
    view = f"; the viewer shows {shown}" if shown is not None else ""
    if len(slices) == 1:
        return f"explains slice {slices[0]} (the RoI's slice{view})"
    return f"explains slices {', '.join(map(str, slices))} (the RoIs' slices{view})"


def plane_of(layer: "Image", z: int | None) -> np.ndarray:
    """The explained plane as a ``(C, H, W)`` float32 copy (RGB: 3 channels, alpha dropped)."""
    check_image_layer(layer)
    data = layer.data
    if getattr(layer, "rgb", False):
        arr = np.asarray(data[z] if data.ndim == 4 else data)[..., :3]
        return np.array(np.moveaxis(arr, -1, 0), dtype=np.float32)
    arr = np.asarray(data[z] if data.ndim == 3 else data)
    return np.array(arr[None], dtype=np.float32)


def _full_world(viewer: "napari.Viewer", world: np.ndarray) -> np.ndarray:
    """A world position with every viewer axis: the viewer's point with the trailing axes from ``world``."""
    point = np.array(viewer.dims.point, dtype=float)
    if len(world) >= len(point):
        return np.asarray(world, float)
    point[len(point) - len(world):] = world
    return point


def _to_image_data(viewer: "napari.Viewer", shapes: "Shapes", image: "Layer", verts: np.ndarray) -> np.ndarray:
    """Vertices in the Shapes layer's data coordinates -> the image layer's data coordinates."""
    out = []
    for v in np.asarray(verts, float):
        world = np.asarray(shapes.data_to_world(v), float)
        out.append(np.asarray(image.world_to_data(_full_world(viewer, world)), float)[-spatial_ndim(image):])
    return np.array(out)


def _ellipse_polygon(corners: np.ndarray, n: int = 96) -> np.ndarray:
    """An ellipse given by its 4 bounding-box corners (napari's ellipse data) as an ``n``-gon."""
    c = corners.mean(axis=0)
    u = (corners[1] - corners[0]) / 2
    w = (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * u + np.sin(t) * w


def pick_shape_index(shapes: "Shapes") -> int:
    """The shape to use: the selected one (highest index if several), else the newest."""
    if len(shapes.data) == 0:
        raise UserError(f"the Shapes layer {shapes.name!r} is empty: draw a rectangle, polygon or ellipse over the "
                        "structure to explain")
    selected = sorted(getattr(shapes, "selected_data", ()) or ())
    return int(selected[-1]) if selected else len(shapes.data) - 1


@dataclass
class RoI:
    """A RoI mask on the explained plane, the plane's slice index and a description of where it came from."""

    mask: np.ndarray
    slice_index: int | None
    description: str


def _shape_on_plane(viewer: "napari.Viewer", shapes: "Shapes", image: "Image", z: int | None,
                    idx: int) -> tuple[np.ndarray, int | None]:
    """Shape ``idx``'s vertices in the image plane's ``(row, col)`` data coordinates, and its slice: the slice
    it was drawn on (3-D vertices), else ``z``."""
    verts = _to_image_data(viewer, shapes, image, shapes.data[idx])
    if spatial_ndim(image) != 3:
        return verts, z
    if shapes.ndim >= 3:
        zs = verts[:, 0]
        if np.ptp(zs) > 0.5:
            raise UserError(f"shape {idx + 1} of {shapes.name!r} spans several slices; draw the RoI on one slice")
        z = int(np.round(zs.mean()))
        if not 0 <= z < image.data.shape[0]:
            raise UserError(f"the RoI lies on slice {z}, outside {image.name!r} (0..{image.data.shape[0] - 1})")
    return verts[:, 1:], z


def shape_slice(viewer: "napari.Viewer", shapes: "Shapes", image: "Image", z: int | None,
                index: int | None = None) -> int | None:
    """The slice shape ``index`` (default: the selected/newest one) explains, without rasterising it: the slice
    it was drawn on, else ``z`` (``None`` for a 2-D image)."""
    idx = pick_shape_index(shapes) if index is None else int(index)
    return _shape_on_plane(viewer, shapes, image, z, idx)[1]


def roi_from_shapes(viewer: "napari.Viewer", shapes: "Shapes", image: "Image", z: int | None,
                    index: int | None = None) -> RoI:
    """RoI from shape ``index`` of ``shapes`` (default: the selected/newest one), on ``image``'s plane; messages
    and the description number shapes from 1, as the runs' RoI names do ('RoI 1' is shape 0 of layer 'RoI').

    For a volume, a shape drawn on a slice (3-D vertices) defines the slice; a 2-D shape uses ``z``.
    """
    from ...core.rois import roi_from_polygon

    check_image_layer(image)
    idx = pick_shape_index(shapes) if index is None else int(index)
    stype = shapes.shape_type[idx]
    if stype not in AREA_SHAPES:
        raise UserError(f"shape {idx + 1} of {shapes.name!r} is a {stype}, which has no inside: draw a rectangle, "
                        "polygon or ellipse as the RoI")
    verts, z = _shape_on_plane(viewer, shapes, image, z, idx)
    nd = spatial_ndim(image)
    if stype == "ellipse":
        verts = _ellipse_polygon(verts)
    shape2d = tuple(image.data.shape[-3:-1] if getattr(image, "rgb", False) else image.data.shape[-2:])
    mask = roi_from_polygon(shape2d, verts)
    desc = f"{stype} {idx + 1} of {shapes.name!r}" + (f" on slice {z}" if nd == 3 else "")
    return RoI(mask, z if nd == 3 else None, desc)


def _plane_of_labels(labels: "Labels", image: "Image", z: int | None, what: str) -> np.ndarray:
    nd = spatial_ndim(image)
    data = labels.data
    img_shape = tuple(image.data.shape[:-1] if getattr(image, "rgb", False) else image.data.shape)
    if tuple(data.shape) == img_shape:
        plane = data[z] if nd == 3 else data
    elif nd == 3 and data.ndim == 2 and tuple(data.shape) == img_shape[1:]:
        plane = data
    else:
        raise UserError(f"the {what} layer {labels.name!r} has shape {tuple(data.shape)} but the image "
                        f"{image.name!r} is {img_shape}; pick a Labels layer drawn on this image")
    return np.asarray(plane)


def roi_from_labels(labels: "Labels", image: "Image", z: int | None) -> RoI:
    """RoI = the non-zero pixels of ``labels`` at the explained slice."""
    from ...core.rois import roi_from_mask

    plane = _plane_of_labels(labels, image, z, "RoI")
    if not plane.any():
        raise UserError(f"the Labels layer {labels.name!r} has no painted pixel on slice {z}: paint the RoI "
                        "on the slice to explain, or use a Shapes layer")
    desc = f"non-zero pixels of {labels.name!r}" + (f" on slice {z}" if z is not None else "")
    return RoI(roi_from_mask(plane), z, desc)


def label_plane(labels: "Labels", image: "Image", z: int | None, target: int) -> np.ndarray:
    """Ground truth of class ``target`` on the plane: ``== target`` for multi-class labels, else non-zero."""
    plane = _plane_of_labels(labels, image, z, "ground-truth")
    values = np.unique(plane)
    if np.setdiff1d(values, [0, 1]).size:
        return (plane == target).astype(np.uint8)
    return (plane != 0).astype(np.uint8)


def explanation_geometry(image: "Image", z: int | None) -> dict[str, Any]:
    """The ``geometry`` recorded in an Explanation made from a layer (source file geometry when known)."""
    meta = image.metadata.get("seg_explain") if isinstance(image.metadata, dict) else None
    out: dict[str, Any] = {}
    for key in ("source", "affine", "spatial_shape", "axis_order", "channel"):
        if isinstance(meta, dict) and meta.get(key) is not None:
            out[key] = meta[key]
    order = (meta or {}).get("axis_order") if isinstance(meta, dict) else None
    file_axis = int(order[0]) if order and z is not None else (2 if z is not None else None)
    out |= {"layer": image.name, "layer_shape": list(image.data.shape), "slice_index": z,
            "slice_axis": file_axis, "layer_slice_axis": 0 if z is not None else None,
            "scale": [float(s) for s in image.scale], "translate": [float(t) for t in image.translate]}
    return out


# ------------------------------------------------------------------------------------- 3-D models
# A 3-D model explains the whole volume: arrays go to the core in its display order (rows, cols, slices), i.e.
# ``np.moveaxis(layer.data, 0, -1)``; results come back in that order (SliceGeometry.whole places them).


def volume_of(layer: "Image") -> np.ndarray:
    """The volume layer ``(slices, rows, cols)`` as the core's ``(1, rows, cols, slices)`` float32 array."""
    if spatial_ndim(layer) != 3 or getattr(layer, "rgb", False):
        raise UserError(f"the model is 3-D: choose a (slices, rows, cols) volume, not {layer.name!r} "
                        f"{tuple(layer.data.shape)}")
    return np.array(np.moveaxis(np.asarray(layer.data), 0, -1)[None], dtype=np.float32)


def core_image(layer: "Image", arr: np.ndarray):
    """A core ``Image`` of the volume ``arr`` (display order) with the layer's source geometry when the plugin's
    reader opened it (so that a card's ``orientation: file`` reorders it to the file's voxel order), else an
    identity affine at the layer's scale (display order = model order)."""
    from ...core.images import Image as CoreImage
    from ..geometry import image_from_metadata

    meta = layer.metadata.get("seg_explain") if isinstance(layer.metadata, dict) else None
    if isinstance(meta, dict) and meta.get("spatial_shape") is not None and meta.get("affine") is not None:
        img = image_from_metadata(meta)
        if tuple(img.data.shape[1:]) == tuple(arr.shape[1:]):
            return img
    spacing = tuple(float(s) for s in layer.scale[[1, 2, 0]])
    return CoreImage(arr, spacing, np.diag([*spacing, 1.0]), None)


def extruded(mask2d: np.ndarray, z: int, k: int, n: int) -> np.ndarray:
    """A plane's RoI mask on slices ``z - k .. z + k`` (clipped to ``0 .. n - 1``) as a display-order volume
    ``(rows, cols, slices)``."""
    out = np.zeros((*mask2d.shape, n), dtype=bool)
    out[..., max(0, z - k): min(n, z + k + 1)] = np.asarray(mask2d, bool)[..., None]
    return out


def roi_volume_from_shapes(viewer: "napari.Viewer", shapes: "Shapes", image: "Image", k: int,
                           index: int | None = None) -> RoI:
    """A 3-D RoI: shape ``index`` (drawn on one slice) extruded over that slice ± ``k``; the mask is in display
    order ``(rows, cols, slices)``, ``slice_index`` is the slice it was drawn on."""
    z_shown = current_slice(viewer, image, check_view=False)
    roi = roi_from_shapes(viewer, shapes, image, z_shown, index)
    z = int(roi.slice_index)
    n = int(image.data.shape[0])
    lo, hi = max(0, z - k), min(n - 1, z + k)
    what = f" on slice {z}" if k == 0 else f" on slices {lo}..{hi} (drawn on {z}, ± {k})"
    return RoI(extruded(roi.mask, z, k, n), z, roi.description.replace(f" on slice {z}", "") + what)


def roi_volume_from_labels(labels: "Labels", image: "Image") -> RoI:
    """A 3-D RoI: the non-zero voxels of ``labels`` on every slice (display order); ``slice_index`` is the
    middle of the slices it covers."""
    data = np.asarray(labels.data)
    if data.shape != tuple(image.data.shape):
        raise UserError(f"the RoI layer {labels.name!r} has shape {data.shape} but the image {image.name!r} is "
                        f"{tuple(image.data.shape)}; pick a Labels layer drawn on this image")
    if not data.any():
        raise UserError(f"the Labels layer {labels.name!r} has no painted voxel: paint the RoI, or use a Shapes layer")
    zs = np.flatnonzero(data.any(axis=(1, 2)))
    desc = f"non-zero voxels of {labels.name!r} (slices {zs.min()}..{zs.max()})"
    return RoI(np.moveaxis(data != 0, 0, -1), int((zs.min() + zs.max()) // 2), desc)


def label_volume(labels: "Labels", image: "Image", target: int) -> np.ndarray:
    """Ground truth of class ``target`` on the whole volume, display order (as :func:`label_plane`)."""
    data = np.asarray(labels.data)
    if data.shape != tuple(image.data.shape):
        raise UserError(f"the ground-truth layer {labels.name!r} has shape {data.shape} but the image "
                        f"{image.name!r} is {tuple(image.data.shape)}; pick a Labels layer drawn on this image")
    values = np.unique(data)
    out = (data == target) if np.setdiff1d(values, [0, 1]).size else (data != 0)
    return np.moveaxis(out.astype(np.uint8), 0, -1)
