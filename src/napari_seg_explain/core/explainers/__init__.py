"""Explainers: one module per method, one contract.

Each explainer is a generator ``f(model, image, roi, target, **options)`` that yields
:class:`~napari_seg_explain.core.progress.Progress` and returns an
:class:`~napari_seg_explain.core.results.Explanation`; ``explain_<name>`` is the blocking form.
"""

from __future__ import annotations

from .misure import MiSuReConfig, explain_misure, misure
from .pdcr import PdCRConfig, explain_pdcr, pdcr

EXPLAINERS = {"pdcr": pdcr, "misure": misure}
CONFIGS = {"pdcr": PdCRConfig, "misure": MiSuReConfig}

__all__ = ["EXPLAINERS", "CONFIGS", "PdCRConfig", "MiSuReConfig", "pdcr", "misure", "explain_pdcr", "explain_misure"]
