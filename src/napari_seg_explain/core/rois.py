"""Regions of interest as boolean masks ``(H, W)`` from boxes, polygons and label masks."""

from __future__ import annotations

import numpy as np

from .errors import UserError


def roi_from_box(shape: tuple[int, int], y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """Box in pixel (row, column) coordinates, end exclusive -> mask. Must lie inside the image."""
    h, w = shape
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise UserError(
            f"RoI box rows {y0}:{y1}, columns {x0}:{x1} does not lie inside the {h}x{w} image; "
            f"give Y0 X0 Y1 X1 with 0 <= Y0 < Y1 <= {h} and 0 <= X0 < X1 <= {w} (end exclusive)")
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def roi_from_polygon(shape: tuple[int, int], vertices: np.ndarray) -> np.ndarray:
    """Polygon given as ``(N, 2)`` (row, col) vertices -> mask of the pixels whose centres lie inside."""
    from matplotlib.path import Path

    v = np.asarray(vertices, dtype=float)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise UserError("a polygon RoI needs at least 3 (row, col) vertices")
    h, w = shape
    rr, cc = np.mgrid[0:h, 0:w]
    inside = Path(v).contains_points(np.column_stack([rr.ravel(), cc.ravel()]), radius=1e-9)
    mask = inside.reshape(h, w)
    return _check_nonempty(mask, "polygon")


def roi_from_mask(mask: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Any array whose non-zero pixels are the RoI -> boolean mask (checked against ``shape``)."""
    m = np.asarray(mask)
    m = m.squeeze() if m.ndim > 2 else m
    if shape is not None and m.shape != tuple(shape):
        raise UserError(f"RoI mask has shape {m.shape} but the explained image is {tuple(shape)}")
    return _check_nonempty(m != 0, "mask")


def _check_nonempty(mask: np.ndarray, what: str) -> np.ndarray:
    if not mask.any():
        raise UserError(f"the RoI {what} covers no pixel of the image; draw it over the structure to explain")
    return mask


def blocks_touching(mask: np.ndarray, block: int) -> np.ndarray:
    """``(ny, nx)`` bool: which blocks of a ``block``-sized grid contain a pixel of ``mask``."""
    h, w = mask.shape
    ny, nx = -(-h // block), -(-w // block)
    padded = np.zeros((ny * block, nx * block), dtype=bool)
    padded[:h, :w] = mask
    return padded.reshape(ny, block, nx, block).any(axis=(1, 3))
