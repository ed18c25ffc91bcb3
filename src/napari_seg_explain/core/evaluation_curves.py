"""The pieces of :mod:`.evaluation`: block saliency and ranking, the fully perturbed images, curve items, AUC.

Every perturbed image is the original (normalised, padded) image with the pixels of a set of blocks taken
from one *fully perturbed* image per draw. A set is always a range of ranks ``[lo, hi)`` in the map's order:
deletion step ``m`` perturbs ``[0, m)``, insertion step ``m`` perturbs ``[m, n)`` (blocks ``< m`` restored),
the attribution score perturbs ``[0, k)``. So within one draw every curve and the score use the same
replacement for a block, deletion at 100 % and insertion at 0 % are the same image, and an image shared by
several of them is evaluated once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .models import SegmentationModel
    from .perturb.grid import BlockGrid
    from .perturb.pools import TilePool

#: what replaces a block: ``pool`` = crops of other images (PdCR's perturbation, ``draws`` seeded draws);
#: ``zero`` = 0 in the model's input space; ``mean`` = the image's per-channel mean (input space); ``blur`` =
#: the image blurred with a Gaussian of sigma = one block along each axis (input space)
FILLS = ("pool", "zero", "mean", "blur")


def block_saliency(grid: "BlockGrid", amap: np.ndarray, direction: str) -> np.ndarray:
    """``(n_blocks,)`` saliency of each block of ``grid``: the map's mean over the block's pixels (NaN ignored;
    NaN for an all-NaN block), oriented so that larger = more salient (``low``: negated, ``abs``: magnitude)."""
    padded = np.full(grid.padded_shape, np.nan, np.float64)
    padded[tuple(slice(0, s) for s in grid.shape)] = amap
    split = [d for g, b in zip(grid.grid_shape, grid.sizes) for d in (g, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        cells = np.nanmean(padded.reshape(split), axis=tuple(range(1, 2 * len(grid.sizes), 2)))
    values = cells[tuple(grid.coords.T)]
    if direction == "low":
        return -values
    if direction == "abs":
        return np.abs(values)
    return values


def rank_blocks(saliency: np.ndarray, seed: int) -> np.ndarray:
    """Block indices, most salient first; NaN last; ties broken by a seeded random permutation (not raster order,
    which would favour the top of the image for maps with many equal values, e.g. PdCR's zeros)."""
    perm = np.random.default_rng(int(seed)).permutation(len(saliency))
    key = np.where(np.isfinite(saliency[perm]), saliency[perm], -np.inf)
    return perm[np.argsort(-key, kind="stable")]


def fill_images(model: "SegmentationModel", grid: "BlockGrid", raw: "torch.Tensor", x0: "torch.Tensor",
                x0p: "torch.Tensor", fill: str, n_draws: int, pool: "TilePool | None",
                gen: "torch.Generator") -> "torch.Tensor":
    """``(n_draws, C, *padded)``: the image with every block outside the RoI replaced, one per draw.

    ``raw``: ``(1, C, *S)`` raw image; ``x0``: its normalisation; ``x0p``: that padded to the grid.
    """
    import torch

    if fill == "zero":
        return torch.zeros_like(x0p)
    if fill == "mean":
        return grid.pad(x0.mean(dim=tuple(range(2, x0.ndim)), keepdim=True).expand_as(x0).contiguous())
    if fill == "blur":
        from scipy import ndimage

        arr = x0[0].cpu().numpy()
        blurred = ndimage.gaussian_filter(arr, sigma=[0, *grid.sizes], mode="nearest")
        return grid.pad(torch.as_tensor(blurred, device=x0.device)[None])
    from .perturb.grid import block_index

    bound = pool.bind(model, raw)
    nb = grid.n_blocks
    corners = torch.as_tensor(grid.corners, dtype=torch.long)
    index = block_index(corners.to(x0p.device), grid.sizes)
    rows = torch.zeros([nb] + [1] * len(grid.sizes), dtype=torch.long, device=x0p.device)
    out = []
    for _ in range(n_draws):
        crops = bound.crops(bound.draw(nb, grid.sizes, gen, avoid=corners), grid.sizes)
        xd = x0p.clone()
        xd[(rows, slice(None)) + index] = crops.to(xd.dtype)
        out.append(xd)
    return torch.cat(out)


def curve_items(n_draws: int, counts: Sequence[int], n_blocks: int, k: int
                ) -> tuple[list[tuple[int, int, int]], dict]:
    """The distinct perturbed images ``(draw, lo, hi)`` to evaluate, and where each result goes.

    ``slots["deletion"][d][i]`` / ``slots["insertion"][d][i]``: the item of step ``i`` (``counts[i]`` blocks)
    of draw ``d``; ``slots["top_k"][d]``: the attribution score's item. ``None`` = nothing perturbed (the
    unperturbed Dice, not re-evaluated).
    """
    items: list[tuple[int, int, int]] = []
    index: dict[tuple[int, int, int], int] = {}

    def slot(d: int, lo: int, hi: int) -> int | None:
        if lo >= hi:
            return None
        key = (d, lo, hi)
        if key not in index:
            index[key] = len(items)
            items.append(key)
        return index[key]

    slots: dict = {"deletion": [], "insertion": [], "top_k": []}
    for d in range(n_draws):
        slots["top_k"].append(slot(d, 0, k))
        slots["deletion"].append([slot(d, 0, m) for m in counts])
        slots["insertion"].append([slot(d, m, n_blocks) for m in counts])
    return items, slots


def trapezoid_auc(x: Sequence[float], y: Sequence[float]) -> float:
    """Area under ``y(x)`` by the trapezoid rule (x in [0, 1]: the mean height, in the units of ``y``)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
