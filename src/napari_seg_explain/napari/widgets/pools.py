"""The perturbation pool a method draws replacement blocks from, chosen in the dock and built in the worker.

The choice is validated in the GUI thread (:func:`pool_spec`: does the volume have other slices, are there
other image layers, is the folder a folder) and kept as a :class:`PoolSpec` that holds references to layer
data only; :meth:`PoolSpec.build` is the ``(model, block) -> TilePool`` recipe an
:class:`~napari_seg_explain.core.jobs.ExplainJob` runs in the worker (reading, normalising).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.errors import UserError
from .inputs import is_volume, n_slices, spatial_ndim

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from ...core.models import SegmentationModel
    from ...core.perturb.pools import TilePool


def pool_volume_text(exclude: int) -> str:
    """The pool entry of the other slices of the volume, naming how many neighbours are left out."""
    return f"Other slices of this volume (±{int(exclude)} excluded)"


POOL_VOLUME = pool_volume_text(5)  # the entry's key (its text follows the 'Pool exclude ±' value)
POOL_LAYERS = "Other open image layers"
POOL_FOLDER = "Images in a folder…"
POOL_SELF = "The image itself (fallback, not the paper's setting)"
POOL_CHOICES = (POOL_VOLUME, POOL_LAYERS, POOL_FOLDER, POOL_SELF)


@dataclass
class PoolSpec:
    """What the perturbation pool is made of; :meth:`build` runs in the worker (reads, normalises)."""

    kind: str
    arrays: list[Any] = field(default_factory=list)  # references to layer data (read, never written)
    rgb: list[bool] = field(default_factory=list)
    slice_index: int | None = None
    exclude: int = 5
    folder: str | None = None
    exclude_source: str | None = None
    description: str = ""

    def planes(self) -> list[np.ndarray]:
        """The pool's 2-D images as ``(C, H, W)`` float32."""
        out: list[np.ndarray] = []
        if self.kind == "volume":  # several arrays: the contrasts of one volume, stacked as channels
            vols = self.arrays
            out = [np.stack([np.asarray(v[k], dtype=np.float32) for v in vols]) for k in range(vols[0].shape[0])
                   if abs(k - int(self.slice_index)) > self.exclude]
        elif self.kind == "layers":
            for data, rgb in zip(self.arrays, self.rgb):
                if rgb:
                    arr = np.asarray(data)[..., :3]
                    stack = [np.moveaxis(arr, -1, 0)] if arr.ndim == 3 else [np.moveaxis(a, -1, 0) for a in arr]
                elif data.ndim == 2:
                    stack = [np.asarray(data)[None]]
                else:
                    stack = [np.asarray(data[k])[None] for k in range(data.shape[0])]
                out += [np.asarray(s, dtype=np.float32) for s in stack]
        return out  # constant images included: the pool is the data's distribution

    def build(self, model: "SegmentationModel", block: int) -> "TilePool | None":
        from ...core.perturb.pools import pool_from_arrays, pool_from_paths

        if self.kind == "self":
            return None  # the method falls back to the image itself and records a warning
        if self.kind == "folder":
            return pool_from_paths(model, [self.folder], block, exclude_source=self.exclude_source)
        planes = self.planes()
        if not planes:
            raise UserError(f"the perturbation pool ({self.description}) holds no usable image; pick another pool")
        return pool_from_arrays(model, planes, block, source=self.description)


