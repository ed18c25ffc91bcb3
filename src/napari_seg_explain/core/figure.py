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


def draw_pdcr(ax, image2d: np.ndarray, expl: "Explanation"):
    """Scan in gray, ATE map red (supports) / blue (works against) / transparent (0), RoI outlined."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _gray(ax, image2d)
    amap = expl.map
    lim = pdcr_limits(amap)
    norm = Normalize(-lim, lim)
    rgba = colormaps["RdBu"](norm(np.nan_to_num(amap)))
    strength = np.abs(np.nan_to_num(amap)) / lim
    rgba[..., 3] = np.where(strength > 0, 0.15 + 0.8 * np.sqrt(strength), 0.0)  # 0: transparent; stronger: opaque
    ax.imshow(rgba, interpolation="nearest")
    im = ScalarMappable(norm=norm, cmap="RdBu")
    _outline(ax, expl.roi, "lime", 1.5)
    s = expl.stats
    ax.set_title(f"PdCR  M0={s['M0']:.1f}  red {s['negative_share']:.0f}% / blue {s['positive_share']:.0f}% / "
                 f"none {s['irrelevant_share']:.0f}%", fontsize=8)
    return im


def draw_misure(ax, image2d: np.ndarray, expl: "Explanation"):
    _gray(ax, image2d)
    sal = np.ma.masked_where(expl.map <= 0, expl.map)
    im = ax.imshow(sal, cmap="inferno", vmin=0, vmax=1, alpha=0.8, interpolation="nearest")
    _outline(ax, expl.maps.get("sufficient_region"), "cyan", 1.0)
    s = expl.stats
    ax.set_title(f"MiSuRe  Dice explained {s['dice_explained']:.2f}  ratio {s['perturbation_ratio']:.2f}  "
                 f"dilations {s['dilations']}", fontsize=8)
    return im


def save_demo_figure(path: Path, image2d: np.ndarray, segmentation: np.ndarray, pdcr: "Explanation",
                     misure: "Explanation", title: str) -> Path:
    """Three panels: segmentation + RoI, PdCR map, MiSuRe saliency; written atomically."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    _gray(axes[0], image2d)
    _outline(axes[0], segmentation > 0, "yellow", 0.8)
    _outline(axes[0], pdcr.roi, "lime", 1.5)
    axes[0].set_title("model segmentation (yellow), RoI (green)", fontsize=8)
    im = draw_pdcr(axes[1], image2d, pdcr)
    cb = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    cb.set_label("ATE (Dice points): red supports the RoI, blue works against it", fontsize=7)
    im2 = draw_misure(axes[2], image2d, misure)
    cb2 = fig.colorbar(im2, ax=axes[2], fraction=0.046, pad=0.02)
    cb2.set_label("minimally sufficient saliency (cyan: sufficient region)", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
