"""Read and write medical images together with their geometry.

Axis conventions (every other module relies on them):

* ``Image.data`` is channels-first, ``(C, *spatial)``.
* 3-D volumes are put in the display orientation ``DISPLAY_ORIENTATION`` = ``("P", "L", "S")`` on
  reading (closest voxel axes, flips and transposes only, no resampling): ``data[:, :, :, k]`` is an
  axial slice shown as a radiologist expects it -- anterior at the top, the patient's right on the
  screen's left (radiological convention), ``k`` from inferior to superior. ``read_image(path,
  orientation=None)`` keeps the file's voxel order (NIfTI array order; ITK index order ``(x, y, z)``
  for NRRD/MHA/DICOM). ``Image.to_file`` / ``Image.file_affine`` remember the file's order, and
  :func:`write_map` writes NIfTI/ITK outputs back in it, with the file's affine.
* 2-D images: spatial axes are ``(rows, cols)`` = ITK ``(y, x)``, as a viewer shows a PNG.
* ``affine`` is a 4x4 float64 mapping voxel indices to world RAS+ millimetres (nibabel
  convention; ITK's LPS origin/direction are converted). For 2-D images it acts on
  ``(row, col, 0, 1)``.
* ``spacing`` lists the voxel size per spatial axis, in the same order as the spatial axes.

Nothing here imports Qt or napari; nibabel and SimpleITK are imported when first needed.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageReadError, UserError
from .input_checks import check_fits_in_memory, one_line

__all__ = ["Image", "read_image", "write_map", "spatial_geometry", "SUPPORTED_FORMATS", "DISPLAY_ORIENTATION"]

DISPLAY_ORIENTATION = ("P", "L", "S")  # rows A->P, columns R->L (radiological), slices I->S

SUPPORTED_FORMATS = (
    ".nii, .nii.gz, .mgz/.mgh (FreeSurfer), .hdr/.img (Analyze), .png, .jpg/.jpeg, .tif/.tiff, .bmp, .nrrd/.nhdr, .mha/.mhd, .dcm, .npy, "
    "or a folder holding one DICOM series"
)
_ITK_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
                ".bmp": "bmp", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha",
                ".dcm": "dicom"}
_PICTURE_FORMATS = {"png", "jpeg", "tiff", "bmp"}
#: read with nibabel: NIfTI, FreeSurfer MGH/MGZ, Analyze 7.5 (and NIfTI pairs) .hdr/.img
NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".hdr", ".img")
#: a 4-D file with more volumes than this, or whose header gives a time step, is a time series
MAX_CONTRASTS = 8
_TIME_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_WRITE_EXTS = (".nii.gz", ".nii", ".npy", ".nrrd", ".mha", ".png", ".tif", ".tiff")
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])  # flips x and y; its own inverse


@dataclass(frozen=True, eq=False)
class Image:
    """An image as channels-first data plus its voxel->world geometry (see module docstring)."""

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    source: str | None = None
    channel_names: tuple[str, ...] = ()
    format: str = ""
    header: object | None = None
    to_file: np.ndarray | None = None  # nibabel orientation transform back to the file's voxel order
    file_affine: np.ndarray | None = None  # the file's own affine (when ``to_file`` is set)
    series: str = "contrast"  # what the first axis of a 4-D file is: "contrast" (channels) or "time"
    frame_seconds: float | None = None  # time between volumes of a time series (NIfTI pixdim[4])

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim not in (3, 4):
            raise ValueError(f"Image.data must be (C, H, W) or (C, I, J, K), got shape {data.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Image.affine must be 4x4, got shape {affine.shape}")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != data.ndim - 1:
            raise ValueError(f"Image.spacing needs {data.ndim - 1} values, got {spacing}")
        names = tuple(str(n) for n in self.channel_names) or tuple(str(c) for c in range(data.shape[0]))
        if len(names) != data.shape[0]:
            raise ValueError(f"{len(names)} channel names for {data.shape[0]} channels")
        for field, value in (("data", data), ("affine", affine), ("spacing", spacing), ("channel_names", names)):
            object.__setattr__(self, field, value)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def spatial_ndim(self) -> int:
        return self.data.ndim - 1

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_slices(self) -> int:
        """Size of the last spatial axis for 3-D images, 1 for 2-D ones."""
        return self.spatial_shape[-1] if self.spatial_ndim == 3 else 1

    def slice2d(self, z: int | None = None) -> np.ndarray:
        """A ``(C, H, W)`` float32 copy: slice ``z`` of the last axis (3-D; None = middle), or the whole 2-D image."""
        n = self.n_slices
        if z is None:
            z = n // 2
        z = operator.index(z)
        if not 0 <= z < n:
            raise UserError(f"slice {z} is out of range: this image has {n} slice(s), valid indices are 0..{n - 1}")
        plane = self.data[:, :, :, z] if self.spatial_ndim == 3 else self.data
        return np.array(plane, dtype=np.float32)

    def is_oblique(self) -> bool:
        """True when the voxel axes are not aligned with the world axes (beyond 1e-3)."""
        cols = self.affine[:3, :3]
        norms = np.linalg.norm(cols, axis=0)
        cols = cols[:, norms > 0] / norms[norms > 0]
        return bool(np.any(np.sort(np.abs(cols), axis=0)[:-1] > 1e-3))


# --------------------------------------------------------------------------- reading

def read_image(path: str | os.PathLike, orientation: tuple[str, str, str] | None = DISPLAY_ORIENTATION) -> Image:
    """Read a NIfTI, PNG/JPEG/TIFF/BMP, NRRD, MetaImage, DICOM (file or folder) or .npy image.

    3-D volumes are reoriented to ``orientation`` (default: the display orientation, see the module
    docstring); ``None`` keeps the file's voxel order. 2-D images are never reoriented.
    """
    img = _read_file(path)
    if orientation is None or img.spatial_ndim != 3 or img.format == "npy":
        return img
    return reorient(img, orientation)


def reorient(img: Image, codes: tuple[str, str, str]) -> Image:
    """``img`` with its voxel axes permuted/flipped to the closest match of ``codes`` (no resampling)."""
    from nibabel import orientations as nio

    try:
        current = nio.io_orientation(img.affine)
    except Exception:  # degenerate affine: keep the file order
        return img
    tf = nio.ornt_transform(current, nio.axcodes2ornt(codes))
    if np.array_equal(tf, [[0, 1], [1, 1], [2, 1]]):
        return img
    shape = img.spatial_shape
    if 1 in shape and shape[int(np.nonzero(tf[:, 0] == 2)[0][0])] != 1:
        return img  # a single non-axial plane stored as 3-D: reorienting would make it 1-pixel-wide slices
    data = np.stack([nio.apply_orientation(c, tf) for c in img.data])
    affine = img.affine @ nio.inv_ornt_aff(tf, shape)
    spacing = [0.0] * 3
    for axis, (new_axis, _flip) in enumerate(tf):  # input axis -> output axis
        spacing[int(new_axis)] = img.spacing[axis]
    return Image(np.ascontiguousarray(data), spacing, affine, img.source, img.channel_names, img.format,
                 img.header, to_file=nio.ornt_transform(nio.axcodes2ornt(codes), current),
                 file_affine=img.affine, series=img.series, frame_seconds=img.frame_seconds)


def _read_file(path: str | os.PathLike) -> Image:
    """The file as stored (voxel order of the file)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageReadError(f"image not found: {p}; check the path (supported formats: {SUPPORTED_FORMATS})")
    name = p.name.lower()
    try:
        if p.is_dir():
            return _read_dicom_dir(p)
        if name.endswith(NIBABEL_SUFFIXES):
            return _read_nifti(p)
        if name.endswith(".npy"):
            return _read_npy(p)
        if p.suffix.lower() in _ITK_FORMATS:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(p))
            reader.ReadImageInformation()  # the header alone: refuse what would not fit before reading the pixels
            check_fits_in_memory(p, reader.GetSize(), 4 * reader.GetNumberOfComponents())
            return _from_itk(reader.Execute(), str(p), _ITK_FORMATS[p.suffix.lower()])
    except ImageReadError:
        raise
    except Exception as exc:  # library errors: turn into one actionable message
        raise ImageReadError(
            f"could not read {p} ({one_line(exc)}): the file may be damaged, truncated "
            f"or not what its extension says; re-export it as one of {SUPPORTED_FORMATS}"
        ) from exc
    raise ImageReadError(f"unknown image type '{p.name}': save it as one of {SUPPORTED_FORMATS}")


