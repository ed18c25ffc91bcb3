"""PdCR's summary statistics: the ATE histogram with the authors' bin edges, and the far-field share."""

from __future__ import annotations

import numpy as np

from ..perturb.grid import BlockGrid

def histogram(values: np.ndarray, tau: float) -> dict[str, int]:
    """Blocks per ATE range with the authors' bin edges (-3, -1, -0.3, -tau | tau, 0.3, 1, 3); zeros apart."""
    v = np.asarray(values, dtype=float)
    neg = [e for e in (-np.inf, -3.0, -1.0, -0.3) if e < -tau] + [-tau]
    pos = [tau] + [e for e in (0.3, 1.0, 3.0) if e > tau] + [np.inf]
    out = {"0 (irrelevant)": int((v == 0).sum())}
    for edges, part in ((neg, v[v < 0]), (pos, v[v > 0])):
        counts, _ = np.histogram(part, bins=edges)
        out |= {f"{lo:g}..{hi:g}": int(c) for lo, hi, c in zip(edges[:-1], edges[1:], counts)}
    return out


DEFAULT_FAR = 32.0  # pixels (4 blocks of 8) when the card gives no receptive field


def far_distance(given: float, receptive_field: int | None) -> float:
    """The far-field distance: ``given`` (> 0), else half the card's receptive field, else :data:`DEFAULT_FAR`."""
    if given > 0:
        return float(given)
    return receptive_field / 2 if receptive_field else DEFAULT_FAR


def far_field(grid: BlockGrid, roi: np.ndarray, values: np.ndarray, distance: float) -> dict[str, float]:
    """How much of the effect lies far from the RoI: blocks whose centre is more than ``distance`` pixels from
    the nearest RoI pixel. ``far_share``: % of the total |ATE| in far blocks; ``far_mean_abs_ate``: their mean
    |ATE|; ``far_nonzero_share``: % of far blocks with a non-zero ATE. A model with instance or group
    normalisation couples every pixel to the RoI, so far blocks have effects too."""
    from scipy import ndimage

    v = np.abs(np.asarray(values, dtype=np.float64))
    dist = ndimage.distance_transform_edt(~np.asarray(roi, bool))
    centres = grid.centres()
    far = dist[tuple(centres.T)] > distance if len(v) else np.zeros(0, bool)
    total = v.sum()
    return {"far_distance": float(distance), "n_far_blocks": int(far.sum()),
            "far_share": float(100 * v[far].sum() / total) if total > 0 else 0.0,
            "far_mean_abs_ate": float(v[far].mean()) if far.any() else 0.0,
            "far_nonzero_share": float(100 * (v[far] > 0).mean()) if far.any() else 0.0}
