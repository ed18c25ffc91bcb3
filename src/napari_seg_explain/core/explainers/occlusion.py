"""Occlusion: replace each block outside the RoI with zeros, the image mean or a blurred copy (a baseline).

The classic occlusion sensitivity (Zeiler & Fergus 2014) with the fills the PdCR paper (Jiang et al. 2026)
argues against: every ``patch``-sized block outside the RoI (2-D or 3-D, :class:`~..perturb.grid.BlockGrid`)
is replaced by a constant (``zero``: 0 in the model's normalised input space; ``mean``: the image's mean per
channel) or by the same block of a Gaussian-blurred copy of the image (``blur``). The effect of a block is
``Dice(perturbed) - Dice(unperturbed)`` in Dice points, PdCR's sign: negative = the block supports the RoI
segmentation (red), positive = it works against it (blue). One deterministic perturbation per block (no
draws, no threshold). Blocks touching the RoI are NaN, as in PdCR. Batched through the
:class:`~napari_seg_explain.core.engine.Engine`; every perturbed image is built on the model's device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Engine
from ..metrics import effect_shares
from ..perturb.grid import BlockGrid, block_index
from ..progress import Progress, drive
from ..score import METRIC_OWN, RoIScore
from .base import ExplainerSpec, ResultLayer, Stat, batch_size_param, check_ranges, param, seed_param, threshold_param
from .common import check_image, check_mask, provenance
from .registry import register

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..results import Explanation

FILLS = ("zero", "mean", "blur")


@dataclass(frozen=True)
class OcclusionConfig:
    """Occlusion parameters (8-pixel blocks as PdCR's default, so the two maps share a grid)."""

    fill: str = param("zero", choices=FILLS, advanced=False, label="Fill",
                      tip="what replaces a block: zero (0 in the model's normalised input), mean (the image's mean "
                          "per channel) or blur (the same block of a Gaussian-blurred copy)")
    patch: int | tuple[int, ...] = param(8, lo=1, hi=256, per_axis=True, label="Patch",
                                         tip="block size in pixels; 3-D: one size, or one per axis")
    sigma: float = param(5.0, lo=0.1, hi=100.0, step=0.5, label="Blur σ (px)",
                         tip="standard deviation of the Gaussian blur in pixels (fill = blur only)")
    threshold: float = threshold_param("probability threshold of a predicted pixel")
    seed: int = seed_param("recorded; occlusion draws nothing at random")
    batch_size: int = batch_size_param("perturbed images per forward pass; 0 = automatic")

    def __post_init__(self) -> None:
        check_ranges(self, "Occlusion")


def gaussian_blur(x: "torch.Tensor", sigma: float) -> "torch.Tensor":
    """Separable Gaussian blur of ``(B, C, *S)`` (any number of spatial axes) on its device; edges replicated."""
    import torch
    import torch.nn.functional as F

    nd = x.ndim - 2
    c = x.shape[1]
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    out = x
    for axis in range(nd):
        radius = max(1, min(int(math.ceil(3 * sigma)), x.shape[2 + axis] - 1))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = len(k)
        pads = [0] * (2 * nd)
        pads[2 * (nd - 1 - axis)] = pads[2 * (nd - 1 - axis) + 1] = radius
        weight = k.reshape(shape).expand(c, *shape[1:]).contiguous()
        out = conv(F.pad(out, pads, mode="replicate"), weight, groups=c)
    return out


def fill_image(x0: "torch.Tensor", fill: str, sigma: float) -> "torch.Tensor":
    """The replacement image ``(1, C, *S)`` for ``fill`` in the normalised input space of ``x0``."""
    import torch

    if fill == "zero":
        return torch.zeros_like(x0)
    if fill == "mean":
        return x0.mean(dim=tuple(range(2, x0.ndim)), keepdim=True).expand_as(x0).contiguous()
    return gaussian_blur(x0, sigma)


def occlusion(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1, *,
              label: np.ndarray | None = None, config: OcclusionConfig = OcclusionConfig(),
              geometry: dict[str, Any] | None = None) -> Generator[Progress, None, "Explanation"]:
    """Generator form of occlusion: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, *S)`` raw intensities (2-D or 3-D as the model); ``roi``: bool ``S``; ``label``: optional
    ground truth (hard Dice vs the label; else soft Dice vs the model's own prediction). ``map``: effect of
    each block in Dice points (negative = supports, red), NaN on the RoI and the blocks touching it.
    """
    import torch

    from ..results import Explanation

    t_start = time.perf_counter()
    cfg = config
    image = check_image(model, image, dims=SPEC_DIMS)
    shape = image.shape[1:]
    roi = check_mask(roi, shape, "RoI").astype(bool)
    label = check_mask(label, shape, "label")
    score = RoIScore(roi, target, labels=label, threshold=cfg.threshold)
    engine = Engine(model, cfg.batch_size)
    dev = model.device
    passes0 = model.forward_passes
    grid = BlockGrid(shape, cfg.patch, roi)
    nb = grid.n_blocks

    with model.eval_mode():
        with torch.inference_mode():
            x0 = model.normalize(torch.as_tensor(image, device=dev)[None])
            probs0 = model.forward_normalized(x0)
            m0 = float(score.prepare(probs0)[0])
            n_classes = int(probs0.shape[1])
            x0p = grid.pad(x0)
            fillp = grid.pad(fill_image(x0, cfg.fill, cfg.sigma))
        corners = torch.as_tensor(grid.corners, dtype=torch.long)

        def build(start: int, stop: int) -> "torch.Tensor":
            c = corners[start:stop].to(dev)
            xb = x0p.expand(len(c), *x0p.shape[1:]).clone()
            rows = torch.arange(len(c), device=dev).reshape([-1] + [1] * c.shape[1])
            idx = block_index(c, grid.sizes)
            xb[(rows, slice(None)) + idx] = fillp[(torch.zeros_like(rows), slice(None)) + idx]
            return grid.crop(xb)

        effect = torch.full((nb,), float("nan"), dtype=torch.float32)

        def partial(n_done: int, d: "torch.Tensor") -> np.ndarray:
            effect[:n_done] = d[:n_done]
            return grid.paint(effect.numpy())

        yield Progress(1, 1 + nb, "occluding")
        if nb:
            d = yield from engine.run(nb, build, lambda p: score(p)[:, 0] - m0, stage="occluding", done0=1,
                                      total=1 + nb, shape=tuple(x0.shape[1:]), partial=partial)
            effect[:] = d
    eff = effect.numpy()
    stats = {"M0": m0, "metric": score.metric, "n_blocks": nb, "fill": cfg.fill,
             "min_effect": float(eff.min()) if nb else 0.0, "max_effect": float(eff.max()) if nb else 0.0,
             **effect_shares(eff), "forward_passes": model.forward_passes - passes0}
    devs = ["Baseline method: one deterministic fill per block (zero, mean or blur) instead of PdCR's draws from "
            "other images; no screening and no threshold τ (every block's Dice change is kept as computed).",
            "Sign as PdCR: Dice(perturbed) - Dice(unperturbed), negative = the block supports the RoI (red).",
            "Fills act on the model's normalised input (zero = 0 there; mean and blur of the normalised image).",
            "Pixels not evaluated (the RoI and blocks touching it) are NaN."]
    if cfg.fill == "blur":
        devs.append(f"Blur: separable Gaussian, σ = {cfg.sigma} px, radius ceil(3σ), edges replicated.")
    if grid.partial_edges:
        devs.append("The image size is not a multiple of the patch: the narrower edge blocks are evaluated too.")
    if score.metric == METRIC_OWN:
        devs.append("No ground-truth label: the reference is the model's own unperturbed prediction and the metric "
                    "is soft Dice on probabilities.")
    if n_classes > 2:
        devs.append(f"Multi-class model ({n_classes} classes): the target class probability is binarised at "
                    f"{cfg.threshold}.")
    params = asdict(cfg) | {"target_class": int(target), "metric": score.metric}
    prov = provenance(model, t_start, stats["forward_passes"], cfg.seed, **engine.describe())
    return Explanation(method="occlusion", map=grid.paint(eff), roi=roi, stats=stats, params=params,
                       provenance=prov, deviations=devs, geometry=dict(geometry or {}))


def explain_occlusion(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1,
                      progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking occlusion; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`occlusion`."""
    return drive(occlusion(model, image, roi, target, **kwargs), progress, cancel)


def estimate(config: OcclusionConfig, roi: np.ndarray) -> int:
    """Forward passes: one per block outside the RoI, plus the unperturbed pass."""
    return 1 + BlockGrid(np.shape(roi), config.patch, np.asarray(roi, bool)).n_blocks


def summary(expl: "Explanation") -> str:
    s = expl.stats
    return (f"Occlusion ({s.get('fill')}) done: M0 = {s.get('M0', 0):.1f}, "
            f"{s.get('negative_share', 0):.0f}% of blocks support the RoI (red), "
            f"{s.get('positive_share', 0):.0f}% work against it (blue)")


SPEC_DIMS = (2, 3)
SPEC = register(ExplainerSpec(
    name="occlusion", title="Occlusion", paper="Zeiler & Fergus 2014", config=OcclusionConfig, run=occlusion,
    needs=frozenset({"roi", "label"}), dims=SPEC_DIMS,
    stats=(Stat("M0", "M0 (RoI Dice)", "{:.1f}"), Stat("negative_share", "supports (red)", "{:.0f}%"),
           Stat("positive_share", "works against (blue)", "{:.0f}%"), Stat("min_effect", "min effect", "{:.2f}"),
           Stat("max_effect", "max effect", "{:.2f}"), Stat("n_blocks", "blocks")),
    layers=(ResultLayer("map", "map", "diverging", colorbar=True, unit="Dice points"),
            ResultLayer("roi", "RoI", "outline")),
    estimate=estimate, summary=summary, stages=(("occluding",),),
    description="Dice change when each block outside the RoI is replaced by zeros, the mean or a blur."))
