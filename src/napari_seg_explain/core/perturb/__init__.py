"""Perturbations: N-D block grids (grid.py) and the pools replacement blocks are cut from (pools.py)."""

from .grid import BlockGrid, block_index, blocks_touching
from .pools import (TilePool, pool_from_arrays, pool_from_image_itself, pool_from_paths, pool_from_volume)

__all__ = ["BlockGrid", "block_index", "blocks_touching", "TilePool", "pool_from_arrays", "pool_from_image_itself",
           "pool_from_paths", "pool_from_volume"]
