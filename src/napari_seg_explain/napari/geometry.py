"""Geometry shared by the reader, the writer and the widgets: Image axes <-> napari layer axes <-> file.

No Qt and no napari imports here (numpy, plus nibabel inside functions), so scripts and tests can use it.

The layer contract
------------------
* The reader reads every volume with :func:`napari_seg_explain.core.images.read_image` in the display
  orientation ``("P", "L", "S")`` (voxel axes permuted/flipped to the nearest anatomical axes, no
  resampling): whatever the file's voxel order (RAS/LAS NIfTI, LPS DICOM/NRRD/MHA, sagittal or coronal
  acquisitions), the core ``Image`` has rows running anterior -> posterior, columns running the patient's
  right -> left (radiological) and slices inferior -> superior. "Image order" below means that order
  (the file's own order for 2-D images, which are never reoriented).
* A volume's layer data is ``(slices, rows, cols)``: the Image's last spatial axis moved to the front,
  ``np.moveaxis(spatial, -1, 0)``, so napari opens it axial with anterior at the top and the patient's right
  on the screen's left, and ``layer.data[z]`` is ``image.data[c, :, :, z]``. ``axis_order = [2, 0, 1]``:
  layer axis ``a`` is Image axis ``axis_order[a]``. 2-D images keep ``(rows, cols)`` (``axis_order =
  [0, 1]``); RGB pictures are ``rgb=True`` layers ``(rows, cols, 3)``.
* ``scale`` is the voxel spacing in layer axis order. ``translate`` is the world position of voxel 0 along
  the anatomical direction each layer axis runs to: for a layer axis running towards L (world ``-x``) it is
  ``-x0``. For a volume napari's world coordinates are therefore ``(S, P, L)`` millimetres -- RAS ``(z,
  -y, -x)``, i.e. DICOM/ITK LPS ``(z, y, x)`` -- exact for an axis-aligned file, and the layer's
  ``axis_labels`` (``("I→S", "A→P", "R→L")``) name those directions. Every layer made from one file gets
  the same ``scale``/``translate``, so they overlay exactly.
* napari cannot display an oblique affine in 2-D: oblique files are shown axis-aligned (nearest anatomical
  axes), the true affine stays in the metadata and files are written back with it.
* ``layer.metadata["seg_explain"]`` (see :func:`seg_explain_metadata`) keeps what is needed to go back to
  the file: ``affine`` (the Image's voxel->world RAS affine, Image order), ``spatial_shape`` and ``spacing``
  (Image order), ``axis_order``, ``orientation`` (the Image's axis codes: ``["P", "L", "S"]`` for volumes),
  ``file_affine`` (the file's own affine, file voxel order), ``file_orientation`` (its axis codes),
  ``to_file`` (the nibabel orientation transform from Image order back to the file's voxel order, as
  ``[axis, flip]`` pairs, or None when the Image is in file order), ``oblique``, ``convention``,
  ``slice_plane``, ``source``, ``format``, ``channel``, and for NIfTI files ``sform_code`` / ``qform_code`` (the
  header's codes: outputs written over the file keep them). :func:`image_from_metadata` rebuilds an ``Image``
  from it, and ``core.images.write_map(path, arr, like=that_image)`` writes an Image-order ``arr`` back in
  the file's voxel order with the file's affine.

The function names below say "file" for the Image order (kept for compatibility): for a volume the
"file order" arrays they take and return are in the Image's display order; ``to_file`` goes the last step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.errors import UserError

__all__ = [
    "ObliqueAffineWarning",
    "PICTURE_FORMATS",
    "layer_axis_order",
    "file_to_layer_array",
    "layer_to_file_array",
    "file_to_layer_index",
    "layer_to_file_index",
    "axis_directions",
    "axis_codes",
    "scale_translate",
    "layer_axis_labels",
    "convention_text",
    "slice_plane",
    "seg_explain_metadata",
    "image_from_metadata",
    "geometry_kwargs",
    "oblique_message",
]

#: formats that store pixels only, without patient orientation or physical spacing
PICTURE_FORMATS = frozenset({"png", "jpeg", "tiff", "bmp"})

_POSITIVE = "RAS"
_NEGATIVE = "LPI"
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
_WORDS = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}


class ObliqueAffineWarning(UserWarning):
    """The file's voxel axes are not aligned with the world axes; napari shows it axis-aligned."""


