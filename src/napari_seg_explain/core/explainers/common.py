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


def check_image(model: "SegmentationModel", image: np.ndarray, dims: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Validate a ``(C, *S)`` image (``S`` alone becomes one channel) against the model; float32 copy.

    ``len(S)`` must be the model's spatial dimensions and one of the method's ``dims``.
    """
    arr = np.asarray(image)
    nd = model.card.spatial_dims
    if arr.ndim == nd:
        arr = arr[None]
    if arr.ndim != nd + 1:
        hint = "; pick one slice of the volume" if nd == 2 else ""
        raise IncompatibleInputError(f"model {model.name!r} is {nd}-D: expected an image (C, {nd} spatial axes), "
                                     f"got shape {arr.shape}{hint}")
    if nd not in dims:
        raise IncompatibleInputError(f"model {model.name!r} is {nd}-D; this method explains "
                                     f"{' or '.join(f'{d}-D' for d in dims)} models")
    model.check_channels(arr.shape[0])
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise IncompatibleInputError(f"the image contains {bad} NaN or infinite value(s); replace them (e.g. with 0 or "
                                     "the background value) and try again")
    return np.array(arr, dtype=np.float32, copy=True)


def check_mask(mask: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    """A bool mask (RoI, label) of the image's spatial ``shape``, or None."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise IncompatibleInputError(f"{what} shape {m.shape} differs from the image's {tuple(shape)}")
    return m


def provenance(model: "SegmentationModel", t_start: float, forward_passes: int, seed: int,
               **extra: Any) -> dict[str, Any]:
    """Model hash (and the SHA-256 of its files), versions, device, seed, forward passes, wall time (and e.g.
    the batch size) of one run."""
    from ..file_hashes import model_file_hashes

    return {"model": model.describe(), "model_files_sha256": model_file_hashes(model.source, model.card.source),
            "versions": versions(), "seed": int(seed),
            "forward_passes": int(forward_passes), "wall_time_s": round(time.perf_counter() - t_start, 4),
            "finished_at": now_iso(), "platform": platform.platform()} | extra
