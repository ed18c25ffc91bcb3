"""PdCR: perturbation-driven causal reasoning (Jiang et al. 2026; authors' code lcmmai/PdCR).

Each ``patch``-sized block (2-D square or 3-D cube) outside the RoI is replaced by random crops of other
images; the average change of the RoI Dice over the draws (ATE, in Dice points) is the block's causal
effect: negative = the block supports the RoI segmentation (red), positive = it works against it (blue),
0 = irrelevant. Screening: ``screen`` draws; a block whose every ``|dDice| < tau`` is irrelevant.
Otherwise ``n`` fresh draws give the ATE, set to 0 when ``|ATE| < tau``.

Unlike the authors' block-by-block loop, many (block, draw) pairs are packed into each forward batch
(:class:`~napari_seg_explain.core.engine.Engine`) and every perturbed image is built on the model's device.
Opt-in speed modes (the paper's exact mode stays the default in 2-D): hierarchical screening, adaptive N,
several RoIs per run (:func:`pdcr_multi`), a coarse preview map; the stages are in ``pdcr_run.py``, the
result's stats and deviations in ``pdcr_result.py``, map agreement in ``pdcr_agreement.py``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Engine
from ..perturb.grid import BlockGrid, blocks_touching, paint_blocks
from ..progress import Progress, drive
from ..score import RoIScore
from .base import ExplainerSpec, ResultLayer, Stat, batch_size_param, check_ranges, param, seed_param, threshold_param
from .common import check_image, check_mask, provenance
from .pdcr_result import block_stats, deviations, params, speed_stats
from .pdcr_run import run_stages
from .registry import register

if TYPE_CHECKING:
    from ..models import SegmentationModel
    from ..perturb.pools import TilePool
    from ..results import Explanation


@dataclass(frozen=True)
class PdCRConfig:
    """PdCR parameters; defaults are the paper's (S = 3, tau = 0.02 Dice points, N = 50, 8x8 blocks)."""

    patch: int | tuple[int, ...] = param(8, lo=1, hi=256, per_axis=True, label="Patch",
                                         tip="block size in pixels (paper: 8); 3-D: one size, or one per axis "
                                             "(e.g. 4 8 8 for thick slices)")
    screen: int = param(3, lo=1, hi=100, tip="screening draws S (paper: 3)", label="S (screen)")
    tau: float = param(0.02, lo=0.0, hi=100.0, step=0.001, tip="threshold τ in Dice points (paper: 0.02)",
                       label="τ (Dice pts)")
    n: int = param(50, lo=1, hi=10000, tip="draws N for a block that passes screening (paper: 50)",
                   label="N (draws)")
    threshold: float = threshold_param("probability threshold of a predicted pixel (authors: 0.5)")
    seed: int = seed_param("seed of the replacement draws")
    batch_size: int = batch_size_param("perturbed images per forward pass; 0 = automatic (the fastest measured "
                                       "on the first batches)")
    amp: bool = param(False, tip="mixed precision on CUDA (opt-in speed mode; exact mode: off)", label="AMP")
    screening: str = param("auto", choices=("auto", "exact", "hierarchical"), label="Screening",
                           tip="exact: every block screened (the paper); hierarchical: coarse blocks ('coarse "
                               "factor' times the size) screened first, blocks only inside the relevant ones; auto: "
                               "hierarchical for 3-D")
    coarse_factor: int = param(2, lo=2, hi=8, label="Coarse factor",
                               tip="hierarchical screening: coarse blocks are this many blocks wide (2: 16 px for "
                                   "8 px blocks, 4: 32 px)")
    adaptive: bool = param(False, label="Adaptive N",
                           tip="opt-in speed mode: draw in rounds of 'min draws' and stop a block once its ATE's "
                               "standard error settles whether it matters (at most N); off = the paper's N for all")
    min_draws: int = param(10, lo=2, hi=1000, label="Min draws (adaptive)",
                           tip="adaptive N: draws per round, and the fewest a block gets")
    adaptive_z: float = param(2.58, lo=0.0, hi=10.0, step=0.01, label="z (adaptive)",
                              tip="adaptive N: settled when |ATE| ± z·SE lies on one side of τ (2.58: the two-sided "
                                  "1 percent quantile)")
    adaptive_se: float = param(0.2, lo=0.0, hi=10.0, step=0.01, label="Relative SE (adaptive)",
                               tip="adaptive N: a relevant block also needs SE <= this fraction of |ATE| (its value, "
                                   "not only its sign, is known)")
    adaptive_tol: float = param(0.01, lo=0.0, hi=100.0, step=0.001, label="Tolerance (adaptive, Dice pts)",
                                tip="adaptive N: a block also stops once z·SE <= this (its ATE is known to ± this; "
                                    "blocks with an ATE close to τ stop too); 0 = off")
    preview: bool = param(False, label="Preview",
                          tip="stream a coarse map first: blocks not yet estimated show their screening mean "
                              "(off: NaN until estimated)")
    contrast: int = param(-1, lo=-1, hi=63, label="Contrast",
                          tip="perturb only this input channel (one causal map per contrast of a multi-contrast "
                              "model); -1 = every channel, the paper")
    far_distance: float = param(0.0, lo=0.0, hi=1e6, step=1.0, label="Far field (px)",
                                tip="blocks farther than this from the RoI count as far field in the statistics; "
                                    "0 = half the model card's receptive field, else 32 px")

    def __post_init__(self) -> None:
        check_ranges(self, "PdCR")


