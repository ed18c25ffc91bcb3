"""npe2 reader: NIfTI, PNG/JPEG/TIFF/BMP, NRRD, MetaImage, DICOM files and DICOM folders -> napari layers.

Layers follow the contract in :mod:`napari_seg_explain.napari.geometry`:

* volumes are read in the display orientation (``core.images.read_image``'s default: voxel axes
  permuted/flipped, never resampled, whatever the file's voxel order -- RAS/LAS NIfTI, LPS DICOM/NRRD/MHA,
  sagittal or coronal stacks) and are ``(slices, rows, cols)``: they open axial, anterior at the top, the
  patient's right on the screen's left (radiological), slices inferior to superior, with ``scale`` /
  ``translate`` from the voxel spacing and origin, ``units`` mm and ``axis_labels``
  ``("I→S", "A→P", "R→L")``; the metadata keeps the file's affine and voxel order, so the writer writes
  layers back as the file was stored;
* 2-D images are ``(rows, cols)``; RGB pictures are ``rgb=True`` layers ``(rows, cols, 3)``;
* a multi-contrast file (a 4-D NIfTI with C > 1 volumes) opens as **one image layer per contrast**, named
  ``"<stem> [<channel name>]"`` (the channel name is the volume index for NIfTI: ``"t1_t2 [0]"``,
  ``"t1_t2 [1]"``), all with the same geometry;
* a file whose name contains ``label``, ``mask`` or ``seg`` (any case) and that holds integer values opens
  as a Labels layer; anything else as a gray Image layer with contrast limits at the 0.5 and 99.5
  percentiles;
* every layer carries ``metadata["seg_explain"]`` (:func:`~.geometry.seg_explain_metadata`);
* an oblique affine gives an :class:`~.geometry.ObliqueAffineWarning` (napari shows it as a notification).

``get_reader`` returns None for paths it does not handle (so napari can try other readers); a file it
claims but cannot read raises :class:`~napari_seg_explain.core.errors.ImageReadError`, which napari shows.
The reader never writes anything.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ImageReadError
from .geometry import (
    PICTURE_FORMATS,
    ObliqueAffineWarning,
    file_to_layer_array,
    layer_axis_labels,
    layer_axis_order,
    oblique_message,
    scale_translate,
    seg_explain_metadata,
)

__all__ = ["get_reader", "read_layers", "EXTENSIONS", "is_label_name"]

LayerData = tuple[Any, dict[str, Any], str]

#: file name endings the reader claims (lower case); folders are claimed when they hold DICOM files
EXTENSIONS = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp",
              ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
_LABEL_WORDS = re.compile(r"label|mask|seg", re.IGNORECASE)
_NIFTI_UNITS = {"mm": "mm", "micron": "micrometer", "meter": "m"}
_MAX_PERCENTILE_SAMPLES = 2_000_000
_DICOM_PROBE_FILES = 64


def get_reader(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Callable[..., list[LayerData]] | None:
    """npe2 ``get_reader``: a function reading ``path`` (one path or a list), or None if not ours."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_claims(p) for p in paths):
        return None
    return read_layers


