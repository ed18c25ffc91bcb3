"""Where replacement blocks come from: random crops of *other* images of the dataset (N-D).

A :class:`TilePool` holds the pool images in their raw intensities on the model's device, one unpadded tensor
``(n, C, *S)`` per image shape (a pool of tiles and whole slices is not padded to the largest image). Every image counts, background and constant ones included: the pool is the data's
distribution (dropping constant tiles makes every replacement insert tissue, and a model with group or
instance normalisation then finds every block "supporting"). A folder of pre-cut tiles in the PdCR
authors' format (``<image>_<row>_<col>.png``, one block each) is such a pool.

Crops are mapped into the model's input space with the *explained image's* normalisation
(:meth:`TilePool.bind`): the perturbed image is the raw image with raw crops pasted in, as the model would
see it, and nothing else of the image changes. Draws are uniform with replacement (pool image, then
position), all from one seeded CPU generator, so a seed gives the same tiles on any device and batch size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IncompatibleInputError, UserError
from .grid import Block, block_index, block_sizes

if TYPE_CHECKING:
    import torch

    from ..images import Image
    from ..models import SegmentationModel


@dataclass
class TilePool:
    """Raw pool images, one tensor ``(n_g, C, *S_g)`` per spatial shape, with each image's size ``(P, D)``.

    Images of one shape are stacked unpadded; a pool mixing shapes (8x8 tiles and whole slices) keeps one
    group per shape instead of padding every tile to the largest image (10,000 8x8 tiles and one 512x512
    slice would otherwise take 10 GB). ``group`` / ``member`` ``(P,)``: where image ``i`` is stored.
    """

    groups: "list[torch.Tensor]"
    sizes: "torch.Tensor"
    source: str
    avoid_self_overlap: bool = False  # True when the pool is the explained image itself
    n_constant: int = 0
    group: "torch.Tensor | None" = None  # (P,) group of each image (None: one group, in order)
    member: "torch.Tensor | None" = None  # (P,) index of each image inside its group

    @property
    def n_images(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.groups[0].shape[1])

    @property
    def spatial_ndim(self) -> int:
        return int(self.sizes.shape[1])

    @property
    def images(self) -> "torch.Tensor":
        """All images padded with zeros to the largest ``(P, C, *Smax)`` (for inspection; built on demand for
        a pool of several shapes, which can be large)."""
        import torch

        if len(self.groups) == 1:
            return self.groups[0]
        smax = [int(v) for v in self.sizes.max(dim=0).values]
        g0 = self.groups[0]
        out = torch.zeros((self.n_images, g0.shape[1], *smax), dtype=g0.dtype, device=g0.device)
        for i in range(self.n_images):
            g, m = int(self.group[i]), int(self.member[i])
            t = self.groups[g][m]
            out[(i, slice(None)) + tuple(slice(0, n) for n in t.shape[1:])] = t
        return out

    def describe(self) -> dict:
        return {"source": self.source, "n_images": self.n_images, "n_constant_images": self.n_constant,
                "self_pool": self.avoid_self_overlap, "intensity_space": "raw, normalised as the explained image"}

    def bind(self, model: "SegmentationModel", image: "torch.Tensor") -> "TilePool":
        """The pool in the model's input space, normalised with the statistics of ``image`` ``(1, C, *S)``."""
        if image.shape[1] != self.n_channels:
            raise IncompatibleInputError(f"pool images have {self.n_channels} channels, the image {image.shape[1]}")
        if image.ndim - 2 != self.spatial_ndim:
            raise IncompatibleInputError(f"pool images are {self.spatial_ndim}-D, the image is {image.ndim - 2}-D")
        return TilePool([model.normalize(g, like=image) for g in self.groups], self.sizes, self.source,
                        self.avoid_self_overlap, self.n_constant, self.group, self.member)

    def draw(self, n: int, block: Block, generator: "torch.Generator",
             avoid: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Draw ``n`` crops: ``(n, 1 + D)`` long tensor of (pool image, first index per axis), on the CPU.

        ``avoid``: ``(n, D)`` first pixels of the blocks being replaced; for a self-pool, crops that overlap
        their block are redrawn (the image itself outside the block).
        """
        import torch

        d = self.spatial_ndim
        idx = torch.randint(0, self.n_images, (n,), generator=generator)

        def uniforms(rows: int, _attempt: int = 0) -> "torch.Tensor":
            return torch.rand((rows, d), generator=generator, dtype=torch.float64)

        return self._placed(idx, block, uniforms(n), lambda bad, attempt: uniforms(int(bad.sum())), avoid)

    def draw_keyed(self, seed: int, stream: int, keys: "torch.Tensor", index: "torch.Tensor", block: Block,
                   avoid: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Like :meth:`draw`, but draw ``i`` is a function of ``(seed, stream, keys[i], index[i])`` alone
        (:mod:`.keyed_draws`): a block's ``j``-th draw does not depend on what else is drawn. ``keys``: the
        blocks' positions in the whole grid; ``index``: the draw's number for its block."""
        import torch

        from .keyed_draws import keyed_uniforms

        keys_np, index_np = np.asarray(keys), np.asarray(index)
        u = torch.from_numpy(keyed_uniforms(seed, stream, keys_np, index_np, 1 + self.spatial_ndim))
        idx = (u[:, 0] * self.n_images).long().clamp(max=self.n_images - 1)

        def again(bad: "torch.Tensor", attempt: int) -> "torch.Tensor":
            b = bad.numpy()
            return torch.from_numpy(keyed_uniforms(seed, stream, keys_np[b], index_np[b], self.spatial_ndim,
                                                   attempt=attempt))

        return self._placed(idx, block, u[:, 1:], again, avoid)

    def _placed(self, idx: "torch.Tensor", block: Block, first: "torch.Tensor", again: Any,
                avoid: "torch.Tensor | None") -> "torch.Tensor":
        """``(n, 1 + D)`` draws: pool image ``idx``, first index ``floor(u * span)`` per axis from the uniforms
        ``first`` ``(n, D)``; for a self-pool, crops overlapping their block (``avoid``) are placed again from
        ``again(bad, attempt)`` (uniforms for the ``bad`` rows), up to 100 times."""
        import torch

        block_t = torch.tensor(block_sizes(block, self.spatial_ndim))
        span = (self.sizes.cpu()[idx] - block_t + 1).to(torch.float64)
        pos = (first * span).floor().long()
        if self.avoid_self_overlap and avoid is not None:
            for attempt in range(1, 101):
                bad = ((pos - avoid).abs() < block_t).all(dim=1)
                if not bad.any():
                    break
                pos[bad] = (again(bad, attempt) * span[bad]).floor().long()
        return torch.cat([idx[:, None], pos], dim=1)

    def crops(self, draws: "torch.Tensor", block: Block) -> "torch.Tensor":
        """Gather crops for ``draws`` ``(n, 1 + D)`` -> ``(n, b0, ..., bD, C)`` on the pool's device."""
        import torch

        dev = self.groups[0].device
        if len(self.groups) == 1:
            d = draws.to(dev)
            which = d[:, 0].reshape([-1] + [1] * (d.shape[1] - 1))
            return self.groups[0][(which, slice(None)) + block_index(d[:, 1:], block)]
        d = draws.cpu()
        g_of, m_of = self.group[d[:, 0]], self.member[d[:, 0]]
        out = None
        for g in torch.unique(g_of).tolist():
            rows = torch.nonzero(g_of == g).flatten()
            which = m_of[rows].to(dev).reshape([-1] + [1] * (d.shape[1] - 1))
            part = self.groups[g][(which, slice(None)) + block_index(d[rows, 1:].to(dev), block)]
            if out is None:
                out = torch.empty((len(d), *part.shape[1:]), dtype=part.dtype, device=dev)
            out[rows.to(dev)] = part
        return out


def _stack(model: "SegmentationModel", arrays: Sequence[np.ndarray], source: str, block: Block,
           self_pool: bool = False) -> TilePool:
    """Pack raw ``(C, *S)`` arrays into a pool; only images smaller than a block are left out."""
    import torch

    arrays = [np.asarray(a) for a in arrays]

    def fits(a: np.ndarray) -> bool:
        return all(s >= b for s, b in zip(a.shape[1:], block_sizes(block, a.ndim - 1)))

    small = [a for a in arrays if not fits(a)]
    keep = [a for a in arrays if fits(a)]
    if not keep:
        raise UserError(f"the perturbation pool ({source}) holds no image of at least {block} pixels per axis "
                        f"({len(small)} smaller ones were refused); use larger images or a smaller block (--patch)")
    c, nd = keep[0].shape[0], keep[0].ndim - 1
    for a in keep:
        if a.shape[0] != c:
            raise IncompatibleInputError(f"pool images have different channel counts ({c} and {a.shape[0]})")
        if a.ndim - 1 != nd:
            raise IncompatibleInputError(f"pool images mix {nd}-D and {a.ndim - 1}-D images")
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(keep):
        by_shape.setdefault(tuple(a.shape[1:]), []).append(i)
    groups, group, member = [], torch.zeros(len(keep), dtype=torch.long), torch.zeros(len(keep), dtype=torch.long)
    for g, idx in enumerate(by_shape.values()):  # one unpadded tensor per shape, stacked on the host first
        groups.append(torch.from_numpy(np.stack([np.asarray(keep[i], dtype=np.float32) for i in idx]))
                      .to(model.device))
        group[idx] = g
        member[idx] = torch.arange(len(idx))
    sizes = torch.tensor([a.shape[1:] for a in keep], dtype=torch.long).reshape(len(keep), nd)
    n_const = sum(1 for a in keep if np.ptp(a) == 0)
    if small:
        source += f" ({len(small)} images smaller than a block left out)"
    if len(groups) == 1:
        return TilePool(groups, sizes, source, avoid_self_overlap=self_pool, n_constant=n_const)
    return TilePool(groups, sizes, source, self_pool, n_const, group, member)


def _channels_first(a: np.ndarray, spatial_dims: int) -> np.ndarray:
    a = np.asarray(a)
    return a[None] if a.ndim == spatial_dims else a


def pool_from_arrays(model: "SegmentationModel", arrays: Sequence[np.ndarray], block: Block = 8,
                     source: str = "arrays") -> TilePool:
    """Pool from in-memory images, each ``(C, *S)`` (or ``S`` alone for one channel)."""
    nd = model.card.spatial_dims
    return _stack(model, [_channels_first(a, nd) for a in arrays], source, block)


def pool_from_volume(model: "SegmentationModel", image: "Image", slice_index: int, block: Block = 8,
                     exclude: int = 5) -> TilePool:
    """Other axial slices of the same volume (for a 2-D model), leaving out ``exclude`` neighbours each side."""
    if exclude < 0:
        raise UserError(f"the number of neighbouring slices left out of the pool must be >= 0 (got {exclude})")
    slices = [image.slice2d(z) for z in range(image.n_slices) if abs(z - slice_index) > exclude]
    if not slices:
        raise UserError(f"the volume has no slice further than {exclude} slices from slice {slice_index} "
                        "to draw replacement blocks from; choose a pool of other images")
    return _stack(model, slices, f"other slices of {image.source or 'the volume'} (excluding +-{exclude})", block)


def pool_from_image_itself(model: "SegmentationModel", image: np.ndarray, block: Block = 8) -> TilePool:
    """Fallback for a lone image: crops of the image itself, outside the block being replaced."""
    warnings.warn("no other images to draw replacement blocks from: using crops of the explained image itself "
                  "(outside each block). Choose a pool of other images for the paper's setting.",
                  UserWarning, stacklevel=2)
    return _stack(model, [_channels_first(image, model.card.spatial_dims)],
                  "the explained image itself (outside the block)", block, self_pool=True)


POOL_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".nrrd", ".mha", ".npy")


