"""PNG figures of explanations with matplotlib (Agg canvas: no GUI, safe in threads and on servers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .results import Explanation


def _gray(ax, image2d: np.ndarray) -> None:
    ax.imshow(image2d, cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax, mask: np.ndarray, color: str, lw: float = 1.2) -> None:
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=lw)


def pdcr_limits(amap: np.ndarray) -> float:
    """Symmetric colour limit: the largest |ATE| (1 Dice point when the map is all zero)."""
    finite = np.abs(amap[np.isfinite(amap)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _title(expl: "Explanation") -> str:
    """``<Method>  <first stats of its spec>``."""
    from .explainers import registry

    spec = registry.get(expl.method)
    parts = []
    for stat in spec.stats[:3]:
        value = expl.stats.get(stat.key)
        if value is not None:
            try:
                parts.append(f"{stat.label} {stat.fmt.format(value)}")
            except (ValueError, TypeError):
                parts.append(f"{stat.label} {value}")
    return f"{spec.title}  " + "  ".join(parts)


def draw_diverging(ax, image2d: np.ndarray, amap: np.ndarray):
    """Signed map over the scan: red negative (supports), blue positive (works against), transparent at 0."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _gray(ax, image2d)
    lim = pdcr_limits(amap)
    norm = Normalize(-lim, lim)
    rgba = colormaps["RdBu"](norm(np.nan_to_num(amap)))
    strength = np.abs(np.nan_to_num(amap)) / lim
    rgba[..., 3] = np.where(strength > 0, 0.15 + 0.8 * np.sqrt(strength), 0.0)  # 0: transparent; stronger: opaque
    ax.imshow(rgba, interpolation="nearest")
    return ScalarMappable(norm=norm, cmap="RdBu")


def draw_saliency(ax, image2d: np.ndarray, amap: np.ndarray):
    """A [0, 1] map in inferno over the scan, transparent where it is 0."""
    _gray(ax, image2d)
    sal = np.ma.masked_where(amap <= 0, amap)
    return ax.imshow(sal, cmap="inferno", vmin=0, vmax=1, alpha=0.8, interpolation="nearest")


COLORBAR_LABELS = {"diverging": "red: supports the RoI, blue: works against it (transparent: irrelevant)",
                   "saliency": "saliency (transparent at 0)"}


def draw_explanation(ax, image2d: np.ndarray, expl: "Explanation"):
    """One panel drawn from the method's spec: its map in its layer style, masks in cyan, the RoI in lime."""
    from .explainers import registry

    layers = registry.get(expl.method).layers
    main = next((lay for lay in layers if lay.key == "map"), None)
    style = main.style if main is not None else "diverging"
    im = (draw_saliency if style == "saliency" else draw_diverging)(ax, image2d, expl.map)
    for lay in layers:
        if lay.style == "mask" and lay.key in expl.maps:
            _outline(ax, expl.maps[lay.key], "cyan", 1.0)
    _outline(ax, expl.roi, "lime", 1.5)
    ax.set_title(_title(expl), fontsize=8)
    return im, COLORBAR_LABELS.get(style, "")


def save_demo_figure(path: Path, image2d: np.ndarray, segmentation: np.ndarray,
                     explanations: "list[Explanation]", title: str) -> Path:
    """Segmentation + RoIs, then one panel per explanation (drawn from its spec); written atomically."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4 * (1 + len(explanations)), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(explanations))
    _gray(axes[0], image2d)
    _outline(axes[0], segmentation > 0, "yellow", 0.8)
    for expl in explanations:
        _outline(axes[0], expl.roi, "lime", 1.5)
    axes[0].set_title("model segmentation (yellow), RoI (green)", fontsize=8)
    for ax, expl in zip(axes[1:], explanations):
        im, label = draw_explanation(ax, image2d, expl)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
