"""How closely a PdCR map from a speed mode agrees with the exact map (same image, RoI and seed).

Both maps are compared block by block (one value per block of ``grid``; blocks NaN in either map, the RoI and
blocks touching it, are left out): Pearson correlation of the ATEs, sign agreement (-, 0, + equal), the same
on the 10 % strongest exact blocks, and the overlap of the ``k`` most supporting blocks (most negative ATE).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def block_values(amap: np.ndarray, block: int | tuple[int, ...]) -> np.ndarray:
    """One value per grid block (its first pixel) of a painted PdCR map."""
    sizes = (block,) * amap.ndim if np.isscalar(block) else tuple(block)
    return np.asarray(amap)[tuple(slice(0, None, b) for b in sizes)].ravel()


def agreement(exact: Any, fast: Any, block: int | tuple[int, ...] | None = None, k: int = 10) -> dict[str, float]:
    """Agreement of map ``fast`` with map ``exact`` (arrays or Explanations; ``block`` from the params if None).

    ``pearson``: correlation of block ATEs (1.0 when both are constant and equal); ``sign_agreement``: share of
    blocks with the same sign (0 counts as a sign); ``strong_sign_agreement``: the same on the 10 % of blocks with
    the largest exact |ATE|; ``top_k_overlap``: |top-k(exact) ∩ top-k(fast)| / k for the most supporting blocks;
    ``max_abs_diff``: largest |difference| in Dice points."""
    if block is None:
        block = getattr(exact, "params", {}).get("patch", 8)
    a = block_values(getattr(exact, "map", exact), block)
    b = block_values(getattr(fast, "map", fast), block)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok].astype(np.float64), b[ok].astype(np.float64)
    if not len(a):
        return {"pearson": float("nan"), "sign_agreement": float("nan"), "strong_sign_agreement": float("nan"),
                "top_k_overlap": float("nan"), "max_abs_diff": float("nan"), "n_blocks": 0}
    if a.std() > 0 and b.std() > 0:
        r = float(np.corrcoef(a, b)[0, 1])
    else:
        r = 1.0 if np.allclose(a, b) else 0.0
    strong = np.abs(a) >= np.quantile(np.abs(a), 0.9)
    kk = min(k, len(a))
    top_a, top_b = set(np.argsort(a, kind="stable")[:kk]), set(np.argsort(b, kind="stable")[:kk])
    return {"pearson": r, "sign_agreement": float((np.sign(a) == np.sign(b)).mean()),
            "strong_sign_agreement": float((np.sign(a[strong]) == np.sign(b[strong])).mean()),
            "top_k_overlap": len(top_a & top_b) / kk if kk else float("nan"),
            "max_abs_diff": float(np.abs(a - b).max()), "n_blocks": int(len(a))}