def pdcr(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1, *,
         pool: "TilePool | None" = None, label: np.ndarray | None = None,
         config: PdCRConfig = PdCRConfig(), geometry: dict[str, Any] | None = None
         ) -> Generator[Progress, None, "Explanation"]:
    """Generator form of PdCR: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, *S)`` raw intensities, ``S`` 2-D or 3-D as the model; ``roi``: bool of shape ``S``;
    ``target``: class index; ``pool``: replacement source (default: the image itself outside the block, with
    a warning); ``label``: shape ``S``, non-zero = the class (paper setting: hard Dice vs the label); without
    it, soft Dice vs the model's own unperturbed prediction. ``Explanation.map`` has shape ``S``.
    """
    out = yield from _run(model, image, [roi], [target], [label], pool, config, geometry, None)
    return out[0]


def pdcr_multi(model: "SegmentationModel", image: np.ndarray, rois: Sequence[np.ndarray],
               targets: int | Sequence[int] = 1, *, labels: Sequence[np.ndarray | None] | None = None,
               pool: "TilePool | None" = None, config: PdCRConfig = PdCRConfig(),
               geometry: dict[str, Any] | None = None, exclude: np.ndarray | None = None,
               roi_names: Sequence[str] | None = None) -> Generator[Progress, None, list["Explanation"]]:
    """PdCR for several RoIs (and classes) from one set of forward passes: one :class:`Explanation` per RoI.

    Every perturbed image is scored for every RoI (:class:`RoIScore`), so K RoIs cost one screening of the
    blocks plus N draws of each block past screening for *some* RoI: at most the union, never the sum. A block
    is perturbed when it lies outside at least one RoI (and outside ``exclude``); each RoI's map is NaN on the
    blocks touching it, as in its own run. A block's draws depend on the seed and where it is alone
    (:meth:`TilePool.draw_keyed`), and adaptive N takes each RoI's ATE where its own test settles, so each
    map equals a one-RoI run of that RoI with the same seed (bit for bit on the CPU; hierarchical screening
    judges coarse blocks for all RoIs together). Partial maps stream RoI 0. ``roi_names``: how errors name
    the RoIs (default "RoI k of K").
    """
    rois = list(rois)
    targets = [int(targets)] * len(rois) if np.isscalar(targets) else list(targets)
    labels = [None] * len(rois) if labels is None else list(labels)
    if not (len(rois) == len(targets) == len(labels) >= 1):
        from ..errors import UserError

        raise UserError("PdCR with several RoIs needs one class and one label (or None) per RoI")
    return (yield from _run(model, image, rois, targets, labels, pool, config, geometry, exclude, roi_names))


def _run(model, image, rois, targets, labels, pool, cfg: PdCRConfig, geometry, exclude, roi_names=None
         ) -> Generator[Progress, None, list["Explanation"]]:
    import torch

    from ..perturb.pools import pool_from_image_itself
    from ..results import Explanation

    t_start = time.perf_counter()
    image = check_image(model, image)
    shape = image.shape[1:]
    if cfg.contrast >= image.shape[0]:
        from ..errors import UserError

        raise UserError(f"PdCR parameter contrast {cfg.contrast} does not exist: the image has {image.shape[0]} "
                        f"channel(s) (0..{image.shape[0] - 1}, or -1 for all)")
    rois = [check_mask(r, shape, "RoI").astype(bool) for r in rois]
    labels = [check_mask(lab, shape, "label") for lab in labels]
    union = np.logical_or.reduce(rois)  # coarse blocks touching any RoI are screened block by block
    excluded = np.zeros(shape, bool) if exclude is None else check_mask(exclude, shape, "excluded region").astype(bool)
    union |= excluded
    # a block is perturbed when it lies outside at least one RoI (and outside ``exclude``)
    touching = [blocks_touching(r, cfg.patch) for r in rois]
    grid = BlockGrid(shape, cfg.patch, excluded | paint_blocks(np.logical_and.reduce(touching), cfg.patch, shape))
    invalid = np.stack([t[tuple(grid.coords.T)] for t in touching])  # (R, nb)
    warnings_out: list[str] = []
    if pool is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool = pool_from_image_itself(model, image, cfg.patch)
        warnings_out += [str(c.message) for c in caught]
    score = RoIScore(rois, targets, labels=labels, threshold=cfg.threshold, names=roi_names)
    engine = Engine(model, cfg.batch_size, amp=cfg.amp)
    passes0 = model.forward_passes

    with model.eval_mode():
        with torch.inference_mode():
            raw = torch.as_tensor(image, device=model.device)[None]
            x0 = model.normalize(raw)
            probs0 = model.forward_normalized(x0, amp=cfg.amp)
            m0 = score.prepare(probs0).float().cpu()
            n_classes = int(probs0.shape[1])
        bound = pool.bind(model, raw)
        coarse = _coarse_grid(cfg, grid, union, bound)
        x0p = (coarse if coarse is not None else grid).pad(x0)

        def delta(p: "torch.Tensor") -> "torch.Tensor":
            return score(p) - m0.to(p.device)

        ate, info = yield from run_stages(cfg, grid, coarse, bound, engine, x0p, delta, invalid, t_start)

    passes = model.forward_passes - passes0
    devs = deviations(cfg, grid, coarse, info, score.metric, pool, n_classes, len(rois))
    speed = speed_stats(cfg, info, len(rois))
    prov = provenance(model, t_start, passes, cfg.seed, **engine.describe())
    out = []
    for r, roi in enumerate(rois):
        own = ~invalid[r]
        grid_r = BlockGrid(shape, cfg.patch, roi | excluded)  # this RoI's blocks: those of a one-RoI run
        a = ate[r].numpy()[own]
        passed = int(info.passed[r].sum()) if info.passed is not None else 0
        n_screened = info.n_screened - int(invalid[r][info.screened].sum())
        stats = block_stats(cfg, grid_r, roi, a, float(m0[r]), score.metrics[r], passed, n_screened,
                            "hierarchical" if coarse is not None else "exact", model.card.receptive_field)
        stats |= speed | {"forward_passes": passes}
        out.append(Explanation(method="pdcr", map=grid_r.paint(a), roi=roi, stats=stats,
                               params=params(cfg, targets[r], pool, score.metrics[r]), provenance=dict(prov),
                               deviations=list(devs), geometry=dict(geometry or {}), warnings=list(warnings_out)))
    return out


