"""Regions of interest as boolean masks of an image's spatial shape (2-D or 3-D): boxes, polygons, label masks."""

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


def roi_from_bounds(shape: tuple[int, ...], starts: tuple[int, ...], stops: tuple[int, ...]) -> np.ndarray:
    """N-D box: ``starts``/``stops`` per axis (end exclusive) -> mask. Must lie inside the image."""
    if not (len(shape) == len(starts) == len(stops)):
        raise UserError(f"a RoI box on a {len(shape)}-D image needs {len(shape)} starts and stops")
    if not all(0 <= a < b <= s for a, b, s in zip(starts, stops, shape)):
        raise UserError(f"RoI box {list(starts)}:{list(stops)} does not lie inside the image of shape {tuple(shape)} "
                        "(give starts < stops inside the image, end exclusive)")
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(starts, stops))] = True
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


def roi_from_mask(mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Any array whose non-zero pixels are the RoI -> boolean mask (checked against ``shape``)."""
    m = np.asarray(mask)
    if shape is not None and m.ndim > len(shape):
        m = m.squeeze()
    if shape is not None and m.shape != tuple(shape):
        raise UserError(f"RoI mask has shape {m.shape} but the explained image is {tuple(shape)}")
    return _check_nonempty(m != 0, "mask")


def _check_nonempty(mask: np.ndarray, what: str) -> np.ndarray:
    if not mask.any():
        raise UserError(f"the RoI {what} covers no pixel of the image; draw it over the structure to explain")
    return mask
