"""RISE for segmentation: randomised input sampling (Petsiuk, Das, Saenko 2018), scored by the RoI Dice.

``n_masks`` binary grids of ``ceil(S / cell)`` cells (each cell kept with probability ``p_keep``) are
upsampled (bilinear / trilinear) to ``(grid + 1) * cell`` and cropped at a random shift in ``[0, cell)`` per
axis, as in the authors' code. Each masked input is ``x * M + (1 - M) * 0`` in the model's normalised input
space; its score ``d_i`` is the RoI Dice (fraction, 0..1) of the masked prediction vs the reference (hard
Dice vs a label, else soft Dice vs the model's own unperturbed prediction), the adaptation of RISE to
segmentation. Saliency = ``sum_i d_i M_i / (N p_keep)``. All grids and shifts are drawn up front from one
seeded generator, so a seed gives the same map for any batch size; the masks are built on the model's device.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Engine
from ..perturb.grid import block_index, block_sizes
from ..progress import Progress, drive
from ..score import METRIC_OWN, RoIScore
from .base import ExplainerSpec, ResultLayer, Stat, batch_size_param, check_ranges, param, seed_param, threshold_param
from .common import check_image, check_mask, provenance
from .registry import register

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..results import Explanation

#: masks summed into the saliency per step (fixed, so the sum's order does not depend on the batch size)
ACCUMULATE = 32


@dataclass(frozen=True)
class RISEConfig:
    """RISE parameters (paper: N = 8000 for ResNet50, 4000 for VGG16; 1000 here as the default)."""

    n_masks: int = param(1000, lo=1, hi=100000, label="N (masks)", advanced=False,
                         tip="number of random masks (paper: thousands; fewer masks give a noisier map)")
    cell: int | tuple[int, ...] = param(8, lo=1, hi=1024, per_axis=True, label="Cell (px)",
                                        tip="size of a grid cell in pixels (3-D: one size or one per axis)")
    p_keep: float = param(0.5, lo=0.01, hi=0.99, step=0.05, label="p (keep)",
                          tip="probability that a grid cell is kept (paper: 0.5)")
    threshold: float = threshold_param("probability threshold of a predicted pixel")
    seed: int = seed_param("seed of the masks and their shifts")
    batch_size: int = batch_size_param("masked images per forward pass; 0 = automatic")

    def __post_init__(self) -> None:
        check_ranges(self, "RISE")


class MaskSource:
    """The ``n`` RISE masks of one run: grids and shifts drawn up front, masks built on demand on ``device``."""

    def __init__(self, shape: tuple[int, ...], cell: Any, p_keep: float, n: int, seed: int, device: Any) -> None:
        import torch

        self.shape = tuple(shape)
        self.cells = block_sizes(cell, len(shape))
        self.grid = tuple(-(-s // c) for s, c in zip(self.shape, self.cells))
        self.up = tuple((g + 1) * c for g, c in zip(self.grid, self.cells))
        gen = torch.Generator().manual_seed(int(seed))
        self.grids = (torch.rand((n, *self.grid), generator=gen) < p_keep).float()
        self.shifts = torch.stack([torch.randint(0, c, (n,), generator=gen) for c in self.cells], dim=1)
        self.device = device

    def __call__(self, start: int, stop: int) -> "torch.Tensor":
        """Masks ``start:stop`` as ``(n, *S)`` float32 on the device."""
        import torch
        import torch.nn.functional as F

        g = self.grids[start:stop].to(self.device)[:, None]
        mode = "bilinear" if len(self.shape) == 2 else ("trilinear" if len(self.shape) == 3 else "linear")
        up = F.interpolate(g, size=self.up, mode=mode, align_corners=False)[:, 0]
        rows = torch.arange(len(g), device=self.device).reshape([-1] + [1] * len(self.shape))
        return up[(rows,) + block_index(self.shifts[start:stop].to(self.device), self.shape)]


def rise(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1, *,
         label: np.ndarray | None = None, config: RISEConfig = RISEConfig(),
         geometry: dict[str, Any] | None = None) -> Generator[Progress, None, "Explanation"]:
    """Generator form of RISE: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, *S)`` raw intensities (2-D or 3-D as the model); ``roi``: bool ``S``; ``label``: optional
    ground truth. ``map``: saliency (expected RoI Dice when the pixel is kept, 0..1 for a perfect reference).
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
    n = cfg.n_masks
    masks = MaskSource(shape, cfg.cell, cfg.p_keep, n, cfg.seed, dev)

    with model.eval_mode():
        with torch.inference_mode():
            x0 = model.normalize(torch.as_tensor(image, device=dev)[None])
            probs0 = model.forward_normalized(x0)
            m0 = float(score.prepare(probs0)[0])
            n_classes = int(probs0.shape[1])
        yield Progress(1, 1 + n, "masking")
        scores = yield from engine.run(n, lambda a, b: x0 * masks(a, b)[:, None], lambda p: score(p)[:, 0] / 100,
                                       stage="masking", done0=1, total=1 + n, shape=tuple(x0.shape[1:]))
        with torch.inference_mode():
            sal = torch.zeros(shape, device=dev, dtype=torch.float32)
            s_dev = scores.to(dev)
            for a in range(0, n, ACCUMULATE):
                b = min(n, a + ACCUMULATE)
                sal += torch.tensordot(s_dev[a:b], masks(a, b), dims=1)
            sal = (sal / (n * cfg.p_keep)).cpu().numpy().astype(np.float32)
    s_np = scores.numpy()
    stats = {"M0": m0, "metric": score.metric, "n_masks": n, "mean_masked_dice": float(s_np.mean() * 100),
             "std_masked_dice": float(s_np.std() * 100), "max_saliency": float(sal.max()),
             "min_saliency": float(sal.min()), "forward_passes": model.forward_passes - passes0}
    devs = ["Segmentation adaptation: each masked input is scored by the Dice of its prediction inside the RoI "
            "(a fraction, 0..1) instead of a class probability.",
            "Masking x * M + (1 - M) * 0 acts on the model's normalised input (for min-max cards 0 is the image's "
            "minimum).",
            f"Grid cells are {masks.cells} pixels (the paper gives the number of cells per side, s = 7 at 224 px); "
            "the grid has ceil(size / cell) cells per axis, upsampled to (grid + 1) * cell and shifted as the "
            "authors' code does."]
    if n < 4000:
        devs.append(f"N = {n} masks (the paper uses 4000-8000): the map is noisier.")
    if score.metric == METRIC_OWN:
        devs.append("No ground-truth label: the reference is the model's own unperturbed prediction and the score "
                    "is soft Dice on probabilities.")
    if n_classes > 2:
        devs.append(f"Multi-class model ({n_classes} classes): the target class probability is binarised at "
                    f"{cfg.threshold} for hard Dice.")
    params = asdict(cfg) | {"target_class": int(target), "metric": score.metric}
    prov = provenance(model, t_start, stats["forward_passes"], cfg.seed, **engine.describe())
    return Explanation(method="rise", map=sal, roi=roi, stats=stats, params=params, provenance=prov,
                       deviations=devs, geometry=dict(geometry or {}))


