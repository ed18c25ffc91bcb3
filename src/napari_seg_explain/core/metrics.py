"""Segmentation metrics on batches. Dice is in [0, 1]; PdCR reports Dice points (x100)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EPS = 1e-10  # as in the PdCR authors' code


def dice(pred: "torch.Tensor", ref: "torch.Tensor", eps: float = EPS) -> "torch.Tensor":
    """Dice per batch item. ``pred``: (B, N) binary or soft; ``ref``: (N,) or (B, N) binary.

    With a soft ``pred`` this is the soft Dice ``2 sum(p r) / (sum p + sum r)``.
    """
    ref = ref.to(pred.dtype)
    inter = (pred * ref).sum(dim=-1)
    return 2 * inter / (pred.sum(dim=-1) + ref.sum(dim=-1) + eps)


def dice_np(a: np.ndarray, b: np.ndarray, eps: float = EPS) -> float:
    """Dice of two binary arrays (numpy)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum() + eps))


def effect_shares(values: np.ndarray) -> dict[str, float]:
    """Shares (in %) of positive, negative and zero (irrelevant) effects among evaluated blocks."""
    v = np.asarray(values, dtype=float)
    n = max(len(v), 1)
    pos, neg = int((v > 0).sum()), int((v < 0).sum())
    return {"positive_share": 100 * pos / n, "negative_share": 100 * neg / n,
            "irrelevant_share": 100 * (len(v) - pos - neg) / n,
            "n_positive": pos, "n_negative": neg, "n_irrelevant": len(v) - pos - neg}
