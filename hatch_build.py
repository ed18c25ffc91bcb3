"""Hatch build hook: ship the sample data inside the wheel as ``napari_seg_explain/_sample_data``.

Only for regular wheels: an editable install reads the repository's ``sample_data/`` directly
(``core/sample.py`` looks in ``_sample_data`` first, then in the checkout), so nothing is copied into
site-packages. Hatch's ``force-include`` table would copy the folder verbatim (no exclude rules apply to
it) and also into editable wheels; this hook adds the data files one by one instead and skips the
rebuild scripts, caches, hidden files and temporary files.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SAMPLE_SOURCE = "sample_data"
SAMPLE_TARGET = "napari_seg_explain/_sample_data"
# never shipped in the wheel (the sdist keeps the scripts, so the data can be rebuilt)
EXCLUDE = ("*.py", "*.pyc", "*.tmp", "*.tmp.*", "*~", "*.ckpt", "*.swp")
EXCLUDE_DIRS = ("__pycache__", "cache", "*_cache", "checkpoints", "runs", "wandb", "lightning_logs")


def sample_files(root: Path) -> list[Path]:
    """The files of ``root/sample_data`` that belong in a wheel, sorted."""
    src = root / SAMPLE_SOURCE
    out = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if any(fnmatch.fnmatch(part, pat) for part in rel.parts[:-1] for pat in EXCLUDE_DIRS):
            continue
        if any(fnmatch.fnmatch(path.name, pat) for pat in EXCLUDE):
            continue
        out.append(path)
    return out


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        files = sample_files(root)
        if not any(p.name.endswith(".nii.gz") for p in files):
            raise RuntimeError(f"no sample volume found under {root / SAMPLE_SOURCE}; the wheel would lack it")
        for path in files:
            rel = path.relative_to(root / SAMPLE_SOURCE).as_posix()
            build_data["force_include"][str(path)] = f"{SAMPLE_TARGET}/{rel}"
