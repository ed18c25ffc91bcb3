"""Explainers: one module per method, one contract, one registry.

Each method module defines a generator ``f(model, image, roi, target, *, config, ...)`` that yields
:class:`~napari_seg_explain.core.progress.Progress` and returns an
:class:`~napari_seg_explain.core.results.Explanation` (``explain_<name>`` is the blocking form), and
registers an :class:`~.base.ExplainerSpec` that the CLI, the widget, the layers and the results folder read.
"""

from __future__ import annotations

from . import registry
from .base import ExplainerSpec, ResultLayer, Stat, param
from .pdcr import PdCRConfig, explain_pdcr, pdcr  # isort: skip - registration order is the listing order
from .misure import MiSuReConfig, explain_misure, misure  # isort: skip
from .shapley import ShapleyConfig, explain_shapley, shapley  # isort: skip
from .seg_gradcam import SegGradCAMConfig, explain_seg_gradcam, seg_gradcam  # isort: skip - baselines
from .rise import RISEConfig, explain_rise, rise  # isort: skip
from .occlusion import OcclusionConfig, explain_occlusion, occlusion  # isort: skip

__all__ = ["registry", "ExplainerSpec", "ResultLayer", "Stat", "param", "PdCRConfig", "MiSuReConfig", "ShapleyConfig",
           "pdcr", "misure", "shapley", "explain_pdcr", "explain_misure", "explain_shapley",
           "SegGradCAMConfig", "RISEConfig", "OcclusionConfig", "seg_gradcam", "rise", "occlusion",
           "explain_seg_gradcam", "explain_rise", "explain_occlusion"]