def explain_rise(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1,
                 progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking RISE; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`rise`."""
    return drive(rise(model, image, roi, target, **kwargs), progress, cancel)


def estimate(config: RISEConfig, roi: Any) -> int:
    """Forward passes: one per mask, plus the unperturbed pass."""
    return 1 + config.n_masks


def summary(expl: "Explanation") -> str:
    s = expl.stats
    return (f"RISE done: {s.get('n_masks')} masks, M0 = {s.get('M0', 0):.1f}, mean masked Dice "
            f"{s.get('mean_masked_dice', 0):.1f}, saliency {s.get('min_saliency', 0):.2f}..{s.get('max_saliency', 0):.2f}")


SPEC_DIMS = (2, 3)
SPEC = register(ExplainerSpec(
    name="rise", title="RISE", paper="Petsiuk et al. 2018", config=RISEConfig, run=rise,
    needs=frozenset({"roi", "label"}), dims=SPEC_DIMS,
    stats=(Stat("M0", "M0 (RoI Dice)", "{:.1f}"), Stat("mean_masked_dice", "mean masked Dice", "{:.1f}"),
           Stat("max_saliency", "max saliency", "{:.2f}"), Stat("n_masks", "masks")),
    layers=(ResultLayer("map", "saliency", "saliency", colorbar=True), ResultLayer("roi", "RoI", "outline")),
    estimate=estimate, summary=summary, stages=(("masking",),),
    description="Saliency from random masks weighted by the RoI Dice of each masked prediction."))
