"""Save the result layers of a session to one folder, and read them back.

Folder layout::

    results.json                 index: what each file is, the layer geometry to rebuild it, metadata
    pdcr.nii.gz (+ pdcr.json, pdcr_roi.nii.gz)                 Explanation.save: map, sidecar, RoI
    misure.nii.gz (+ misure.json, misure_sufficient_region...)  idem for MiSuRe
    <model> segmentation.nii.gz                                 segmentation Labels layers

Maps are NIfTI with the source file's geometry (a slice map embedded in a volume at its slice) when the
image layer's ``metadata['seg_explain']`` gives the file's affine and spatial shape (reader contract:
layer ``(slices, rows, cols)`` = file ``(rows, cols, slices)``); otherwise ``.npy`` in layer order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError
from ..layers import SliceGeometry

if TYPE_CHECKING:
    from ...core.images import Image
    from ...core.results import Explanation

INDEX = "results.json"
FORMAT = "napari-seg-explain results"


def like_image(geom: SliceGeometry) -> "Image | None":
    """A geometry-only ``Image`` of the source file (for NIfTI output), or None when it is not known.

    Known when the source layer's ``metadata['seg_explain']`` (the reader's contract, see
    :mod:`napari_seg_explain.napari.geometry`) has the file's ``affine``, ``spatial_shape`` and an
    ``axis_order`` that puts the file's last axis first (so the explained plane ``layer.data[z]`` is
    ``file[:, :, z]``) and a layer shape equal to the source layer's.
    """
    from ..geometry import image_from_metadata

    meta = geom.source_metadata or {}
    if not {"affine", "spatial_shape"} <= meta.keys():
        return None
    try:
        shp = tuple(int(s) for s in meta["spatial_shape"])
        order = tuple(int(a) for a in meta.get("axis_order") or ((2, 0, 1) if len(shp) == 3 else (0, 1)))
        if np.asarray(meta["affine"], dtype=float).shape != (4, 4):
            return None
    except (TypeError, ValueError):
        return None
    if order != ((2, 0, 1) if geom.is_volume else (0, 1)) or tuple(shp[a] for a in order) != tuple(geom.shape):
        return None
    return image_from_metadata(dict(meta, axis_order=list(order)))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip() or "layer"


def save_results(folder: str | Path, explanations: list[tuple["Explanation", SliceGeometry, list[str]]],
                 segmentations: list[tuple[np.ndarray, dict[str, Any], SliceGeometry]] = ()) -> Path:
    """Write every explanation (map, extra maps, RoI, sidecar) and segmentation, plus ``results.json``.

    ``explanations``: ``(Explanation, geometry, layer names)``; ``segmentations``: ``(layer data, layer
    metadata, geometry)``. Returns the index path.
    """
    from ...core.images import write_map
    from ...core.results import _jsonable, now_iso

    folder = Path(folder)
    if not explanations and not segmentations:
        raise UserError("there are no results to save yet: run PdCR or MiSuRe (or segment) first")
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"format": FORMAT, "version": 1, "created": now_iso(), "explanations": [],
                             "segmentations": []}
    for expl, geom, names in explanations:
        like = like_image(geom)
        fname = f"{expl.method}{'.nii.gz' if like is not None else '.npy'}"
        files = expl.save(folder / fname, like=like, slice_index=geom.slice_index if like is not None else None)
        index["explanations"].append({"method": expl.method, "file": fname, "files": [f.name for f in files],
                                      "layers": names, "geometry": geom.to_dict(), "stats": expl.stats})
    for data, meta, geom in segmentations:
        like = like_image(geom)
        name = meta.get("name", "segmentation")
        fname = _safe(name) + (".nii.gz" if like is not None else ".npy")
        arr = np.asarray(data)
        if like is not None:
            write_map(folder / fname, np.moveaxis(arr, 0, -1) if geom.is_volume else arr, like)
        else:
            np.save(folder / fname, arr)
        index["segmentations"].append({"name": name, "file": fname, "geometry": geom.to_dict(),
                                       "metadata": meta.get("metadata", {})})
    path = folder / INDEX
    tmp = folder / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(_jsonable(index), indent=2))
    tmp.replace(path)
    return path


def open_results(folder: str | Path) -> tuple[list[tuple["Explanation", SliceGeometry]],
                                              list[tuple[np.ndarray, str, SliceGeometry, dict[str, Any]]]]:
    """Read a folder written by :func:`save_results`: explanations and segmentations with their geometry."""
    from ...core.results import Explanation

    folder = Path(folder)
    path = folder / INDEX if folder.is_dir() else folder
    if not path.is_file():
        raise UserError(f"{folder} holds no {INDEX}: choose a folder written by 'Save results'")
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if index.get("format") != FORMAT:
        raise UserError(f"{path} is not a napari-seg-explain results index")
    base = path.parent
    expls = []
    for entry in index.get("explanations", []):
        expl = Explanation.load(base / entry["file"])
        expls.append((expl, SliceGeometry.from_dict(entry["geometry"])))
    segs = []
    for entry in index.get("segmentations", []):
        geom = SliceGeometry.from_dict(entry["geometry"])
        f = base / entry["file"]
        if f.name.endswith(".npy"):
            arr = np.load(f)
        else:
            import nibabel as nib

            arr = np.asarray(nib.load(str(f)).dataobj)
            arr = np.moveaxis(arr, -1, 0) if geom.is_volume else arr
        segs.append((arr, entry["name"], geom, entry.get("metadata", {})))
    return expls, segs
