"""Models that bring their own preprocessing (nnU-Net folders, MONAI bundles): the grid they see.

Such a model is explained where it computes: on its preprocessed grid (cropped, resampled, normalised as
its own pipeline does). A :class:`ModelSpace` maps spatial arrays between the display grid of the scan
(``Image.data``, see ``images.py``) and that grid: masks in (nearest neighbour), maps back (nearest
neighbour, NaN outside what the model saw). A :class:`PreprocessingModel` is a
:class:`~.model.SegmentationModel` whose network runs on preprocessed patches (card normalisation
``none``) and which segments a whole scan the way its own tool does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from .model import SegmentationModel

if TYPE_CHECKING:
    from ..images import Image
    from ..progress import Progress


def fill_value(dtype: np.dtype) -> Any:
    """What lies outside the model's grid in a display array: NaN (maps), False (masks), 0 (labels)."""
    kind = np.dtype(dtype).kind
    return np.nan if kind == "f" else (False if kind == "b" else 0)


class ModelSpace(ABC):
    """The display grid of one scan <-> a model's preprocessed grid (spatial arrays, no channel axis)."""

    #: short text for result metadata, e.g. "nnU-Net preprocessed (3d_fullres, spacing 1.0x1.0x1.0 mm)"
    codes: str = ""

    @abstractmethod
    def model(self, arr: np.ndarray) -> np.ndarray:
        """A display-grid array (mask or labels) on the model's grid, nearest neighbour."""

    @abstractmethod
    def display(self, arr: np.ndarray) -> np.ndarray:
        """A model-grid array back on the display grid, nearest neighbour; :func:`fill_value` outside."""

    def describe(self) -> dict[str, Any]:
        return {"model_space": self.codes}


class PreprocessingModel(SegmentationModel, ABC):
    """A network fed preprocessed patches, plus the tool's own preprocessing and whole-scan inference."""

    #: what differs from the tool's own prediction when explaining (recorded in each result's deviations)
    explain_deviations: tuple[str, ...] = ()

    @abstractmethod
    def prepare(self, image: "Image") -> tuple[np.ndarray, ModelSpace]:
        """``(C, *S_model)`` float32, preprocessed as the tool does, and the grid mapping for this scan."""

    def prepared(self, image: "Image") -> tuple[np.ndarray, ModelSpace]:
        """:meth:`prepare`, remembered for the last two scans (keyed by content and geometry): segmenting a scan
        and then explaining it (or several RoIs of it) preprocess it once."""
        import hashlib

        h = hashlib.blake2b(np.ascontiguousarray(image.data).view(np.uint8).ravel(), digest_size=16)
        h.update(np.asarray(image.affine, dtype=np.float64).tobytes())
        h.update(repr((image.data.shape, str(image.data.dtype), image.spacing)).encode())
        key = h.hexdigest()
        cache: dict[str, tuple[np.ndarray, ModelSpace]] = self.__dict__.setdefault("_prepared", {})
        if key not in cache:
            if len(cache) >= 2:
                cache.pop(next(iter(cache)))
            cache[key] = self.prepare(image)
        return cache[key]

    @abstractmethod
    def segment_scan(self, image: "Image") -> Generator["Progress", None, np.ndarray]:
        """Labels on the display grid, computed the tool's own way (sliding window, ensembling...)."""

    def summary(self) -> dict[str, Any]:
        """Format, folds, patch size, spacing, channels and classes, for the model panel and results."""
        return {"format": self.format, "patch size": list(self.card.input_size or ()),
                "channels": list(self.channel_names), "classes": list(self.card.classes)}

    def segment(self, image: "Image", slice_index: int | None = None, *, batch_size: int = 0,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Labels on the scan's display grid (``slice_index`` ignored: the tool segments whole scans)."""
        from ..progress import drive

        self.check_channels(image.n_channels)
        return drive(self.segment_scan(image), (lambda ev: progress(ev.done, ev.total)) if progress else None)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"summary": self.summary()}