def explain_pdcr(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1,
                 progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking PdCR; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`pdcr`."""
    return drive(pdcr(model, image, roi, target, **kwargs), progress, cancel)


def explain_pdcr_multi(model: "SegmentationModel", image: np.ndarray, rois: Sequence[np.ndarray],
                       targets: int | Sequence[int] = 1, progress=None, cancel=None, **kwargs: Any
                       ) -> list["Explanation"]:
    """Blocking :func:`pdcr_multi`: one :class:`Explanation` per RoI from one set of forward passes."""
    return drive(pdcr_multi(model, image, rois, targets, **kwargs), progress, cancel)


def screening_mode(cfg: PdCRConfig, ndim: int) -> str:
    """"exact" or "hierarchical": ``cfg.screening``, with "auto" hierarchical for 3-D images, exact for 2-D."""
    return cfg.screening if cfg.screening != "auto" else ("hierarchical" if ndim == 3 else "exact")


def _coarse_grid(cfg: PdCRConfig, grid: BlockGrid, roi: np.ndarray, pool: "TilePool") -> BlockGrid | None:
    """The grid of blocks ``coarse_factor`` times the size for hierarchical screening, or None (exact mode, 2-D
    auto, a pool whose images are smaller than a coarse block)."""
    if screening_mode(cfg, len(grid.shape)) == "exact":
        return None
    import torch

    sizes = tuple(cfg.coarse_factor * b for b in grid.sizes)
    if bool((pool.sizes < torch.tensor(sizes)).any()):
        return None
    return BlockGrid(grid.shape, sizes, roi)


def estimate(config: PdCRConfig, roi: np.ndarray) -> int:
    """Upper bound of forward passes: every block outside the RoI passes screening."""
    nb = BlockGrid(np.shape(roi), config.patch, np.asarray(roi, bool)).n_blocks
    return 1 + nb * (config.screen + config.n)


def summary(expl: "Explanation") -> str:
    s = expl.stats
    return (f"PdCR done: {s.get('negative_share', 0):.0f}% of blocks support the RoI (red), "
            f"{s.get('positive_share', 0):.0f}% work against it (blue)")


SPEC = register(ExplainerSpec(
    name="pdcr", title="PdCR", paper="Jiang et al. 2026", config=PdCRConfig, run=pdcr,
    needs=frozenset({"roi", "pool", "label"}), dims=(2, 3),
    stats=(Stat("M0", "M0 (RoI Dice)", "{:.1f}"), Stat("negative_share", "supports (red)", "{:.0f}%"),
           Stat("positive_share", "works against (blue)", "{:.0f}%"),
           Stat("irrelevant_share", "irrelevant", "{:.0f}%"), Stat("min_ate", "min ATE", "{:.2f}"),
           Stat("max_ate", "max ATE", "{:.2f}"), Stat("n_blocks", "blocks"),
           Stat("n_blocks_screened_in", "blocks past screening"),
           Stat("far_share", "effect far from the RoI", "{:.0f}%"),
           Stat("far_mean_abs_ate", "mean |ATE| far from the RoI", "{:.2f}")),
    layers=(ResultLayer("map", "map", "diverging", colorbar=True, unit="Dice points"),
            ResultLayer("roi", "RoI", "outline")),
    estimate=estimate, summary=summary,
    stages=(("screening", "estimating"), ("screening coarse blocks", "screening", "estimating")),
    description="ATE of replacing each block outside the RoI with crops of other images (Dice points)."))