def _float32_or_int(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise ImageReadError(f"unsupported pixel type {arr.dtype}: expected integer or real-valued pixels")


def _read_nifti(p: Path) -> Image:
    import nibabel as nib

    img = nib.load(str(p))
    check_fits_in_memory(p, img.shape, img.get_data_dtype().itemsize)
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
    if np.issubdtype(img.get_data_dtype(), np.integer) and not scaled:
        arr = np.asarray(proxy)
    else:
        arr = img.get_fdata(dtype=np.float32)
    while arr.ndim > 4 and arr.shape[3] == 1:  # e.g. (X, Y, Z, 1, C) vector images
        arr = arr[:, :, :, 0]
    if arr.ndim not in (2, 3, 4):
        raise ImageReadError(f"{p.name} has {arr.ndim} dimensions {arr.shape}; save one 2-D, 3-D or 4-D "
                             "(channels last) image per file")
    data = np.moveaxis(arr, -1, 0) if arr.ndim == 4 else arr[None]
    nsp = data.ndim - 1
    all_zooms = tuple(float(z) for z in img.header.get_zooms())
    zooms = all_zooms[:nsp]
    fmt = {"Nifti1Image": "nifti", "Nifti2Image": "nifti", "Nifti1Pair": "nifti", "Nifti2Pair": "nifti",
           "MGHImage": "mgh"}.get(type(img).__name__, "analyze")
    series, step = "contrast", None
    if arr.ndim == 4:
        units = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "unknown"
        step = all_zooms[3] * _TIME_SECONDS[units] if units in _TIME_SECONDS and len(all_zooms) > 3 else None
        if (step and step > 0) or data.shape[0] > MAX_CONTRASTS:
            series = "time"
    return Image(np.ascontiguousarray(_float32_or_int(data)), zooms, img.affine, str(p), format=fmt,
                 header=img.header, series=series, frame_seconds=step if series == "time" and step else None)


def _read_npy(p: Path) -> Image:
    arr = np.load(str(p), allow_pickle=False)
    if arr.ndim == 2:
        data = arr[None]
    elif arr.ndim == 3:
        data = arr if arr.shape[0] <= 4 else arr[None]
    elif arr.ndim == 4:
        data = arr
    else:
        raise ImageReadError(f"{p.name} holds an array of shape {arr.shape}; expected (H, W), (C, H, W), "
                             f"(I, J, K) or (C, I, J, K): save one image per file")
    return Image(_float32_or_int(data), (1.0,) * (data.ndim - 1), np.eye(4), str(p), format="npy")


def _read_dicom_dir(p: Path) -> Image:
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))
    if not series:
        raise ImageReadError(f"the folder {p} holds no DICOM series; point to a folder of DICOM slices, "
                             f"or to an image file ({SUPPORTED_FORMATS})")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), series[0]))
    return _from_itk(reader.Execute(), str(p), "dicom")


