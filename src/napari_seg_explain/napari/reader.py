"""npe2 reader: NIfTI, FreeSurfer MGH/MGZ, Analyze, PNG/JPEG/TIFF/BMP, NRRD, MetaImage, DICOM -> napari layers.

Layers follow the contract in :mod:`napari_seg_explain.napari.geometry`:

* volumes are read in the display orientation (``core.images.read_image``'s default: voxel axes
  permuted/flipped, never resampled, whatever the file's voxel order -- RAS/LAS NIfTI, LPS DICOM/NRRD/MHA,
  sagittal or coronal stacks) and are ``(slices, rows, cols)``: they open axial, anterior at the top, the
  patient's right on the screen's left (radiological), slices inferior to superior, with ``scale`` /
  ``translate`` from the voxel spacing and origin, ``units`` mm and ``axis_labels``
  ``("I→S", "A→P", "R→L")``; the metadata keeps the file's affine and voxel order, so the writer writes
  layers back as the file was stored;
* 2-D images are ``(rows, cols)``; RGB pictures are ``rgb=True`` layers ``(rows, cols, 3)``;
* a multi-contrast file (a 4-D NIfTI with a few volumes, 8 at most, and no time step in its header) opens as
  **one image layer per contrast**, named ``"<stem> [<channel name>]"`` (the channel name is the volume
  index for NIfTI: ``"t1_t2 [0]"``, ``"t1_t2 [1]"``), all with the same geometry; a **time series** (a time
  step in the header, or more than 8 volumes: fMRI, DWI, perfusion) opens as **one 4-D layer**
  ``(volumes, slices, rows, cols)`` whose first axis is named ``t`` (scale: the time step in seconds) or
  ``volume``;
* a file opens as a Labels layer when its name has a label word as a whole token (the name split at
  ``_ - . +`` and spaces, any case: ``label(s)``, ``mask(s)``, ``seg``, ``segmentation``, ``dseg``, ``aseg``,
  ``gt``, ...: ``brain_mask.nii.gz``, ``sub-01_dseg.nii.gz``, ``Tumour-SEG.nii``, but not
  ``sub-01_T1w_masked.nii.gz``) **and** it holds integers (or whole-number floats) with at most 256
  distinct values (a CT named ``ct_pre_segmentation.nii.gz`` stays an image); anything else opens as a gray
  Image layer with contrast limits at the 0.5 and 99.5 percentiles;
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

__all__ = ["get_reader", "read_layers", "EXTENSIONS", "is_label_name", "has_few_values"]

LayerData = tuple[Any, dict[str, Any], str]

#: file name endings the reader claims (lower case); folders are claimed when they hold DICOM files
EXTENSIONS = (".nii.gz", ".nii", ".mgz", ".mgh", ".hdr", ".img", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp",
              ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
#: whole name tokens that say a file holds labels (BIDS ``dseg``, FreeSurfer ``aseg``, ground truth ``gt``, ...)
LABEL_TOKENS = frozenset({"label", "labels", "labelmap", "lbl", "mask", "masks", "seg", "segs", "segmentation",
                          "segmentations", "dseg", "aseg", "gt", "groundtruth", "annotation", "annotations"})
_TOKEN_SPLIT = re.compile(r"[^0-9a-zA-Z]+")
#: a Labels layer holds at most this many distinct values (an integer scan has many more)
MAX_LABEL_VALUES = 256
_MAX_SAMPLE = 1_000_000
_CHUNK = 4_000_000
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
    """True when a whole token of the file (or folder) name is a label word (:data:`LABEL_TOKENS`).

    The name is split at every character that is not a letter or digit: ``brain_mask.nii.gz`` and
    ``sub-01_desc-aseg_dseg.nii.gz`` say labels, ``sub-01_T1w_masked.nii.gz`` and ``segmental.nii`` do not.
    """
    return any(tok.lower() in LABEL_TOKENS for tok in _TOKEN_SPLIT.split(Path(path).name))


def has_few_values(data: np.ndarray, limit: int = MAX_LABEL_VALUES) -> bool:
    """True when integer ``data`` holds at most ``limit`` distinct values.

    Cheap for scans: a strided sample of at most a million values is checked first (an integer CT or MR
    scan has hundreds of distinct values in any sample); only data that passes is counted in full, in
    chunks, with ``bincount`` when the value range is small (8/16-bit labels) and ``unique`` otherwise.
    """
    if data.dtype.kind == "b" or (data.dtype.kind in "iu" and data.dtype.itemsize == 1 and limit >= 256):
        return True
    if data.dtype.kind not in "iu":
        return False
    flat = data.reshape(-1)
    if flat.size == 0:
        return True
    step = max(1, flat.size // _MAX_SAMPLE)
    if np.unique(flat[::step]).size > limit:
        return False
    lo, hi = int(flat.min()), int(flat.max())
    seen: np.ndarray | None = None
    if hi - lo < 1 << 20:
        counts = np.zeros(hi - lo + 1, dtype=np.int64)
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start:start + _CHUNK].astype(np.int64) - lo
            counts[: int(chunk.max()) + 1] += np.bincount(chunk)
            if np.count_nonzero(counts) > limit:
                return False
        return True
    for start in range(0, flat.size, _CHUNK):
        u = np.unique(flat[start:start + _CHUNK])
        seen = u if seen is None else np.union1d(seen, u)
        if seen.size > limit:
            return False
    return True


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

    if img.series == "time" and nsp == 3:
        return [_time_series_layer(img, stem, common, base, order)]
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


def _time_series_layer(img: Any, stem: str, common: dict[str, Any], base: dict[str, Any],
                       order: Any) -> LayerData:
    """One 4-D image layer ``(volumes, slices, rows, cols)``: napari's slider walks the volumes."""
    data = np.stack([np.asarray(file_to_layer_array(img.data[c], order)) for c in range(img.n_channels)])
    step = img.frame_seconds
    labels = common.get("axis_labels")
    kwargs = dict(common, name=stem, colormap="gray", contrast_limits=_contrast_limits(data),
                  scale=(float(step) if step else 1.0, *common["scale"]), translate=(0.0, *common["translate"]),
                  units=("s" if step else "pixel", *common["units"]),
                  metadata={"seg_explain": dict(base, channel=None, series="time", n_volumes=int(img.n_channels),
                                                frame_seconds=step)})
    if labels is not None:
        kwargs["axis_labels"] = ("t" if step else "volume", *labels)
    return np.ascontiguousarray(data), kwargs, "image"


def _units(img: Any) -> str:
    header = getattr(img, "header", None)
    if img.format == "nifti" and header is not None and hasattr(header, "get_xyzt_units"):
        return _NIFTI_UNITS.get(header.get_xyzt_units()[0], "mm")  # 'unknown' -> mm, the usual meaning
    return "mm"


def _as_label_array(data: np.ndarray) -> np.ndarray | None:
    """Label data: integers with few distinct values (:func:`has_few_values`) as they are, booleans as uint8,
    float data holding only whole numbers (and few of them) as int32; anything else (a scan) None."""
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind in "iu":
        return data if has_few_values(data) else None
    if data.dtype.kind == "f" and data.size and np.isfinite(data).all():
        step = max(1, data.size // _MAX_SAMPLE)
        sample = data.reshape(-1)[::step]
        if not np.array_equal(np.rint(sample), sample) or np.unique(sample).size > MAX_LABEL_VALUES:
            return None  # cheap rejection of real-valued maps and scans
        rounded = np.rint(data)
        if np.array_equal(rounded, data) and np.abs(rounded).max() < 2**31:
            labels = rounded.astype(np.int32)
            return labels if has_few_values(labels) else None
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