def pool_spec(choice: str, viewer: "napari.Viewer", image: "Image", z: int | None, folder: str = "",
              exclude: int = 5) -> PoolSpec:
    """Validate the pool choice now (GUI thread); the pool is built later in the worker."""
    meta = image.metadata.get("seg_explain") if isinstance(image.metadata, dict) else None
    source = (meta or {}).get("source")
    if choice == POOL_VOLUME:
        if not is_volume(image):
            what = "a one-slice volume" if spatial_ndim(image) == 3 else "a 2-D image"
            raise UserError(f"{image.name!r} is {what}, it has no other slices: set Pool to "
                            f"'{POOL_LAYERS}', a folder, or the image itself")
        kept = sum(1 for k in range(n_slices(image)) if abs(k - int(z or 0)) > exclude)
        if not kept:
            raise UserError(f"{image.name!r} has no slice farther than ±{exclude} from slice {z} "
                            f"({n_slices(image)} slices): lower 'Pool exclude ±' (Advanced parameters) or "
                            "choose another Pool")
        return PoolSpec("volume", [image.data], [False], slice_index=z, exclude=exclude,
                        description=f"other slices of {image.name!r} (excluding ±{exclude} around {z})")
    if choice == POOL_LAYERS:
        others = _other_images(viewer, image)
        if not others:
            raise UserError("there is no other image layer to draw replacement blocks from (the plugin's result "
                            "layers do not count): open some images, or choose another Pool")
        return PoolSpec("layers", [lay.data for lay in others], [bool(lay.rgb) for lay in others],
                        description=f"image layers {', '.join(repr(lay.name) for lay in others)}")
    if choice == POOL_FOLDER:
        if not folder or not Path(folder).is_dir():
            raise UserError(f"the Pool folder {folder!r} is not a folder: choose a folder of images (PNG, NIfTI, "
                            "...) with the button next to it")
        return PoolSpec("folder", folder=folder, exclude_source=source, description=f"images in {folder}")
    if choice == POOL_SELF:
        return PoolSpec("self", description="the explained image itself")
    raise UserError(f"unknown perturbation pool {choice!r}")


def usable_pool(choice: str, viewer: "napari.Viewer", image: "Image") -> str:
    """``choice``, or a pool that exists when ``choice`` is the other slices of an image that has none (a 2-D
    image, a one-slice volume): the other open image layers, else the image itself (the method records the
    fallback as a warning)."""
    if choice != POOL_VOLUME or is_volume(image):
        return choice
    return POOL_LAYERS if _other_images(viewer, image) else POOL_SELF


def _other_images(viewer: "napari.Viewer", image: "Image") -> list["Image"]:
    """The open image layers other than ``image``; the plugin's own maps (result maps, streamed or partial maps)
    are not images. Compared by name: a dock made from the plugin menu sees the layers through napari's
    public-only proxies, so the same layer is not always the same object."""
    from napari.layers import Image as ImageLayer

    from ..layers import is_result_layer

    return [lay for lay in viewer.layers if isinstance(lay, ImageLayer) and lay.name != image.name
            and not is_result_layer(lay) and spatial_ndim(lay) in (2, 3)]


def volume_pool(choice: str, viewer: "napari.Viewer", image: "Image", folder: str = "",
                reorder: Any = None) -> tuple[Any, str]:
    """A 3-D model's pool: ``(recipe, description)``, the recipe ``None`` for crops of the explained volume itself
    (the core's recorded fallback; also what 'other slices of this volume' means for a 3-D model). Other open
    volume layers are put in the model's voxel order with ``reorder`` (the explained volume's)."""
    if choice in (POOL_VOLUME, POOL_SELF):
        return None, "the explained volume itself"
    if choice == POOL_LAYERS:
        others = [lay for lay in _other_images(viewer, image) if spatial_ndim(lay) == 3 and not lay.rgb
                  and n_slices(lay) > 1]
        if not others:
            raise UserError("there is no other open volume to draw replacement cubes from (the plugin's result "
                            "layers do not count): open other volumes, or choose another Pool")
        data = [lay.data for lay in others]
        desc = f"volume layers {', '.join(repr(lay.name) for lay in others)}"

        def build(model: "SegmentationModel", block: Any) -> "TilePool":
            from ...core.perturb.pools import pool_from_arrays

            vols = [np.moveaxis(np.asarray(d, dtype=np.float32), 0, -1)[None] for d in data]
            if reorder is not None:
                vols = [reorder.channels(v) for v in vols]
            return pool_from_arrays(model, vols, block, source=desc)

        return build, desc
    if choice == POOL_FOLDER:
        if not folder or not Path(folder).is_dir():
            raise UserError(f"the Pool folder {folder!r} is not a folder: choose a folder of volumes (NIfTI, ...) "
                            "with the button next to it")
        meta = image.metadata.get("seg_explain") if isinstance(image.metadata, dict) else None
        source = (meta or {}).get("source")

        def build_folder(model: "SegmentationModel", block: Any) -> "TilePool":
            from ...core.perturb.pools import pool_from_paths

            return pool_from_paths(model, [folder], block, exclude_source=source)

        return build_folder, f"volumes in {folder}"
    raise UserError(f"unknown perturbation pool {choice!r}")
