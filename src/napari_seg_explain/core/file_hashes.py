"""SHA-256 of the files a result came from: the model file(s) and the input files (image, label, pool, ...).

Inputs that were not files (napari layers drawn or computed in memory, models handed over in Python) are
recorded as ``null`` with a note saying so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .models.devices import sha256_file

#: the files of a model folder (nnU-Net, MONAI bundle) that are hashed: weights, configs, plans
MODEL_FOLDER_SUFFIXES = (".pth", ".pt", ".ts", ".safetensors", ".onnx", ".pt2", ".json", ".yaml", ".yml")
IN_MEMORY = "null: the input was not a file (e.g. an in-memory napari layer), so it has no file hash"


def file_sha256(path: Any) -> str | None:
    """The file's SHA-256, or None when ``path`` is not an existing file."""
    if not path:
        return None
    try:
        p = Path(str(path))
        return sha256_file(p) if p.is_file() else None
    except OSError:
        return None


def model_file_hashes(source: Any, card_source: Any = None) -> dict[str, Any]:
    """``{file name: sha256}`` of a model file (and its card), or of a model folder's weight/config files."""
    out: dict[str, Any] = {}
    p = Path(str(source)) if source else None
    if p is not None and p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file() and f.suffix.lower() in MODEL_FOLDER_SUFFIXES and not f.name.startswith("."):
                out[f.relative_to(p).as_posix()] = file_sha256(f)
    elif p is not None and p.is_file():
        out[p.name] = file_sha256(p)
    if card_source and Path(str(card_source)).is_file():
        out[Path(str(card_source)).name] = file_sha256(card_source)
    if not out:
        out["note"] = "null: the model was not loaded from a file (its sha256 hashes its parameters instead)"
    return out


def input_hashes(image: Any, **others: Any) -> dict[str, Any]:
    """``{"image": sha|None, <other>: sha|[sha, ...]|None}`` for the input files given; a note for nulls."""
    out: dict[str, Any] = {"image": file_sha256(image)}
    for key, val in others.items():
        if val is None or val == []:
            continue
        if key == "pool":
            out[key] = pool_hashes(val)
        elif isinstance(val, Iterable) and not isinstance(val, str):
            out[key] = [file_sha256(v) for v in val]
        else:
            out[key] = file_sha256(val)
    if out["image"] is None:
        out["note"] = IN_MEMORY
    return out


def pool_hashes(paths: Iterable[Any]) -> dict[str, str | None]:
    """``{pool file: sha256}`` for pool files and the image files of pool folders (as the pool reads them)."""
    from .errors import UserError
    from .perturb.pools import _pool_files

    try:
        files = _pool_files([str(p) for p in paths])
    except UserError:  # a pool path that is gone: hash what is there
        files = [Path(str(p)) for p in paths if Path(str(p)).exists()]
    return {str(f): file_sha256(f) for f in files}
