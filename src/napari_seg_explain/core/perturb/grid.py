"""N-D block grids: which blocks touch a RoI, where blocks start, block indices, painting block values.

A grid of ``block``-sized cubes covers an image of spatial shape ``S`` (2-D or 3-D); edge blocks that stick
out are padded, so every block is whole in padded coordinates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def blocks_touching(mask: np.ndarray, block: int) -> np.ndarray:
    """Grid-shaped bool array: which blocks of a ``block``-sized grid contain a pixel of ``mask`` (any N-D)."""
    mask = np.asarray(mask, bool)
    grid = tuple(-(-s // block) for s in mask.shape)
    padded = np.zeros(tuple(g * block for g in grid), dtype=bool)
    padded[tuple(slice(0, s) for s in mask.shape)] = mask
    split = [d for g in grid for d in (g, block)]
    return padded.reshape(split).any(axis=tuple(range(1, 2 * len(grid), 2)))


def block_index(corners: "torch.Tensor", block: int) -> tuple["torch.Tensor", ...]:
    """Per spatial axis, the index tensor ``(n, block, ..., block)`` of the blocks starting at ``corners`` ``(n, D)``.

    ``x[(rows,) + (slice(None),) + block_index(c, b)]`` on ``(N, C, *S)`` gives ``(n, b, ..., b, C)``.
    """
    import torch

    n, d = corners.shape
    ar = torch.arange(block, device=corners.device)
    out = []
    for axis in range(d):
        shape = [1] * (d + 1)
        shape[1 + axis] = block
        out.append(corners[:, axis].reshape([n] + [1] * d) + ar.reshape(shape))
    return tuple(out)


class BlockGrid:
    """The blocks of an image of spatial shape ``shape`` that do not touch ``exclude`` (e.g. the RoI)."""

    def __init__(self, shape: tuple[int, ...], block: int, exclude: np.ndarray | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.block = int(block)
        self.grid_shape = tuple(-(-s // block) for s in self.shape)
        self.padded_shape = tuple(g * block for g in self.grid_shape)
        self.touching = (blocks_touching(exclude, block) if exclude is not None
                         else np.zeros(self.grid_shape, bool))
        self.coords = np.argwhere(~self.touching)  # (nb, D) grid coordinates, raster order
        self.corners = self.coords * self.block  # (nb, D) first pixel of each block

    @property
    def n_blocks(self) -> int:
        return len(self.coords)

    @property
    def partial_edges(self) -> bool:
        """True when the shape is not a multiple of the block (edge blocks are narrower)."""
        return any(s % self.block for s in self.shape)

    def pad(self, x: "torch.Tensor") -> "torch.Tensor":
        """Zero-pad ``(B, C, *shape)`` to ``(B, C, *padded_shape)``."""
        import torch.nn.functional as F

        pads = [p for s, ps in zip(reversed(self.shape), reversed(self.padded_shape)) for p in (0, ps - s)]
        return F.pad(x, pads)

    def crop(self, x: "torch.Tensor") -> "torch.Tensor":
        """Undo :meth:`pad` on ``(B, C, *padded_shape)``."""
        return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in self.shape)]

    def paint(self, values: np.ndarray) -> np.ndarray:
        """Block values ``(nb,)`` -> float32 map of ``shape`` (NaN on excluded blocks), vectorised."""
        grid = np.full(self.grid_shape, np.nan, np.float32)
        grid[tuple(self.coords.T)] = values
        for axis in range(grid.ndim):
            grid = np.repeat(grid, self.block, axis=axis)
        return np.ascontiguousarray(grid[tuple(slice(0, s) for s in self.shape)])
