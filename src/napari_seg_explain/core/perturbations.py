"""Where PdCR's replacement blocks come from: random crops of *other* images of the dataset.

A :class:`TilePool` holds the pool images already normalised as the model sees them (so a crop of a
differently scaled image matches the explained image's intensity space), padded into one tensor on the
model's device. Crops are drawn uniformly with replacement: pool image, then top-left position, as the
PdCR authors draw their pre-cut 8x8 tiles. All draws come from one seeded generator on the CPU, so a
seed gives the same tiles on any device and with any batch size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import IncompatibleInputError, UserError

if TYPE_CHECKING:
    import torch

    from .images import Image
    from .models import SegmentationModel


@dataclass
class TilePool:
    """Normalised pool images ``(P, C, Hmax, Wmax)`` with each image's valid size ``(P, 2)``."""

    images: "torch.Tensor"
    sizes: "torch.Tensor"
    source: str
    avoid_self_overlap: bool = False  # True when the pool is the explained image itself

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def describe(self) -> dict:
        return {"source": self.source, "n_images": self.n_images, "self_pool": self.avoid_self_overlap}

    def draw(self, n: int, block: int, generator: "torch.Generator",
             avoid: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Draw ``n`` crops: ``(n, 3)`` long tensor of (pool image, top row, left column), on the CPU.

        ``avoid``: ``(n, 2)`` top-left corners of the blocks being replaced; for a self-pool, crops that
        overlap their block are redrawn (the image itself outside the block).
        """
        import torch

        sizes = self.sizes.cpu()
        idx = torch.randint(0, self.n_images, (n,), generator=generator)
        pos = self._positions(idx, sizes, block, generator)
        if self.avoid_self_overlap and avoid is not None:
            for _ in range(100):
                bad = ((pos - avoid).abs() < block).all(dim=1)
                if not bad.any():
                    break
                pos[bad] = self._positions(idx[bad], sizes, block, generator)
        return torch.cat([idx[:, None], pos], dim=1)

    @staticmethod
    def _positions(idx: "torch.Tensor", sizes: "torch.Tensor", block: int, gen: "torch.Generator") -> "torch.Tensor":
        import torch

        span = (sizes[idx] - block + 1).to(torch.float64)
        u = torch.rand((len(idx), 2), generator=gen, dtype=torch.float64)
        return (u * span).floor().long()

    def crops(self, draws: "torch.Tensor", block: int) -> "torch.Tensor":
        """Gather crops for ``draws`` ``(n, 3)`` -> ``(n, block, block, C)`` on the pool's device."""
        import torch

        d = draws.to(self.images.device)
        ar = torch.arange(block, device=d.device)
        rows = (d[:, 1:2] + ar)[:, :, None]
        cols = (d[:, 2:3] + ar)[:, None, :]
        return self.images[d[:, 0, None, None], :, rows, cols]


def _stack(model: "SegmentationModel", arrays: Sequence[np.ndarray], source: str, block: int,
           self_pool: bool = False) -> TilePool:
    """Normalise each ``(C, H, W)`` array with the model's card and pack them into a pool."""
    import torch

    keep = [a for a in arrays if min(a.shape[-2:]) >= block]
    if not keep:
        raise UserError(f"the perturbation pool ({source}) holds no image of at least {block}x{block} pixels")
    hmax = max(a.shape[-2] for a in keep)
    wmax = max(a.shape[-1] for a in keep)
    c = keep[0].shape[0]
    out = torch.zeros((len(keep), c, hmax, wmax), dtype=torch.float32, device=model.device)
    sizes = torch.zeros((len(keep), 2), dtype=torch.long)
    for i, a in enumerate(keep):
        if a.shape[0] != c:
            raise IncompatibleInputError(f"pool images have different channel counts ({c} and {a.shape[0]})")
        t = model.normalize(torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))[None])[0]
        out[i, :, : a.shape[-2], : a.shape[-1]] = t
        sizes[i] = torch.tensor(a.shape[-2:])
    return TilePool(out, sizes, source, avoid_self_overlap=self_pool)


def pool_from_arrays(model: "SegmentationModel", arrays: Sequence[np.ndarray], block: int = 8,
                     source: str = "arrays") -> TilePool:
    """Pool from in-memory images, each ``(C, H, W)`` (or ``(H, W)`` for one channel)."""
    arrs = [np.asarray(a)[None] if np.asarray(a).ndim == 2 else np.asarray(a) for a in arrays]
    return _stack(model, arrs, source, block)


def pool_from_volume(model: "SegmentationModel", image: "Image", slice_index: int, block: int = 8,
                     exclude: int = 5) -> TilePool:
    """Other slices of the same volume, leaving out the explained slice and ``exclude`` neighbours each side.

    Slices of constant intensity (empty air above the head) are skipped.
    """
    if exclude < 0:
        raise UserError(f"the number of neighbouring slices left out of the pool must be >= 0 (got {exclude})")
    slices = [image.slice2d(z) for z in range(image.n_slices) if abs(z - slice_index) > exclude]
    slices = [s for s in slices if np.ptp(s) > 0]
    if not slices:
        raise UserError(f"the volume has no slice further than {exclude} slices from slice {slice_index} "
                        "to draw replacement blocks from; give a pool folder with --pool")
    return _stack(model, slices, f"other slices of {image.source or 'the volume'} (excluding +-{exclude})", block)


def pool_from_image_itself(model: "SegmentationModel", image2d: np.ndarray, block: int = 8) -> TilePool:
    """Fallback for a lone 2-D image: crops of the image itself, outside the block being replaced."""
    warnings.warn("no other images to draw replacement blocks from: using crops of the explained image itself "
                  "(outside each block). Give a pool (--pool) of other images for the paper's setting.",
                  UserWarning, stacklevel=2)
    return _stack(model, [np.asarray(image2d)], "the explained image itself (outside the block)", block,
                  self_pool=True)


POOL_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".nrrd", ".mha", ".npy")


def _pool_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not any(c.suffix.lower() == ".dcm" for c in p.iterdir()):
            files += sorted(c for c in p.iterdir() if c.is_file() and c.name.lower().endswith(POOL_IMAGE_SUFFIXES))
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"pool path {p} does not exist")
    return files


def pool_from_paths(model: "SegmentationModel", paths: Sequence[str | os.PathLike], block: int = 8,
                    exclude_source: str | None = None) -> TilePool:
    """Pool from files and folders: 2-D images count once, volumes contribute every slice.

    ``exclude_source``: the explained image's path, left out of the pool if found there.
    """
    from .images import read_image

    files = _pool_files(paths)
    arrays: list[np.ndarray] = []
    for f in files:
        if exclude_source and Path(f).resolve() == Path(exclude_source).resolve():
            continue
        img = read_image(f)
        if img.spatial_ndim == 2:
            arrays.append(img.slice2d())
        else:
            arrays += [img.slice2d(z) for z in range(img.n_slices)]
    arrays = [a for a in arrays if np.ptp(a) > 0]
    if not arrays:
        raise UserError(f"no usable pool image in {', '.join(map(str, paths))} "
                        f"(supported: {', '.join(POOL_IMAGE_SUFFIXES)})")
    return _stack(model, arrays, f"{len(arrays)} images from {', '.join(map(str, paths))}", block)
