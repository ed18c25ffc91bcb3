"""Paths a results folder or sidecar lists must stay inside it: plain names, no ``..``, no absolute paths, and
no symlink that leads out of the folder (a hostile folder cannot make us read or overwrite files elsewhere)."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

from .errors import UserError


def inside(folder: str | Path, name: Any, what: str) -> Path:
    """``folder / name`` for a plain file ``name`` listed by ``what`` (a sidecar, results.json), refused when it
    is not a plain name or resolves (through symlinks) outside ``folder``."""
    folder = Path(folder)
    text = str(name) if isinstance(name, (str, PurePath)) else ""
    plain = bool(text) and text not in (".", "..") and "/" not in text and "\\" not in text \
        and not PurePath(text).is_absolute() and PurePath(text).name == text
    if not plain:
        raise UserError(f"{what} lists {name!r}, which is not a plain file name in {folder}: refusing a path that "
                        "points outside its folder; only open results you trust")
    path = folder / text
    try:
        root, target = folder.resolve(), path.resolve()
    except (OSError, ValueError) as exc:  # a NUL byte in the name, a link loop
        raise UserError(f"{what} lists {name!r}, which is not a usable file name ({exc}): refusing it; only open "
                        "results you trust") from exc
    if target.parent != root:
        raise UserError(f"{what} lists {text}, a link to {target} outside {folder}: refusing a file outside the "
                        "results folder; copy the real file into the folder instead")
    return path


def absolute_input(path: Any, what: str) -> Path:
    """A recorded input path (image, model, label, pool): must be absolute (a relative one would resolve against
    the current folder or the results folder, which whoever wrote the sidecar controls)."""
    p = Path(str(path))
    if not p.is_absolute():
        raise UserError(f"the recorded {what} {path} is a relative path: rerun only reads inputs recorded as "
                        "absolute paths; run the original explain command instead")
    return p
