"""Pieces every explainer shares: input checks and provenance."""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IncompatibleInputError
from ..results import now_iso, versions

if TYPE_CHECKING:
    from ..models import SegmentationModel


def check_image2d(model: "SegmentationModel", image: np.ndarray) -> np.ndarray:
    """Validate a 2-D ``(C, H, W)`` image (``(H, W)`` becomes one channel) against the model; float32 copy."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise IncompatibleInputError(f"expected a 2-D image (C, H, W), got shape {arr.shape}; "
                                     "pick a slice of a volume (--slice Z)")
    if model.card.spatial_dims != 2:
        raise IncompatibleInputError(f"model {model.name!r} is {model.card.spatial_dims}-D; these explainers "
                                     "explain 2-D models (one slice at a time)")
    model.check_channels(arr.shape[0])
    if not np.isfinite(arr).all():
        raise IncompatibleInputError("the image contains NaN or infinite values")
    return np.array(arr, dtype=np.float32, copy=True)


def provenance(model: "SegmentationModel", t_start: float, forward_passes: int, seed: int) -> dict[str, Any]:
    """Model hash, versions, device, seed, forward passes and wall time of one run."""
    return {"model": model.describe(), "versions": versions(), "seed": int(seed),
            "forward_passes": int(forward_passes), "wall_time_s": round(time.perf_counter() - t_start, 4),
            "finished_at": now_iso(), "platform": platform.platform()}
