"""Save every run of a session to one folder, and read them all back.

Folder layout::

    results.json                           index: the runs (id, method, label, files, layer geometry, stats)
                                           and the segmentations
    <run id>_<method>_map.nii.gz           one file set per run (Explanation.save): the map, its sidecar
    <run id>_<method>_map.json             <run id>_<method>_map.json, its RoI <...>_map_roi.nii.gz and
    <run id>_<method>_map_<key>.nii.gz     further maps (e.g. a sufficient region)
    <model> segmentation.nii.gz            segmentation Labels layers

Maps are NIfTI with the source file's geometry (a slice map embedded in a volume at its slice) when the
image layer's ``metadata['seg_explain']`` gives the file's affine and spatial shape (reader contract:
layer ``(slices, rows, cols)`` = file ``(rows, cols, slices)``); otherwise ``.npy`` in layer order.

Saving into a folder that already holds results leaves it consistent: the files the previous ``results.json``
listed that this save does not write again are removed (after the new index is in place); files no
``results.json`` listed are never touched. Asking before writing into a non-empty folder is the caller's job
(:func:`folder_entries`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError
from ..slice_geometry import SliceGeometry

if TYPE_CHECKING:
    from napari.layers import Layer

    from ...core.images import Image
    from ...core.results import Explanation
    from .run_store import RunRecord

INDEX = "results.json"
FORMAT = "napari-seg-explain results"
VERSION = 2  # 2: "runs" (one file set per run); 1: "explanations" (one per method), still read


@dataclass
class SavedRun:
    """A run read back: its explanation, where its layers go and its label (``RoI 1 · white_matter``)."""

    expl: "Explanation"
    geom: SliceGeometry
    label: str = ""


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


def segmentation_entry(layer: "Layer") -> tuple[np.ndarray, dict[str, Any], SliceGeometry]:
    """A segmentation Labels layer as :func:`save_results` takes it: ``(data, {name, metadata}, geometry)``."""
    meta = (layer.metadata or {}).get("seg_explain") or {}
    shape = tuple(layer.data.shape)
    geom = dataclasses.replace(SliceGeometry.from_layer(layer, 0 if len(shape) == 3 else None),
                               source_layer=meta.get("source_layer", ""),
                               source_metadata={k: v for k, v in meta.items() if k not in ("result", "slice_index")})
    return np.asarray(layer.data), {"name": layer.name, "metadata": layer.metadata}, geom


def folder_entries(folder: str | Path) -> list[str]:
    """The names in ``folder`` (empty when it does not exist yet): a non-empty folder asks before a save."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def listed_files(folder: str | Path) -> set[str]:
    """The file names an existing ``results.json`` in ``folder`` lists (its runs' and segmentations' files),
    plain names inside the folder only; empty when there is no readable index of ours."""
    try:
        index = json.loads((Path(folder) / INDEX).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return set()
    names: set[str] = set()
    for entry in [*index.get("runs", []), *index.get("explanations", []), *index.get("segmentations", [])]:
        if isinstance(entry, dict):
            files = entry.get("files") if isinstance(entry.get("files"), list) else []
            names.update(str(f) for f in [entry.get("file"), *files] if f)
    return {n for n in names if n == Path(n).name and n not in ("", ".", "..", INDEX)}


def save_results(folder: str | Path, runs: list["RunRecord"],
                 segmentations: list[tuple[np.ndarray, dict[str, Any], SliceGeometry]] = ()) -> Path:
    """Write every run (map, extra maps, RoI, sidecar) and segmentation, plus ``results.json``.

    ``runs``: records with ``run_id``, ``method``, ``label``, ``expl``, ``geom`` and ``layer_names()``;
    ``segmentations``: ``(layer data, {name, metadata}, geometry)``. Returns the index path. The files a
    previous ``results.json`` of the folder listed and this save does not write are removed.
    """
    from ...core.images import write_map
    from ...core.results import _jsonable, now_iso

    folder = Path(folder)
    if not runs and not segmentations:
        raise UserError("there are no results to save yet: explain a RoI (or segment) first")
    folder.mkdir(parents=True, exist_ok=True)
    previous = listed_files(folder)
    written: set[str] = set()
    index: dict[str, Any] = {"format": FORMAT, "version": VERSION, "created": now_iso(), "runs": [],
                             "segmentations": []}
    for rec in runs:
        expl, geom = rec.expl, rec.geom
        like = like_image(geom)
        fname = f"{_safe(rec.run_id)}_{expl.method}_map{'.nii.gz' if like is not None else '.npy'}"
        files = expl.save(folder / fname, like=like, slice_index=geom.slice_index if like is not None else None)
        written.update(f.name for f in files)
        index["runs"].append({"run_id": rec.run_id, "method": expl.method, "label": rec.label, "run": expl.run,
                              "file": fname, "files": [f.name for f in files], "layers": rec.layer_names(),
                              "geometry": geom.to_dict(), "stats": expl.stats})
    for data, meta, geom in segmentations:
        like = like_image(geom)
        name = meta.get("name", "segmentation")
        fname = _safe(name) + (".nii.gz" if like is not None else ".npy")
        arr = np.asarray(data)
        if like is not None:
            write_map(folder / fname, np.moveaxis(arr, 0, -1) if geom.is_volume else arr, like)
        else:
            np.save(folder / fname, arr)
        written.add(fname)
        index["segmentations"].append({"name": name, "file": fname, "geometry": geom.to_dict(),
                                       "metadata": meta.get("metadata", {})})
    path = folder / INDEX
    tmp = folder / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(_jsonable(index), indent=2))
    tmp.replace(path)
    for name in sorted(previous - written):  # listed by the previous index, not written now: stale
        stale = folder / name
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    return path


def open_results(folder: str | Path) -> tuple[list[SavedRun],
                                              list[tuple[np.ndarray, str, SliceGeometry, dict[str, Any]]]]:
    """Read a folder written by :func:`save_results` (or by its version 1): the runs and the segmentations.

    Every file ``results.json`` and the sidecars list must be a plain name inside the folder (no ``..``,
    absolute paths, or symlinks leading out): a folder that breaks this is refused as a whole."""
    from ...core.results import Explanation

    folder = Path(folder)
    path = folder / INDEX if folder.is_dir() else folder
    if not path.is_file():
        raise UserError(f"{folder} holds no {INDEX}: choose a folder written by 'Save results'")
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UserError(f"{path} is not a napari-seg-explain results index")
    from ...core.safe_paths import inside

    base = path.parent
    runs = []
    for entry in index.get("runs", []) + index.get("explanations", []):
        expl = Explanation.load(inside(base, entry.get("file"), INDEX))
        runs.append(SavedRun(expl, SliceGeometry.from_dict(entry["geometry"]), entry.get("label", "")))
    segs = []
    for entry in index.get("segmentations", []):
        geom = SliceGeometry.from_dict(entry["geometry"])
        f = inside(base, entry.get("file"), INDEX)
        if f.name.endswith(".npy"):
            try:
                arr = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as exc:  # object arrays (pickles) are refused here
                raise UserError(f"cannot read {f.name} ({exc}); choose a folder written by 'Save results'") from exc
        else:
            import nibabel as nib

            arr = np.asarray(nib.load(str(f)).dataobj)
            arr = np.moveaxis(arr, -1, 0) if geom.is_volume else arr
        segs.append((arr, entry["name"], geom, entry.get("metadata", {})))
    return runs, segs