def _claims(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.is_dir():
        return _looks_like_dicom_dir(p)
    return p.name.lower().endswith(EXTENSIONS)


def _looks_like_dicom_dir(folder: Path) -> bool:
    """Cheap check before GDCM scans the folder: a ``.dcm`` file or the DICM magic in the first files."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    probed = 0
    for entry in entries:
        if not entry.is_file():
            continue
        if entry.name.lower().endswith(".dcm"):
            return True
        if probed >= _DICOM_PROBE_FILES:
            break
        probed += 1
        try:
            with open(entry.path, "rb") as f:
                head = f.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM":
            return True
    return False


def read_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Read one path (file or DICOM folder) or a list of paths into napari layer data tuples."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(_read_one(Path(p)))
    return layers


def is_label_name(path: str | os.PathLike) -> bool:
    """True when the file (or folder) name says it holds labels: ``label``, ``mask`` or ``seg``."""
    return bool(_LABEL_WORDS.search(Path(path).name))


def _stem(p: Path) -> str:
    name = p.name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return name


def _read_one(p: Path) -> list[LayerData]:
    from ..core.images import DISPLAY_ORIENTATION, read_image

    img = read_image(p, orientation=DISPLAY_ORIENTATION)  # raises ImageReadError with an actionable message
    try:
        return _to_layers(img, p)
    except ImageReadError:
        raise
    except Exception as exc:  # never a bare traceback for a file we claimed
        raise ImageReadError(f"could not turn {p} into napari layers: {type(exc).__name__}: {exc}") from exc


def _to_layers(img: Any, p: Path) -> list[LayerData]:
    stem = _stem(p)
    fmt = img.format
    nsp = img.spatial_ndim
    order = layer_axis_order(nsp)
    base = seg_explain_metadata(img)
    scale, translate = scale_translate(img.affine, img.spacing, order)
    common: dict[str, Any] = {"scale": scale, "translate": translate}
    if fmt in PICTURE_FORMATS:
        common["units"] = ("pixel",) * nsp
    else:
        common["units"] = (_units(img),) * nsp
        labels = layer_axis_labels(img.affine, order)
        if labels is not None:
            common["axis_labels"] = labels
    if base["oblique"]:
        warnings.warn(oblique_message(p), ObliqueAffineWarning, stacklevel=3)

    if fmt in PICTURE_FORMATS and nsp == 2 and img.n_channels == 3:  # RGB picture
        data = np.ascontiguousarray(np.moveaxis(img.data, 0, -1))
        meta = dict(base, channel=None)
        return [(data, dict(common, name=stem, rgb=True, metadata={"seg_explain": meta}), "image")]

    as_labels = is_label_name(p)
    layers: list[LayerData] = []
    multi = img.n_channels > 1
    for c in range(img.n_channels):
        channel = img.channel_names[c] if multi else None
        name = f"{stem} [{channel}]" if multi else stem
        spatial = img.data[c]
        data = np.ascontiguousarray(file_to_layer_array(spatial, order))
        meta = {"seg_explain": dict(base, channel=channel)}
        labels_data = _as_label_array(data) if as_labels else None
        if labels_data is not None:
            layers.append((labels_data, dict(common, name=name, metadata=meta), "labels"))
        else:
            kwargs = dict(common, name=name, metadata=meta, colormap="gray",
                          contrast_limits=_contrast_limits(data))
            if nsp == 2:
                kwargs["rgb"] = False
            layers.append((data, kwargs, "image"))
    return layers


def _units(img: Any) -> str:
    header = getattr(img, "header", None)
    if img.format == "nifti" and header is not None and hasattr(header, "get_xyzt_units"):
        return _NIFTI_UNITS.get(header.get_xyzt_units()[0], "mm")  # 'unknown' -> mm, the usual meaning
    return "mm"


def _as_label_array(data: np.ndarray) -> np.ndarray | None:
    """Integer data as is; float data holding only whole numbers as int32; anything else None."""
    if data.dtype.kind in "iu":
        return data
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind == "f" and data.size and np.isfinite(data).all():
        rounded = np.rint(data)
        if np.array_equal(rounded, data) and np.abs(rounded).max() < 2**31:
            return rounded.astype(np.int32)
    return None


def _contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """0.5 and 99.5 percentiles of the finite values (a strided sample of big volumes)."""
    flat = data.reshape(-1)
    if flat.size > _MAX_PERCENTILE_SAMPLES:
        flat = flat[:: int(np.ceil(flat.size / _MAX_PERCENTILE_SAMPLES))]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(flat, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = float(flat.min()), float(flat.max())
        if not hi > lo:
            hi = lo + 1.0
    return (lo, hi)