def _from_itk(img, source: str, fmt: str) -> Image:
    """Convert a SimpleITK image to an ``Image`` (axis order and LPS->RAS, see module docstring)."""
    import SimpleITK as sitk

    dim, ncomp = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
    if dim not in (2, 3):
        raise ImageReadError(f"{Path(source).name} is a {dim}-D image; save one 2-D or 3-D image per file")
    arr = sitk.GetArrayFromImage(img)  # (y, x[, c]) or (z, y, x[, c])
    if ncomp == 1:
        arr = arr[..., None]
    spacing, origin = np.ones(3), np.zeros(3)
    direction = np.eye(3)
    spacing[:dim], origin[:dim] = img.GetSpacing(), img.GetOrigin()
    direction[:dim, :dim] = np.reshape(img.GetDirection(), (dim, dim))
    affine = np.eye(4)  # acts on ITK (x, y, z)
    affine[:3, :3] = _LPS_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_RAS @ origin
    if dim == 3 and arr.shape[0] == 1 and fmt in _PICTURE_FORMATS:
        arr, dim = arr[0], 2
    if dim == 3:
        data = arr.transpose(3, 2, 1, 0)  # (c, x, y, z)
        sp = tuple(spacing)
    else:
        data = arr.transpose(2, 0, 1)  # (c, rows, cols)
        affine = affine[:, [1, 0, 2, 3]]  # (row, col, 0) = ITK (y, x, z)
        sp = (spacing[1], spacing[0])
    names: tuple[str, ...] = ()
    if fmt in _PICTURE_FORMATS and ncomp in (2, 4):
        data = data[:-1]  # drop alpha
    if fmt == "bmp" and data.shape[0] == 3 and _bmp_bits(source) <= 8 and (data == data[:1]).all():
        data = data[:1]  # ITK expands a gray palette BMP to RGB
    if fmt in _PICTURE_FORMATS and data.shape[0] == 3:
        names = ("R", "G", "B")
    return Image(np.ascontiguousarray(_float32_or_int(data)), sp, affine, source, names, fmt)


