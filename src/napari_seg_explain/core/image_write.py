"""Write maps and masks back over a scan: its geometry, its voxel order, its NIfTI codes; all or nothing.

A map computed in the display orientation goes back to the file's voxel order (``Image.to_file``) and is
written with the file's affine (NIfTI keeps the source's sform/qform codes); PNG, TIFF, NRRD and MHA through
SimpleITK. The file appears whole (temporary file, then ``os.replace``) or not at all.
"""

from __future__ import annotations

import operator
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError
from .input_checks import write_error
from .images import _LPS_RAS, _WRITE_EXTS, Image

def write_map(path: str | os.PathLike, array: np.ndarray, like: Image, *, slice_index: int | None = None) -> Path:
    """Atomically write a spatial map or mask (no channel axis) with the geometry of ``like``.

    With a 3-D ``like`` and ``slice_index``, a 2-D ``(I, J)`` array is embedded at
    ``[:, :, slice_index]`` of a volume filled with NaN (float) or 0 (integer/bool).
    """
    p = Path(path).expanduser()
    name = p.name.lower()
    ext = next((e for e in _WRITE_EXTS if name.endswith(e)), None)
    if ext is None:
        raise UserError(f"cannot write '{p.name}': use one of {', '.join(_WRITE_EXTS)}")
    arr = _map_dtype(np.asarray(array))
    shape = like.spatial_shape
    if slice_index is not None and like.spatial_ndim == 3:
        if arr.shape != shape[:2]:
            raise UserError(f"a slice map must have shape {shape[:2]}, got {arr.shape}")
        k = operator.index(slice_index)
        if not 0 <= k < shape[2]:
            raise UserError(f"slice_index {k} is out of range 0..{shape[2] - 1}")
        vol = np.full(shape, np.nan if arr.dtype.kind == "f" else 0, dtype=arr.dtype)
        vol[:, :, k] = arr
        arr = vol
    elif slice_index not in (None, 0):
        raise UserError(f"slice_index {slice_index} given but the reference image is 2-D")
    if arr.shape == (1, *shape):
        arr = arr[0]
    if arr.shape != shape:
        raise UserError(f"the map has shape {arr.shape} but the reference image's spatial shape is {shape}")
    if like.to_file is not None:  # back to the file's voxel order, written with the file's affine
        from nibabel.orientations import apply_orientation

        arr = np.ascontiguousarray(apply_orientation(arr, like.to_file))
        like = Image(like.data[:1, :1, :1, :1], like.spacing, like.file_affine, like.source, ("0",), like.format,
                     like.header)
    if ext == ".png":
        if arr.ndim != 2 or arr.dtype.kind == "f" or (arr.size and not 0 <= arr.min() <= arr.max() <= 65535):
            raise UserError("PNG holds only 2-D integer maps with values 0..65535; write .nii.gz or .tif instead")
        arr = arr.astype(np.uint8 if not arr.size or arr.max() <= 255 else np.uint16, copy=False)
    if not p.parent.is_dir():
        raise UserError(f"cannot write {p}: the folder {p.parent} does not exist; create it first")

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=f".tmp{ext}")
        os.close(fd)
        if ext == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, arr)
        elif ext.startswith(".nii"):
            _write_nifti(tmp, arr, like)
        else:
            import SimpleITK as sitk

            sitk.WriteImage(_to_itk(arr, like), tmp, ext in (".nrrd", ".mha"))
        os.chmod(tmp, (os.stat(p).st_mode & 0o777) if p.is_file() else 0o644)
        os.replace(tmp, p)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(p, exc) from exc
        if isinstance(exc, RuntimeError):
            raise UserError(f"could not write {p}: {exc}; check the output folder and try again") from exc
        raise
    return p


def _map_dtype(arr: np.ndarray) -> np.ndarray:
    """float -> float32; bool -> uint8; integer labels -> uint8/int16 when they fit."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    if arr.dtype.kind not in "iu":
        raise UserError(f"cannot write a map of type {arr.dtype}: use real or integer values")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for t in (np.uint8, np.int16, np.uint16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return arr.astype(t, copy=False)
    return arr


def _write_nifti(tmp: str, arr: np.ndarray, like: Image) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, like.affine)
    img.header.set_xyzt_units("mm")
    hdr = like.header
    if isinstance(hdr, nib.Nifti1Header):  # also Nifti2Header
        for setter, key in ((img.set_sform, "sform_code"), (img.set_qform, "qform_code")):
            code = int(hdr[key])
            if code:
                setter(like.affine, code=code)
    nib.save(img, tmp)


def _to_itk(arr: np.ndarray, like: Image):
    """SimpleITK image of ``arr`` with like's geometry (inverse of ``_from_itk``)."""
    import SimpleITK as sitk

    aff = like.affine if like.spatial_ndim == 3 else like.affine[:, [1, 0, 2, 3]]  # -> ITK (x, y, z)
    norms = np.linalg.norm(aff[:3, :3], axis=0)
    norms[norms == 0] = 1.0
    direction = _LPS_RAS @ aff[:3, :3] / norms
    origin = _LPS_RAS @ aff[:3, 3]
    dim = arr.ndim
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0) if dim == 3 else arr)
    img.SetSpacing([float(s) for s in norms[:dim]])
    img.SetOrigin([float(o) for o in origin[:dim]])
    try:
        img.SetDirection([float(d) for d in direction[:dim, :dim].ravel()])
    except RuntimeError:  # 2-D plane of a non-planar affine: no valid 2x2 direction
        pass
    return img
