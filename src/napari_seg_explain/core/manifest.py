"""Dataset manifests: one explanation task per CSV row x method x model.

CSV columns (header required; only ``image`` is mandatory)::

    image,roi,class,label,slice,pool,name
    scans/case01.nii.gz,40 60 80 100,1,labels/case01.nii.gz,64,pool/,case01 lesion
    scans/case02.png,roi/case02_mask.png,white_matter,,,,

``roi``: a box (``Y0 X0 Y1 X1``, or ``Z0 Y0 X0 Z1 Y1 X1`` for 3-D models) or a mask file; ``class``: an
index or a class name; ``slice``: the plane a 2-D model explains on a volume; ``pool``: a folder or file of
replacement images (several separated by ``;``). Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

COLUMNS = ("image", "roi", "class", "label", "slice", "pool", "name")


@dataclass(frozen=True)
class Row:
    """One line of a manifest, paths resolved."""

    index: int
    image: str
    roi_box: tuple[int, ...] | None = None
    roi_mask: str | None = None
    target: str = "1"
    label: str | None = None
    slice_index: int | None = None
    pool: tuple[str, ...] = ()
    name: str = ""

    @property
    def title(self) -> str:
        return self.name or f"{Path(self.image).name} row {self.index + 1}"


@dataclass(frozen=True)
class Task:
    """One explanation of a dataset run: a row, a method with its parameters, a model with its options."""

    row: Row
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    model_options: dict[str, Any] = field(default_factory=dict)
    evaluate: bool = False  # also compute the evaluation metrics (seg-explain compare)
    eval_options: dict[str, Any] = field(default_factory=dict)  # k, steps, draws of core.evaluation.evaluate

    @property
    def key(self) -> str:
        """Stable identity of the task's result: inputs, parameters and model file content (16 hex digits)."""
        from .models.devices import sha256_file

        model = Path(self.model)
        files = sorted(p for p in model.rglob("*") if p.is_file()) if model.is_dir() else [model]
        parts = {"row": asdict(self.row) | {"index": None, "name": None}, "method": self.method,
                 "params": {k: v for k, v in sorted(self.params.items()) if k != "batch_size"},
                 "model": [sha256_file(f) for f in files if f.exists()], "options": self.model_options,
                 "evaluate": self.evaluate, "eval_options": self.eval_options,
                 "inputs": [_stamp(p) for p in (self.row.image, self.row.roi_mask, self.row.label, *self.row.pool) if p]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stamp(path: str) -> list[Any]:
    """A file's identity for the task key: its path, size and modification time (cheap; content for models)."""
    p = Path(path)
    st = p.stat() if p.exists() else None
    return [str(p.resolve()), st.st_size if st else None, int(st.st_mtime) if st else None]


def read_manifest(path: str | Path) -> list[Row]:
    """Rows of a manifest CSV; every error names the line and the column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist")
    base = path.parent
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "image" not in cols:
            raise UserError(f"manifest {path} needs a header line with at least an 'image' column "
                            f"(columns: {', '.join(COLUMNS)})")
        unknown = [c for c in cols if c not in COLUMNS]
        if unknown:
            raise UserError(f"manifest {path}: unknown column(s) {', '.join(unknown)} (columns: {', '.join(COLUMNS)})")
        rows = []
        for i, raw in enumerate(reader):
            rec = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            rows.append(_row(i, rec, base, f"{path.name} line {i + 2}"))
    if not rows:
        raise UserError(f"manifest {path} has no rows")
    return rows


def _row(i: int, rec: dict[str, str], base: Path, where: str) -> Row:
    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        q = q if q.is_absolute() else base / q
        if not q.exists():
            raise UserError(f"{where}: {p} does not exist")
        return str(q)

    if not rec.get("image"):
        raise UserError(f"{where}: the image column is empty")
    roi = rec.get("roi", "")
    box, mask = None, None
    if roi:
        parts = roi.replace(",", " ").split()
        if all(p.lstrip("-").isdigit() for p in parts):
            if len(parts) not in (4, 6):
                raise UserError(f"{where}: roi {roi!r} must be 4 numbers (Y0 X0 Y1 X1) or 6 (Z0 Y0 X0 Z1 Y1 X1) or a "
                                "mask file")
            box = tuple(int(p) for p in parts)
        else:
            mask = resolve(roi)
    sl = rec.get("slice", "")
    if sl and not sl.isdigit():
        raise UserError(f"{where}: slice {sl!r} must be a non-negative integer")
    pool = tuple(resolve(p.strip()) for p in rec.get("pool", "").split(";") if p.strip())
    return Row(i, resolve(rec["image"]), box, mask, rec.get("class") or "1",
               resolve(rec["label"]) if rec.get("label") else None, int(sl) if sl else None, pool, rec.get("name", ""))