# ----------------------------------------------------------------------------------- axis order
def layer_axis_order(spatial_ndim: int) -> tuple[int, ...]:
    """Image axis of each layer axis: ``(2, 0, 1)`` for volumes, ``(0, 1)`` for 2-D images."""
    if spatial_ndim == 3:
        return (2, 0, 1)
    if spatial_ndim == 2:
        return (0, 1)
    raise ValueError(f"only 2-D and 3-D images have a layer axis order, got {spatial_ndim} spatial axes")


def _order(meta_or_order: Mapping[str, Any] | Sequence[int]) -> tuple[int, ...]:
    order = meta_or_order["axis_order"] if isinstance(meta_or_order, Mapping) else meta_or_order
    order = tuple(int(a) for a in order)
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"axis_order must be a permutation of 0..{len(order) - 1}, got {list(order)}")
    return order


def file_to_layer_array(spatial: np.ndarray, axis_order: Sequence[int]) -> np.ndarray:
    """A view of an Image-order spatial array (no channel axis) in layer axis order."""
    return np.transpose(spatial, _order(axis_order))


def layer_to_file_array(data: Any, meta: Mapping[str, Any]) -> np.ndarray:
    """Layer data ``(slices, rows, cols)`` / ``(rows, cols)`` -> Image order (a view).

    For a reoriented volume that is the display order; ``write_map`` with ``image_from_metadata(meta)``
    takes it the last step to the file's voxel order.

    ``meta`` is ``layer.metadata["seg_explain"]``. Raises ``UserError`` when the data does not have the
    layer shape that the metadata describes (e.g. a 2-D slice of a volume, or an RGB layer).
    """
    order = _order(meta)
    arr = np.asarray(data)
    expected = tuple(int(s) for s in np.asarray(meta["spatial_shape"])[list(order)])
    if arr.shape != expected:
        raise UserError(
            f"the layer has shape {arr.shape} but its source file's layer shape is {expected} "
            f"({meta.get('source')}); only layers with the source's shape can be written with its geometry"
        )
    return np.transpose(arr, np.argsort(order))


def file_to_layer_index(index: Sequence[float], meta_or_order: Mapping[str, Any] | Sequence[int]) -> tuple:
    """A voxel index in Image order, e.g. ``(i, j, k)``, as a layer data index ``(k, i, j)``."""
    order = _order(meta_or_order)
    return tuple(index[a] for a in order)


def layer_to_file_index(index: Sequence[float], meta_or_order: Mapping[str, Any] | Sequence[int]) -> tuple:
    """A layer data index, e.g. ``(k, i, j)``, as a voxel index in Image order ``(i, j, k)`` (``meta["affine"]``
    maps it to world RAS millimetres)."""
    order = _order(meta_or_order)
    out: list[Any] = [None] * len(order)
    for a, f in enumerate(order):
        out[f] = index[a]
    return tuple(out)


# ----------------------------------------------------------------------------------- directions
def axis_directions(affine: np.ndarray, spatial_ndim: int) -> list[tuple[int, int] | None]:
    """For each voxel axis of ``affine``: ``(world_axis, sign)`` of the nearest world (RAS) axis, or None
    if degenerate.

    Uses nibabel's ``io_orientation``, which assigns distinct world axes even to oblique affines.
    """
    from nibabel.orientations import io_orientation

    aff = np.asarray(affine, dtype=np.float64)
    try:
        ornt = io_orientation(aff)
    except Exception:  # degenerate affine
        return [None] * spatial_ndim
    out: list[tuple[int, int] | None] = []
    for w, s in ornt[:spatial_ndim]:
        out.append(None if np.isnan(w) else (int(w), int(s)))
    return out


def axis_codes(affine: np.ndarray, spatial_ndim: int) -> list[str | None]:
    """The anatomical direction (``R``, ``L``, ``A``, ``P``, ``S``, ``I``) each voxel axis of ``affine``
    runs to."""
    return [None if d is None else (_POSITIVE if d[1] > 0 else _NEGATIVE)[d[0]]
            for d in axis_directions(affine, spatial_ndim)]


