"""Warnings for inputs unlike a model's training data (modality, intensities, pixel spacing).

A model card may say what the model was trained on (``expects: {modality, intensity_range, spacing}``).
A clear mismatch (a CT given to an MR model, intensities far outside the training range, pixels of another
size) does not stop a run: it is a warning the CLI prints, the widget shows, and the result records.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .modelcard import ModelCard

PREFIX = "input unlike the model's training data: "
SPACING_FACTOR = 2.0  # a pixel more than twice or less than half the training spacing
RANGE_FACTOR = 10.0  # an intensity range ten times wider or narrower than the training range


def looks_like_ct(image: np.ndarray) -> bool:
    """Hounsfield units: air around -1000 (a real share of pixels below -500)."""
    arr = np.asarray(image, dtype=np.float32)
    return bool(arr.size) and float(np.percentile(arr, 1)) < -500


def input_warnings(card: ModelCard, image: np.ndarray, spacing: Sequence[float] | None = None) -> list[str]:
    """Warnings for ``image`` ``(C, *S)`` raw intensities (and its pixel ``spacing`` in mm) against ``card``."""
    out: list[str] = []
    arr = np.asarray(image, dtype=np.float32)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return out
    if card.modality == "CT" and not looks_like_ct(finite):
        out.append(f"{PREFIX}the model was trained on CT (Hounsfield units, air at -1000) but the image has no "
                   f"such values (1st percentile {np.percentile(finite, 1):.4g})")
    elif card.modality not in (None, "CT") and looks_like_ct(finite):
        out.append(f"{PREFIX}the model was trained on {card.modality} but the image looks like CT (values "
                   "down to about -1000, Hounsfield units)")
    if card.intensity_range is not None and not out:
        lo, hi = card.intensity_range
        p_lo, p_hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
        width, train_width = max(p_hi - p_lo, 1e-12), hi - lo
        if p_hi < lo or p_lo > hi:
            out.append(f"{PREFIX}intensities {p_lo:.4g}..{p_hi:.4g} lie outside the training range "
                       f"{lo:.4g}..{hi:.4g}")
        elif width > RANGE_FACTOR * train_width or width < train_width / RANGE_FACTOR:
            out.append(f"{PREFIX}intensities span {p_lo:.4g}..{p_hi:.4g}, the training data {lo:.4g}..{hi:.4g} "
                       f"(more than {RANGE_FACTOR:g} times wider or narrower)")
    if card.spacing is not None and spacing is not None:
        have = [float(s) for s in spacing]
        if len(have) == len(card.spacing) and all(h > 0 for h in have):
            ratios = [h / w for h, w in zip(have, card.spacing)]
            if any(r > SPACING_FACTOR or r < 1 / SPACING_FACTOR for r in ratios):
                out.append(f"{PREFIX}pixel spacing {' x '.join(f'{h:g}' for h in have)} mm, the training data "
                           f"{' x '.join(f'{w:g}' for w in card.spacing)} mm (resample the image to the model's "
                           "spacing)")
    return out
