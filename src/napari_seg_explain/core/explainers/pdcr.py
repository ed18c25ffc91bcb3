"""PdCR: perturbation-driven causal reasoning (Jiang et al. 2026; authors' code lcmmai/PdCR).

Each ``patch``-sized block (2-D square or 3-D cube) outside the RoI is replaced by random crops of other
images; the average change of the RoI Dice over the draws (ATE, in Dice points) is the block's causal
effect: negative = the block supports the RoI segmentation (red), positive = it works against it (blue),
0 = irrelevant. Screening: ``screen`` draws; a block whose every ``|dDice| < tau`` is irrelevant.
Otherwise ``n`` fresh draws give the ATE, set to 0 when ``|ATE| < tau``.

Unlike the authors' block-by-block loop, many (block, draw) pairs are packed into each forward batch
(:class:`~napari_seg_explain.core.engine.Engine`) and every perturbed image is built on the model's device.
"""

from __future__ import annotations

import time
import warnings
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
from .pdcr_stats import far_distance, far_field, histogram
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
                           tip="exact: every block screened (the paper); hierarchical: blocks of twice the size "
                               "screened first, blocks only inside the relevant ones; auto: hierarchical for 3-D")
    contrast: int = param(-1, lo=-1, hi=63, label="Contrast",
                          tip="perturb only this input channel (one causal map per contrast of a multi-contrast "
                              "model); -1 = every channel, the paper")
    far_distance: float = param(0.0, lo=0.0, hi=1e6, step=1.0, label="Far field (px)",
                                tip="blocks farther than this from the RoI count as far field in the statistics; "
                                    "0 = half the model card's receptive field, else 32 px")

    def __post_init__(self) -> None:
        check_ranges(self, "PdCR")