def scale_translate(affine: np.ndarray, spacing: Sequence[float],
                    axis_order: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """napari ``scale`` and ``translate`` in layer axis order (see the module docstring)."""
    order = _order(axis_order)
    aff = np.asarray(affine, dtype=np.float64)
    dirs = axis_directions(aff, len(order))
    scale = tuple(float(abs(spacing[f])) or 1.0 for f in order)
    translate = []
    for f in order:
        d = dirs[f]
        translate.append(0.0 if d is None else float(d[1] * aff[d[0], 3]) + 0.0)  # + 0.0: no -0.0
    return scale, tuple(translate)


def layer_axis_labels(affine: np.ndarray, axis_order: Sequence[int]) -> tuple[str, ...] | None:
    """``("I→S", "A→P", "R→L")``-style labels: where each layer axis comes from and runs to."""
    order = _order(axis_order)
    codes = axis_codes(affine, len(order))
    if any(c is None for c in codes):
        return None
    return tuple(f"{_OPPOSITE[codes[f]]}→{codes[f]}" for f in order)


def slice_plane(affine: np.ndarray, axis_order: Sequence[int]) -> str | None:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the plane napari shows for a volume (None for 2-D)."""
    order = _order(axis_order)
    if len(order) != 3:
        return None
    d = axis_directions(affine, 3)[order[0]]
    if d is None:
        return None
    return ("sagittal", "coronal", "axial")[d[0]]


def convention_text(affine: np.ndarray, axis_order: Sequence[int], fmt: str = "") -> str:
    """How to read the screen: radiological vs neurological left/right, derived from the affine.

    Radiological: the layer's column axis runs towards the patient's left, so the patient's left is on the
    screen's right. Neurological: the column axis runs towards the patient's right.
    """
    order = _order(axis_order)
    if fmt in PICTURE_FORMATS:
        return (f"no patient orientation: a {fmt.upper()} file stores pixels only; shown as stored (rows top to "
                f"bottom, columns left to right). Left/right follows whatever view it was exported from.")
    codes = axis_codes(affine, len(order))
    if any(c is None for c in codes):
        return "unknown orientation: the file's affine is degenerate; shown in voxel order."
    col, row = codes[order[-1]], codes[order[-2]]
    row_text = f"rows run {_WORDS[_OPPOSITE[row]]} to {_WORDS[row]} ({_WORDS[_OPPOSITE[row]]} at the top)"
    if len(order) == 3:
        plane = slice_plane(affine, order)
        s = codes[order[0]]
        row_text += f"; {plane} slices, numbered {_WORDS[_OPPOSITE[s]]} to {_WORDS[s]}"
    if col == "L":
        head = ("radiological convention: the patient's left is on the screen's right "
                "(columns run right to left)")
    elif col == "R":
        head = ("neurological convention: the patient's left is on the screen's left "
                "(columns run left to right)")
    else:
        head = (f"columns run {_WORDS[_OPPOSITE[col]]} to {_WORDS[col]}: left/right is not across the screen, "
                f"so neither radiological nor neurological convention applies")
        if len(order) == 3 and codes[order[0]] in ("L", "R"):
            head += " (left/right is the slice axis)"
    return f"{head}; {row_text}."


def oblique_message(source: Any) -> str:
    return (f"{source}: the image axes are oblique to the patient axes. napari shows it axis-aligned "
            f"(nearest anatomical axes), so on-screen positions are approximate; the true affine is kept in "
            f"the layer metadata and files are written back with it.")


# ----------------------------------------------------------------------------------- metadata
def _axcodes(affine: np.ndarray, nsp: int) -> list[str | None]:
    import nibabel as nib

    try:
        return [str(c) if c is not None else None for c in nib.aff2axcodes(np.asarray(affine, float))][:nsp]
    except Exception:  # degenerate affine
        return [None] * nsp


def _matrix(affine: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(affine, dtype=np.float64)]


def _ornt_list(ornt: Any) -> list[list[int]] | None:
    """A nibabel orientation array as JSON ``[[axis, flip], ...]`` (None if absent or not a full one)."""
    if ornt is None:
        return None
    arr = np.asarray(ornt, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        return None
    return [[int(a), int(f)] for a, f in arr]


def seg_explain_metadata(image: Any, channel: str | None = None) -> dict[str, Any]:
    """JSON-serialisable ``layer.metadata["seg_explain"]`` for a layer made from a core ``Image``.

    Works for Images in the display orientation (``image.to_file`` / ``image.file_affine`` set when the
    file's voxel order differs) and for Images in file order (``to_file`` None: the file's affine is the
    Image's).
    """
    nsp = int(image.spatial_ndim)
    order = layer_axis_order(nsp)
    aff = np.asarray(image.affine, dtype=np.float64)
    to_file = _ornt_list(getattr(image, "to_file", None))
    file_aff = getattr(image, "file_affine", None)
    file_aff = aff if to_file is None or file_aff is None else np.asarray(file_aff, dtype=np.float64)
    fmt = str(image.format or "")
    return {
        "source": None if image.source is None else str(image.source),
        "format": fmt,
        "affine": _matrix(aff),
        "spatial_shape": [int(s) for s in image.spatial_shape],
        "spacing": [float(s) for s in image.spacing],
        "axis_order": list(order),
        "orientation": _axcodes(aff, nsp),
        "file_affine": _matrix(file_aff),
        "file_orientation": _axcodes(file_aff, nsp),
        "to_file": to_file,
        "oblique": bool(image.is_oblique()),
        "convention": convention_text(aff, order, fmt),
        "slice_plane": slice_plane(aff, order),
        "channel": channel,
    } | _nifti_codes(getattr(image, "header", None))


def _nifti_codes(header: Any) -> dict[str, int]:
    """``{"sform_code", "qform_code"}`` of a NIfTI header (empty for other headers)."""
    if header is None or type(header).__name__ not in ("Nifti1Header", "Nifti2Header"):
        return {}
    try:
        return {key: int(header[key]) for key in ("sform_code", "qform_code")}
    except (KeyError, TypeError, ValueError):
        return {}


def _header_with_codes(meta: Mapping[str, Any]) -> Any:
    """A NIfTI header carrying the metadata's ``sform_code`` / ``qform_code`` (None when it has neither)."""
    codes = {k: meta.get(k) for k in ("sform_code", "qform_code") if meta.get(k) is not None}
    if not codes:
        return None
    import nibabel as nib

    header = nib.Nifti1Header()
    for key, code in codes.items():
        header[key] = int(code)
    return header


def image_from_metadata(meta: Mapping[str, Any], data: Any | None = None):
    """A core ``Image`` with the source's geometry from ``meta`` (``layer.metadata["seg_explain"]``).

    ``data``: layer data (moved back to Image order, one channel), or None for a zero-cost placeholder
    (enough for ``core.images.write_map(path, array, like=...)``). When ``meta`` has a ``to_file``
    transform (a reoriented volume) the Image carries it and ``file_affine``, so ``write_map`` writes
    NIfTI/ITK outputs back in the file's voxel order with the file's affine. Metadata without these keys
    (older layers, Images read in file order) gives an Image written with ``affine`` as it is. The NIfTI
    ``sform_code`` / ``qform_code`` of the metadata travel in the Image's header, so NIfTI outputs keep them.
    """
    from ..core.images import Image

    shape = tuple(int(s) for s in meta["spatial_shape"])
    if data is None:
        arr = np.broadcast_to(np.zeros((), dtype=np.uint8), (1, *shape))
    else:
        arr = layer_to_file_array(data, meta)[None]
    aff = np.asarray(meta["affine"], dtype=np.float64)
    spacing = meta.get("spacing") or list(np.linalg.norm(aff[:3, : len(shape)], axis=0))
    channel = meta.get("channel")
    to_file = _ornt_list(meta.get("to_file"))
    file_aff = meta.get("file_affine")
    if to_file is not None:
        if len(to_file) != len(shape) or sorted(a for a, _ in to_file) != list(range(len(shape))) \
                or any(f not in (-1, 1) for _, f in to_file):
            raise UserError(f"the layer metadata's to_file {meta.get('to_file')!r} is not an orientation "
                            f"transform of {len(shape)} axes ({meta.get('source')})")
        if file_aff is None or np.asarray(file_aff).shape != (4, 4):
            raise UserError(f"the layer metadata has a to_file transform but no 4x4 file_affine "
                            f"({meta.get('source')}); cannot write in the file's voxel order")
        to_file_arr: np.ndarray | None = np.asarray(to_file, dtype=np.float64)
        file_arr: np.ndarray | None = np.asarray(file_aff, dtype=np.float64)
    else:
        to_file_arr = file_arr = None
    return Image(arr, tuple(spacing), aff, meta.get("source"),
                 (str(channel),) if channel is not None else (), str(meta.get("format") or ""),
                 header=_header_with_codes(meta), to_file=to_file_arr, file_affine=file_arr)


def geometry_kwargs(layer: Any) -> dict[str, Any]:
    """Layer kwargs that put a new layer exactly over ``layer`` (scale, translate, axis_labels, units,
    and a deep copy of its ``seg_explain`` metadata under ``metadata``). Duck-typed: no napari import."""
    kw: dict[str, Any] = {
        "scale": tuple(float(s) for s in layer.scale),
        "translate": tuple(float(t) for t in layer.translate),
    }
    labels = tuple(str(a) for a in getattr(layer, "axis_labels", ()) or ())
    if labels:
        kw["axis_labels"] = labels
    units = tuple(str(u) for u in getattr(layer, "units", ()) or ())
    if units:
        kw["units"] = units
    meta = layer.metadata.get("seg_explain") if isinstance(getattr(layer, "metadata", None), Mapping) else None
    if isinstance(meta, Mapping):
        kw["metadata"] = {"seg_explain": copy.deepcopy(dict(meta))}
    return kw
