"""npe2 single-layer writer: an image or labels layer -> NIfTI (.nii / .nii.gz) with its source geometry.

A layer with ``metadata["seg_explain"]`` (opened by this plugin's reader, or a result layer that copied
that entry) is written in the source file's voxel order with the source file's true affine -- oblique ones
included: the layer is moved back to the Image order (``axis_order``), then ``core.images.write_map``
undoes the reader's reorientation to the display orientation (``to_file``) and writes ``file_affine`` --
so the map or mask overlays the original scan in any other tool, voxel for voxel. A layer without it is
written as it is (axes in layer order) with a diagonal affine from the layer's ``scale`` and
``translate``. Writing is atomic (a temporary file in the same folder, then a rename): an existing file is
either replaced whole or left as it was. The layer's data is never modified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from .geometry import image_from_metadata, layer_to_file_array

__all__ = ["write_layer", "NIFTI_EXTENSIONS"]

NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def write_layer(path: str | os.PathLike, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: write ``data`` as NIfTI at ``path`` (``.nii.gz`` added if missing).

    Returns ``[path]``. Raises ``UserError`` for RGB layers, for layers whose shape no longer matches
    their source file, and for layers without source metadata that are not 2-D or 3-D.
    """
    from ..core.images import Image, write_map

    p = Path(path).expanduser()
    if not p.name.lower().endswith(NIFTI_EXTENSIONS):
        p = p.with_name(p.name + ".nii.gz")
    attributes = attributes or {}
    if attributes.get("rgb"):
        raise UserError(f"cannot write the RGB layer '{attributes.get('name', '')}' as a NIfTI map; "
                        "save it as PNG or TIFF with napari's built-in writer")
    if attributes.get("multiscale"):
        data = data[0]
    arr = np.asarray(data)
    metadata = attributes.get("metadata") or {}
    meta = metadata.get("seg_explain") if isinstance(metadata, dict) else None
    if isinstance(meta, dict) and {"affine", "spatial_shape", "axis_order"} <= meta.keys():
        write_map(p, layer_to_file_array(arr, meta), image_from_metadata(meta))
        return [str(p)]

    if arr.ndim not in (2, 3):
        raise UserError(f"cannot write the {arr.ndim}-D layer '{attributes.get('name', '')}' as a NIfTI map: "
                        "only 2-D and 3-D layers are supported without source metadata")
    nd = arr.ndim
    scale = np.asarray(attributes.get("scale", np.ones(nd)), dtype=np.float64)[-nd:]
    translate = np.asarray(attributes.get("translate", np.zeros(nd)), dtype=np.float64)[-nd:]
    affine = np.eye(4)
    affine[np.arange(nd), np.arange(nd)] = scale
    affine[:nd, 3] = translate
    like = Image(np.broadcast_to(np.zeros((), np.uint8), (1, *arr.shape)), tuple(np.abs(scale)), affine,
                 format="nifti")
    write_map(p, arr, like)
    return [str(p)]