DEVIATIONS_ALWAYS = [
    "Many (block, draw) pairs are evaluated per forward batch instead of one block at a time "
    "(same estimator, same draws distribution).",
    "Replacement crops are drawn at random positions of the pool images (uniformly with replacement); a folder "
    "of pre-cut block-sized tiles gives the authors' own intervention distribution.",
    "Pixels not evaluated (the RoI and blocks touching it) are NaN, not 0.",
]
PARTIAL_BLOCKS = ("The image size is not a multiple of the patch: the narrower blocks on the edges are evaluated "
                  "too (the authors' grid stops at the last whole block).")


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
    import torch

    from ..perturb.pools import pool_from_image_itself
    from ..results import Explanation

    t_start = time.perf_counter()
    cfg = config
    image = check_image(model, image)
    shape = image.shape[1:]
    if cfg.contrast >= image.shape[0]:
        from ..errors import UserError

        raise UserError(f"PdCR parameter contrast {cfg.contrast} does not exist: the image has {image.shape[0]} "
                        f"channel(s) (0..{image.shape[0] - 1}, or -1 for all)")
    roi = check_mask(roi, shape, "RoI").astype(bool)
    label = check_mask(label, shape, "label")
    warnings_out: list[str] = []
    if pool is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool = pool_from_image_itself(model, image, cfg.patch)
        warnings_out += [str(c.message) for c in caught]
    score = RoIScore(roi, target, labels=label, threshold=cfg.threshold)
    engine = Engine(model, cfg.batch_size, amp=cfg.amp)
    dev = model.device
    b = cfg.patch
    passes0 = model.forward_passes

    with model.eval_mode():
        with torch.inference_mode():
            raw = torch.as_tensor(image, device=dev)[None]
            x0 = model.normalize(raw)
            probs0 = model.forward_normalized(x0, amp=cfg.amp)
            m0 = float(score.prepare(probs0)[0])
            n_classes = int(probs0.shape[1])
        bound = pool.bind(model, raw)
        grid = BlockGrid(shape, b, roi)
        nb = grid.n_blocks
        coarse = _coarse_grid(cfg, grid, roi, bound)
        pad_grid = coarse if coarse is not None else grid
        x0p = pad_grid.pad(x0)
        gen = torch.Generator().manual_seed(cfg.seed)
        in_shape = tuple(x0.shape[1:])

        def builder(g: BlockGrid, ids: "torch.Tensor", draws: "torch.Tensor"):
            corners = torch.as_tensor(g.corners, dtype=torch.long)

            def build(start: int, stop: int) -> "torch.Tensor":
                c = corners[ids[start:stop]].to(dev)
                xb = x0p.expand(len(c), *x0p.shape[1:]).clone()
                rows = torch.arange(len(c), device=dev).reshape([-1] + [1] * c.shape[1])
                crops = bound.crops(draws[start:stop], g.sizes)
                if cfg.contrast < 0:
                    xb[(rows, slice(None)) + block_index(c, g.sizes)] = crops
                else:  # one contrast: the other channels keep their own block
                    xb[(rows, cfg.contrast) + block_index(c, g.sizes)] = crops[..., cfg.contrast]
                return grid.crop(xb)
            return build

        def draws_for(g: BlockGrid, ids: "torch.Tensor") -> "torch.Tensor":
            return bound.draw(len(ids), g.sizes, gen, avoid=torch.as_tensor(g.corners, dtype=torch.long)[ids])

        def delta(p: "torch.Tensor") -> "torch.Tensor":
            return score(p)[:, 0] - m0

        # the map so far: 0 for blocks found irrelevant, NaN for blocks not (yet) estimated
        ate = torch.full((nb,), float("nan"), dtype=torch.float32)
        done = 1

        # stage 0 (hierarchical): screen blocks of twice the size; blocks inside irrelevant ones are irrelevant
        cand = torch.arange(nb)
        if coarse is not None:
            ids0 = torch.arange(coarse.n_blocks).repeat_interleave(cfg.screen)
            d0 = yield from engine.run(len(ids0), builder(coarse, ids0, draws_for(coarse, ids0)), delta,
                                       stage="screening coarse blocks", done0=done,
                                       total=1 + len(ids0) + nb * (cfg.screen + cfg.n), shape=in_shape)
            done += len(ids0)
            relevant = np.zeros(coarse.grid_shape, bool)
            passed0 = (d0.reshape(-1, cfg.screen).abs() >= cfg.tau).any(dim=1).numpy()
            relevant[tuple(coarse.coords[passed0].T)] = True
            relevant |= coarse.touching  # not screened as a whole: their blocks are screened one by one
            keep = relevant[tuple((grid.coords // 2).T)]
            ate[torch.as_tensor(~keep)] = 0.0
            cand = torch.as_tensor(np.flatnonzero(keep))

        # stage 1: screening with S draws per block
        ids1 = cand.repeat_interleave(cfg.screen)
        total = done - 1 + len(ids1)

        def screened(n_done: int, d: "torch.Tensor") -> np.ndarray:
            k = n_done // cfg.screen
            passed = (d[: k * cfg.screen].reshape(k, cfg.screen).abs() >= cfg.tau).any(dim=1)
            ate[cand[:k]] = torch.where(passed, float("nan"), 0.0)
            return grid.paint(ate.numpy())

        d1 = yield from engine.run(len(ids1), builder(grid, ids1, draws_for(grid, ids1)), delta, stage="screening",
                                   done0=done, total=1 + total + len(cand) * cfg.n, shape=in_shape,
                                   partial=screened)
        active = cand[(d1.reshape(len(cand), cfg.screen).abs() >= cfg.tau).any(dim=1)]

        # stage 2: N fresh draws for each block that passed screening
        total += len(active) * cfg.n
        ids2 = active.repeat_interleave(cfg.n)

        def finish(n_done: int, d: "torch.Tensor") -> np.ndarray:
            """Set the ATE of blocks whose N draws are all done; return the map so far (NaN: still to come)."""
            k = n_done // cfg.n
            means = d[: k * cfg.n].reshape(k, cfg.n).mean(dim=1)
            ate[active[:k]] = torch.where(means.abs() < cfg.tau, torch.zeros_like(means), means)
            return grid.paint(ate.numpy())

        if len(ids2):
            yield from engine.run(len(ids2), builder(grid, ids2, draws_for(grid, ids2)), delta, stage="estimating",
                                  done0=1 + total - len(ids2), total=1 + total, shape=in_shape, partial=finish)
        else:
            ate[:] = torch.where(torch.isnan(ate), torch.zeros_like(ate), ate)
            yield Progress(1 + total, 1 + total, "estimating", partial=grid.paint(ate.numpy()))

    ate_np = ate.numpy()
    stats = {"M0": m0, "metric": score.metric, "n_blocks": nb, "n_blocks_screened_in": int(len(active)),
             "screening": "hierarchical" if coarse is not None else "exact",
             "n_blocks_screened": int(len(cand)),
             "min_ate": float(ate_np.min()) if nb else 0.0, "max_ate": float(ate_np.max()) if nb else 0.0,
             **effect_shares(ate_np), "histogram": histogram(ate_np, cfg.tau),
             **far_field(grid, roi, ate_np, far_distance(cfg.far_distance, model.card.receptive_field)),
             "forward_passes": model.forward_passes - passes0}
    devs = list(DEVIATIONS_ALWAYS)
    if grid.partial_edges:
        devs.append(PARTIAL_BLOCKS)
    if score.metric == METRIC_OWN:
        devs.append("No ground-truth label: the RoI reference is the model's own unperturbed prediction and the "
                    "metric is soft Dice on probabilities (the paper uses hard Dice against the label).")
    if pool.avoid_self_overlap:
        devs.append("Replacement crops come from the explained image itself (no other images were given).")
    if n_classes > 2:
        devs.append(f"Multi-class model ({n_classes} classes): the target class probability is binarised at "
                    f"{cfg.threshold} (the authors' sigmoid models), which can differ from the argmax segmentation.")
    if coarse is not None:
        devs.append(f"Hierarchical screening: blocks of {coarse.block} were screened first ({cfg.screen} draws each) "
                    f"and only the {len(cand)} of {nb} blocks inside the relevant ones (or touching the RoI's) were "
                    "screened themselves; the others are irrelevant (0) without their own draws.")
    if cfg.contrast >= 0:
        devs.append(f"Only input channel {cfg.contrast} is perturbed (a per-contrast map); the paper replaces every "
                    "channel of a block.")
    if cfg.amp:
        devs.append("Mixed precision (AMP) on CUDA: an opt-in speed mode, not the model's own precision.")
    params = asdict(cfg) | {"target_class": int(target), "pool": pool.describe(), "metric": score.metric}
    prov = provenance(model, t_start, stats["forward_passes"], cfg.seed, **engine.describe())
    return Explanation(method="pdcr", map=grid.paint(ate_np), roi=roi, stats=stats, params=params,
                       provenance=prov, deviations=devs, geometry=dict(geometry or {}), warnings=warnings_out)


def explain_pdcr(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1,
                 progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking PdCR; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`pdcr`."""
    return drive(pdcr(model, image, roi, target, **kwargs), progress, cancel)


def _coarse_grid(cfg: PdCRConfig, grid: BlockGrid, roi: np.ndarray, pool: "TilePool") -> BlockGrid | None:
    """The grid of blocks twice the size for hierarchical screening, or None (exact mode, 2-D auto, a pool whose
    images are smaller than a coarse block)."""
    mode = cfg.screening if cfg.screening != "auto" else ("hierarchical" if len(grid.shape) == 3 else "exact")
    if mode == "exact":
        return None
    import torch

    sizes = tuple(2 * b for b in grid.sizes)
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
