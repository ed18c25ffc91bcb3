"""Colormaps and display styles of result layers, one per ``ResultLayer.style`` of an explainer spec.

* ``"diverging"``: a signed map (e.g. PdCR's ATE). Red = negative (the block supports the RoI segmentation),
  blue = positive (it works against it), transparent at exactly 0 (irrelevant) and at NaN (not evaluated),
  with symmetric contrast limits ``(-L, L)``, ``L = max |value|`` (the colour conventions of docs/napari_plugin.md).
* ``"saliency"``: a map in [0, 1] (e.g. MiSuRe), inferno, transparent at 0.
* ``"mask"``: a Labels layer drawn as a cyan outline (napari's Labels ``contour``, :data:`MASK_CONTOUR` pixels
  thick), so that the scan under a large region stays readable; ``contour = 0`` in the layer controls fills it.
* ``"outline"``: the RoI as a Shapes outline (lime edge, no face); see :mod:`napari_seg_explain.napari.layers`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.utils.colormaps import Colormap

ROI_COLOR = "lime"
MASK_COLORMAP = {0: "transparent", 1: "cyan", None: "transparent"}
MASK_CONTOUR = 1  # outline thickness (data pixels) of a "mask" layer; 0 would fill the region
MASK_OPACITY = 0.9  # an outline is thin: nearly opaque

# colour stops at fractions of the contrast range (-L .. +L). The centre band is fully transparent (its
# half-width is small enough that any |value| above 0.2 % of L is coloured); weak effects are pale and
# see-through, so the scan stays readable, strong ones saturated and opaque.
_CENTRE = 0.001
DIVERGING_COLORS = {
    "strong_support": (0.70, 0.02, 0.10, 1.0),   # -L: dark red, opaque
    "weak_support": (0.98, 0.45, 0.35, 0.40),    # just below 0: light red, see-through
    "weak_against": (0.40, 0.60, 1.00, 0.40),    # just above 0: light blue, see-through
    "strong_against": (0.05, 0.20, 0.80, 1.0),   # +L: dark blue, opaque
}


@lru_cache(maxsize=None)
def diverging_colormap() -> "Colormap":
    """Diverging colormap for signed maps: red (negative, supports) -> transparent (0) -> blue (positive)."""
    from napari.utils.colormaps import Colormap

    c = DIVERGING_COLORS
    clear = (1.0, 1.0, 1.0, 0.0)
    return Colormap(
        colors=[c["strong_support"], c["weak_support"], clear, clear, c["weak_against"], c["strong_against"]],
        controls=[0.0, 0.5 - _CENTRE, 0.5 - _CENTRE / 2, 0.5 + _CENTRE / 2, 0.5 + _CENTRE, 1.0],
        name="seg_explain_diverging", display_name="diverging (red supports, blue works against)",
    )


#: whole-volume maps (3-D models): napari's volume rendering draws NaN at the colormap's low end, so their
#: colormap is transparent at both ends and their contrast limits are widened so that ±L fall just inside
VOLUME_EDGE = 0.002


@lru_cache(maxsize=None)
def volume_diverging_colormap() -> "Colormap":
    """:func:`diverging_colormap` with transparent ends: a whole-volume map's NaN (outside the context box, on
    the RoI) stays transparent in napari's 3-D view; use it with :func:`volume_limit`."""
    from napari.utils.colormaps import Colormap

    c = DIVERGING_COLORS
    clear = (1.0, 1.0, 1.0, 0.0)
    e = VOLUME_EDGE
    return Colormap(
        colors=[clear, c["strong_support"], c["weak_support"], clear, clear, c["weak_against"],
                c["strong_against"], clear],
        controls=[0.0, e, 0.5 - _CENTRE, 0.5 - _CENTRE / 2, 0.5 + _CENTRE / 2, 0.5 + _CENTRE, 1.0 - e, 1.0],
        name="seg_explain_diverging_volume", display_name="diverging, volume (red supports, blue works against)",
    )


def volume_limit(lim: float) -> float:
    """The contrast limit that puts ``±lim`` on the opaque ends of :func:`volume_diverging_colormap`."""
    return float(lim) / (1.0 - 2.0 * VOLUME_EDGE)


@lru_cache(maxsize=None)
def saliency_colormap() -> "Colormap":
    """Inferno with alpha 0 at the bottom: pixels of zero saliency are transparent."""
    from napari.utils.colormaps import Colormap
    from napari.utils.colormaps.colormap_utils import ensure_colormap

    base = ensure_colormap("inferno")
    ramp = np.linspace(0.0, 1.0, 63)
    colors = np.vstack([[0.0, 0.0, 0.0, 0.0], base.map(ramp)])
    controls = np.concatenate([[0.0], 0.002 + ramp * 0.998])
    return Colormap(colors=colors, controls=controls, name="inferno_transparent_zero",
                    display_name="inferno (transparent at 0)")


def symmetric_limit(amap: np.ndarray) -> float:
    """``L`` of the symmetric contrast limits ``(-L, L)``: the largest finite ``|value|`` (1 if all 0/NaN)."""
    a = np.asarray(amap, dtype=np.float32)
    finite = np.abs(a[np.isfinite(a)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def image_style(style: str, plane: np.ndarray) -> dict[str, Any]:
    """Image-layer keyword arguments (colormap, contrast limits, blending) of a ``"diverging"`` or
    ``"saliency"`` map whose values are ``plane``."""
    if style == "diverging":
        lim = symmetric_limit(plane)
        cmap, limits = diverging_colormap(), (-lim, lim)
    elif style == "saliency":
        cmap, limits = saliency_colormap(), (0.0, 1.0)
    else:
        raise ValueError(f"style {style!r} is not an image style")
    return {"colormap": cmap, "contrast_limits": limits, "blending": "translucent", "opacity": 0.85,
            "interpolation2d": "nearest"}


def stream_limits(style: str, plane: np.ndarray) -> tuple[float, float]:
    """Contrast limits of a map streamed in so far: symmetric for a diverging map, ``(0, 1)`` otherwise."""
    if style == "diverging":
        lim = symmetric_limit(plane)
        return (-lim, lim)
    return (0.0, 1.0)