def _bmp_bits(source: str) -> int:
    with open(source, "rb") as f:
        head = f.read(30)
    return int.from_bytes(head[28:30], "little") if len(head) == 30 else 24


def stack_channels(images: "list[Image]", names: "list[str] | None" = None) -> Image:
    """Co-registered images (the same voxel grid) as one multi-channel Image, channels in the given order (the
    model card's contrast order); ``names`` name the channels (default: each image's own names)."""
    first = images[0]
    for img in images[1:]:
        if img.spatial_shape != first.spatial_shape or not np.allclose(img.affine, first.affine, atol=1e-3):
            raise UserError(f"{img.source or 'a contrast'} is not on the voxel grid of {first.source or 'the image'} "
                            f"({img.spatial_shape} vs {first.spatial_shape}): give co-registered contrasts, resampled "
                            "to one grid")
    data = np.concatenate([np.asarray(img.data, dtype=np.float32) for img in images])
    labels = list(names) if names else [n for img in images for n in img.channel_names]
    return Image(data, first.spacing, first.affine, first.source, tuple(labels), first.format, first.header,
                 to_file=first.to_file, file_affine=first.file_affine)


# --------------------------------------------------------------------------- writing
def write_map(path: str | os.PathLike, array: np.ndarray, like: Image, *, slice_index: int | None = None) -> Path:
    """Atomically write a spatial map or mask with the geometry of ``like`` (see :mod:`.image_write`)."""
    from .image_write import write_map as write

    return write(path, array, like, slice_index=slice_index)


def spatial_geometry(img: Image) -> dict:
    """JSON-serialisable geometry of ``img`` for result metadata."""
    import nibabel as nib

    try:
        codes = list(nib.aff2axcodes(img.affine))[: img.spatial_ndim]
    except Exception:  # degenerate affine
        codes = [None] * img.spatial_ndim
    return {
        "spatial_shape": list(img.spatial_shape),
        "spacing": [float(s) for s in img.spacing],
        "affine": [[float(v) for v in row] for row in img.affine],
        "orientation": codes,
        "source": img.source,
        "format": img.format,
        "channel_names": list(img.channel_names),
        "file_affine": None if img.file_affine is None else [[float(v) for v in row] for row in img.file_affine],
    }
