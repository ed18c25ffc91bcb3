"""Explain what a medical-image segmentation model looked at (PdCR, MiSuRe, ...), in napari and from Python.

Python API (heavy imports happen on first use)::

    from napari_seg_explain import read_image, load_model, explain_pdcr, explain_misure, roi_from_box
    from napari_seg_explain import ExplainJob, run_jobs, registry   # any registered method, many jobs
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "read_image": "core.images", "write_map": "core.images", "Image": "core.images",
    "load_model": "core.models", "SegmentationModel": "core.models",
    "explain_pdcr": "core.explainers.pdcr", "PdCRConfig": "core.explainers.pdcr",
    "explain_pdcr_multi": "core.explainers.pdcr",
    "explain_misure": "core.explainers.misure", "MiSuReConfig": "core.explainers.misure",
    "roi_from_box": "core.rois", "roi_from_polygon": "core.rois", "roi_from_mask": "core.rois",
    "pool_from_paths": "core.perturb.pools", "pool_from_volume": "core.perturb.pools",
    "pool_from_arrays": "core.perturb.pools", "Explanation": "core.results",
    "ExplainJob": "core.jobs", "run_jobs": "core.jobs", "job_from_files": "core.job_inputs",
    "registry": "core.explainers", "roi_from_bounds": "core.rois",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
