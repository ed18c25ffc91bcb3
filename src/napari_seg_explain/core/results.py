"""Explanation: a map plus its statistics, parameters and provenance; saved as a map file + JSON sidecar.

Sidecar naming follows BIDS: ``result.nii.gz`` -> ``result.json``; extra maps (e.g. MiSuRe's sufficient
region) go beside it as ``result_<name>.nii.gz`` and are listed in the sidecar.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .images import Image

MAP_SUFFIXES = (".nii.gz", ".nii", ".npy")


def split_suffix(path: Path) -> tuple[Path, str]:
    """``a/b.nii.gz`` -> (``a/b``, ``.nii.gz``); only the map formats we write are accepted."""
    name = path.name
    for suf in MAP_SUFFIXES:
        if name.lower().endswith(suf):
            return path.with_name(name[: -len(suf)]), suf
    raise UserError(f"cannot tell the output format of {path.name}: use one of {', '.join(MAP_SUFFIXES)}")


def versions() -> dict[str, str]:
    import numpy
    import torch

    from .. import __version__

    out = {"napari-seg-explain": __version__, "python": platform.python_version(),
           "numpy": numpy.__version__, "torch": torch.__version__}
    try:
        import monai

        out["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        pass
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class Explanation:
    """Result of one explainer run.

    ``map``: float32 of the explained image's spatial shape (2-D ``(H, W)`` or 3-D), in its pixel grid
    (PdCR: ATE in Dice points, NaN where not evaluated; MiSuRe: saliency in [0, 1]). ``maps``: further named
    maps of the same shape. ``run``: which run this is (``id``, ``roi_name``, ``class_name``, ``target``), set
    by :class:`~napari_seg_explain.core.jobs.ExplainJob`.
    """

    method: str
    map: np.ndarray
    roi: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    geometry: dict[str, Any] = field(default_factory=dict)  # source image, slice index, spacing, affine
    warnings: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.provenance and "inputs_sha256" not in self.provenance:  # a fresh run: hash its image file
            from .file_hashes import input_hashes

            self.provenance["inputs_sha256"] = input_hashes(self.geometry.get("source"))

    def record_input_hashes(self) -> None:
        """Add the SHA-256 of the input files ``run.inputs`` names (label, pool, RoI mask, contrasts, card)."""
        from .file_hashes import input_hashes

        rec = self.run.get("inputs")
        if not isinstance(rec, dict) or not self.provenance:
            return
        have = self.provenance.get("inputs_sha256") or {}
        new = input_hashes(rec.get("image") or self.geometry.get("source"),
                           **{k: rec.get(k) for k in ("contrasts", "label", "pool", "roi_mask", "card")})
        self.provenance["inputs_sha256"] = new | {k: v for k, v in have.items() if v is not None and k != "note"}
        if new.get("image") is not None or have.get("image") is not None:
            self.provenance["inputs_sha256"].pop("note", None)

    @property
    def run_id(self) -> str:
        return str(self.run.get("id") or self.method)

    def metadata(self) -> dict[str, Any]:
        """Everything except the arrays, JSON-serialisable (what the sidecar and ``layer.metadata`` hold)."""
        return _jsonable({
            "method": self.method, "stats": self.stats, "params": self.params, "provenance": self.provenance,
            "deviations": self.deviations, "geometry": self.geometry, "warnings": self.warnings, "run": self.run,
            "map_shape": list(self.map.shape), "maps": sorted(self.maps),
            "roi_pixels": int(self.roi.sum()) if self.roi is not None else None,
        })

    def save(self, path: str | Path, like: "Image | None" = None, slice_index: int | None = None) -> list[Path]:
        """Write the map (format by extension), extra maps and the JSON sidecar; all or nothing.

        With ``like`` (the source image) NIfTI outputs carry its geometry; a map of one slice of a volume is
        embedded at ``slice_index`` of a volume-shaped file (NaN elsewhere).
        """
        from .images import write_map

        path = Path(path)
        stem, suffix = split_suffix(path)
        self.record_input_hashes()
        if not path.parent.is_dir():
            raise UserError(f"output folder {path.parent} does not exist; create it first")
        arrays = {"": self.map} | {f"_{k}": v for k, v in self.maps.items()}
        if self.roi is not None:
            arrays["_roi"] = self.roi.astype(np.uint8)
        targets = {key: stem.with_name(stem.name + key + suffix) for key in arrays}
        sidecar = stem.with_name(stem.name + ".json")
        for target in [*targets.values(), sidecar]:
            if target.is_dir():
                raise UserError(f"cannot write {target}: a folder of that name is in the way")
        meta = self.metadata() | {"files": {k.lstrip("_") or "map": p.name for k, p in targets.items()},
                                  "slice_index": slice_index}
        try:
            tmpdir = Path(tempfile.mkdtemp(prefix=".seg-explain-", dir=path.parent))
        except OSError as exc:
            raise UserError(f"cannot write into {path.parent}: {exc}") from exc
        try:  # write everything into a temporary folder first, then move into place (the sidecar last)
            staged = {}
            for key, arr in arrays.items():
                tmp = tmpdir / targets[key].name
                if suffix == ".npy":
                    np.save(tmp, arr)
                elif like is not None:
                    write_map(tmp, arr, like, slice_index=slice_index)
                else:
                    _write_plain_nifti(tmp, arr)
                staged[tmp] = targets[key]
            tmp_json = tmpdir / sidecar.name
            tmp_json.write_text(json.dumps(meta, indent=2))
            staged[tmp_json] = sidecar
            for src, dst in staged.items():
                os.replace(src, dst)
        except OSError as exc:
            from .input_checks import write_error

            raise write_error(path.parent, exc) from exc
        finally:
            for leftover in tmpdir.iterdir():
                leftover.unlink()
            tmpdir.rmdir()
        return list(targets.values()) + [sidecar]

    @classmethod
    def load(cls, path: str | Path) -> "Explanation":
        """Read a map saved by :meth:`save` (its sidecar and extra maps) back."""
        from .safe_paths import inside

        path = Path(path)
        stem, suffix = split_suffix(path)
        sidecar = stem.with_name(stem.name + ".json")
        if not sidecar.exists():
            raise UserError(f"{path.name} has no sidecar {sidecar.name}; it was not written by seg-explain")
        folder = path.parent
        inside(folder, path.name, f"the map {path.name}")
        inside(folder, sidecar.name, f"the sidecar {sidecar.name}")
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the sidecar {sidecar}: {exc}; choose a map written by seg-explain") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("files", {}), dict):
            raise UserError(f"{sidecar.name} is not a seg-explain sidecar; choose a map written by seg-explain")
        geom = meta.get("geometry") or {}

        def read(p: Path) -> np.ndarray:
            if suffix == ".npy":
                try:
                    return np.load(p, allow_pickle=False)
                except (OSError, ValueError) as exc:  # object arrays (pickles) are refused here
                    raise UserError(f"cannot read {p.name} as a map ({exc}); choose a map written by seg-explain"
                                    ) from exc
            from .images import read_image

            vol = read_image(p)  # the same display orientation the map was computed in
            arr = vol.data[0]
            z = meta.get("slice_index", geom.get("slice_index"))
            if z is not None and arr.ndim == 3 and tuple(arr.shape[:2]) == tuple(meta["map_shape"]):
                arr = arr[:, :, z]
            return arr.reshape(meta["map_shape"]) if arr.size == np.prod(meta["map_shape"]) else arr

        files = {k: inside(folder, f, f"the sidecar {sidecar.name}") for k, f in meta.get("files", {}).items()}
        maps = {k: read(f) for k, f in files.items() if k not in ("map", "roi")}
        roi = read(files["roi"]).astype(bool) if "roi" in files else None
        prov = meta.get("provenance") or {}
        prov.setdefault("inputs_sha256", {"note": "not recorded: written before seg-explain hashed its inputs"})
        return cls(method=meta["method"], map=read(path).astype(np.float32), roi=roi, maps=maps,
                   stats=meta.get("stats", {}), params=meta.get("params", {}),
                   provenance=prov, deviations=meta.get("deviations", []),
                   geometry=geom, warnings=meta.get("warnings", []), run=meta.get("run") or {})


def _write_plain_nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    data = arr.astype(np.uint8) if arr.dtype == bool else arr
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
