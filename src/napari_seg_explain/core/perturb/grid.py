"""N-D block grids: which blocks touch a RoI, where blocks start, block indices, painting block values.

A grid of blocks covers an image of spatial shape ``S`` (2-D or 3-D); a block is ``block`` pixels along
every axis, or ``block[i]`` along axis ``i`` (anisotropic voxels: ``(4, 8, 8)``). Edge blocks that stick
out are padded, so every block is whole in padded coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    import torch

Block = int | Sequence[int]


def block_sizes(block: Block, ndim: int) -> tuple[int, ...]:
    """``block`` as one size per axis (an int is the same size along every axis)."""
    sizes = (int(block),) * ndim if np.isscalar(block) else tuple(int(b) for b in block)
    if len(sizes) == 1:
        sizes = sizes * ndim
    if len(sizes) != ndim or min(sizes) < 1:
        raise UserError(f"the block size {block} does not fit a {ndim}-D image: give one size, or {ndim} sizes >= 1")
    return sizes


def blocks_touching(mask: np.ndarray, block: Block) -> np.ndarray:
    """Grid-shaped bool array: which blocks of a ``block``-sized grid contain a pixel of ``mask`` (any N-D)."""
    mask = np.asarray(mask, bool)
    sizes = block_sizes(block, mask.ndim)
    grid = tuple(-(-s // b) for s, b in zip(mask.shape, sizes))
    padded = np.zeros(tuple(g * b for g, b in zip(grid, sizes)), dtype=bool)
    padded[tuple(slice(0, s) for s in mask.shape)] = mask
    split = [d for g, b in zip(grid, sizes) for d in (g, b)]
    return padded.reshape(split).any(axis=tuple(range(1, 2 * len(grid), 2)))


def paint_blocks(blocks: np.ndarray, block: Block, shape: tuple[int, ...]) -> np.ndarray:
    """A grid-shaped bool array (as :func:`blocks_touching` gives) -> the bool pixel mask of ``shape`` they cover."""
    out = np.asarray(blocks, bool)
    for axis, b in enumerate(block_sizes(block, len(shape))):
        out = np.repeat(out, b, axis=axis)
    return np.ascontiguousarray(out[tuple(slice(0, s) for s in shape)])


def block_index(corners: "torch.Tensor", block: Block) -> tuple["torch.Tensor", ...]:
    """Per spatial axis, the index tensor ``(n, b0, ..., bD)`` of the blocks starting at ``corners`` ``(n, D)``.

    ``x[(rows,) + (slice(None),) + block_index(c, b)]`` on ``(N, C, *S)`` gives ``(n, b0, ..., bD, C)``.
    """
    import torch

    n, d = corners.shape
    sizes = block_sizes(block, d)
    out = []
    for axis, b in enumerate(sizes):
        shape = [1] * (d + 1)
        shape[1 + axis] = b
        ar = torch.arange(b, device=corners.device)
        out.append(corners[:, axis].reshape([n] + [1] * d) + ar.reshape(shape))
    return tuple(out)


class BlockGrid:
    """The blocks of an image of spatial shape ``shape`` that do not touch ``exclude`` (e.g. the RoI)."""

    def __init__(self, shape: tuple[int, ...], block: Block, exclude: np.ndarray | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.sizes = block_sizes(block, len(self.shape))
        self.block = self.sizes[0] if len(set(self.sizes)) == 1 else self.sizes
        self.grid_shape = tuple(-(-s // b) for s, b in zip(self.shape, self.sizes))
        self.padded_shape = tuple(g * b for g, b in zip(self.grid_shape, self.sizes))
        self.touching = (blocks_touching(exclude, self.sizes) if exclude is not None
                         else np.zeros(self.grid_shape, bool))
        self.coords = np.argwhere(~self.touching)  # (nb, D) grid coordinates, raster order
        self.corners = self.coords * np.array(self.sizes)  # (nb, D) first pixel of each block

    @property
    def n_blocks(self) -> int:
        return len(self.coords)

    @property
    def keys(self) -> np.ndarray:
        """``(nb,)`` each block's raster index in the whole grid (excluded blocks counted): where it is, whatever
        else the grid excludes."""
        return np.ravel_multi_index(tuple(self.coords.T), self.grid_shape).astype(np.int64)

    @property
    def partial_edges(self) -> bool:
        """True when the shape is not a multiple of the block (edge blocks are narrower)."""
        return any(s % b for s, b in zip(self.shape, self.sizes))

    def centres(self) -> np.ndarray:
        """``(nb, D)`` centre pixel of each block (clipped to the image)."""
        return np.minimum(self.corners + (np.array(self.sizes) - 1) // 2, np.array(self.shape) - 1)

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
        for axis, b in enumerate(self.sizes):
            grid = np.repeat(grid, b, axis=axis)
        return np.ascontiguousarray(grid[tuple(slice(0, s) for s in self.shape)])