def _pool_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not any(c.suffix.lower() == ".dcm" for c in p.iterdir()):
            files += sorted(c for c in p.iterdir() if c.is_file() and c.name.lower().endswith(POOL_IMAGE_SUFFIXES))
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"pool path {p} does not exist; check the path")
    return files


def pool_from_paths(model: "SegmentationModel", paths: Sequence[str | os.PathLike], block: Block = 8,
                    exclude_source: str | None = None) -> TilePool:
    """Pool from files and folders (e.g. a folder of pre-cut 8x8 tiles).

    For a 2-D model 2-D images count once and volumes contribute every axial slice; for a 3-D model each
    volume counts once. ``exclude_source``: the explained image's path, left out if found.
    """
    from ..images import read_image
    from ..models.space import PreprocessingModel

    arrays: list[np.ndarray] = []
    for f in _pool_files(paths):
        if exclude_source and Path(f).resolve() == Path(exclude_source).resolve():
            continue
        img = read_image(f)
        if isinstance(model, PreprocessingModel):  # preprocessed as the model's own tool does it
            pre = model.prepare(img)[0]
            arrays += [pre] if pre.ndim - 1 == model.card.spatial_dims else [pre[:, k] for k in range(pre.shape[1])]
        elif model.card.spatial_dims == 3 and img.spatial_ndim == 3:
            from ..orient import reorder_for

            arrays.append(reorder_for(img, model.card.orientation).channels(img.data))  # as the model sees it
        elif img.spatial_ndim == 2 or model.card.spatial_dims == 3:
            arrays.append(img.data if img.spatial_ndim == model.card.spatial_dims else img.slice2d())
        else:
            arrays += [img.slice2d(z) for z in range(img.n_slices)]
    if not arrays:
        raise UserError(f"no usable pool image in {', '.join(map(str, paths))} "
                        f"(supported: {', '.join(POOL_IMAGE_SUFFIXES)}); add images to it, or leave --pool out to "
                        "use other slices of the volume")
    return _stack(model, arrays, f"{len(arrays)} images from {', '.join(map(str, paths))}", block)
