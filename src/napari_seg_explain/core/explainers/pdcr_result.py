"""PdCR's result for one RoI of a run: stats (shares, histogram, far field, speed), deviations, params."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics import effect_shares
from ..score import METRIC_OWN
from .pdcr_stats import far_distance, far_field, histogram

if TYPE_CHECKING:
    from ..perturb.grid import BlockGrid
    from .pdcr_run import RunInfo

DEVIATIONS_ALWAYS = [
    "Many (block, draw) pairs are evaluated per forward batch instead of one block at a time "
    "(same estimator, same draws distribution).",
    "Replacement crops are drawn at random positions of the pool images (uniformly with replacement); a folder "
    "of pre-cut block-sized tiles gives the authors' own intervention distribution.",
    "Pixels not evaluated (the RoI and blocks touching it) are NaN, not 0.",
]
PARTIAL_BLOCKS = ("The image size is not a multiple of the patch: the narrower blocks on the edges are evaluated "
                  "too (the authors' grid stops at the last whole block).")


def speed_stats(cfg: Any, info: "RunInfo", n_rois: int) -> dict[str, Any]:
    """Forward passes per stage, what adaptive N saved, and when the first whole map existed."""
    out = {"passes_coarse_screening": info.coarse_passes, "passes_screening": info.screening_passes,
           "passes_estimation": info.estimation_passes, "n_rois_in_run": n_rois,
           "first_map_seconds": info.first_map_seconds, "screening_seconds": info.screening_seconds}
    if cfg.adaptive:
        d = np.asarray(info.draws_per_block or [0])
        out |= {"adaptive_passes_exact": info.estimation_passes_exact,
                "adaptive_passes_saved": info.estimation_passes_exact - info.estimation_passes,
                "adaptive_mean_draws": float(d.mean()), "adaptive_blocks_at_n": int((d >= cfg.n).sum())}
    return out


def deviations(cfg: Any, grid: "BlockGrid", coarse: "BlockGrid | None", info: "RunInfo", metric: str, pool: Any,
               n_classes: int, n_rois: int) -> list[str]:
    devs = list(DEVIATIONS_ALWAYS)
    if grid.partial_edges:
        devs.append(PARTIAL_BLOCKS)
    if metric == METRIC_OWN:
        devs.append("No ground-truth label: the RoI reference is the model's own unperturbed prediction and the "
                    "metric is soft Dice on probabilities (the paper uses hard Dice against the label).")
    if pool.avoid_self_overlap:
        devs.append("Replacement crops come from the explained image itself (no other images were given).")
    if n_classes > 2:
        devs.append(f"Multi-class model ({n_classes} classes): the target class probability is binarised at "
                    f"{cfg.threshold} (the authors' sigmoid models), which can differ from the argmax segmentation.")
    if coarse is not None:
        devs.append(f"Hierarchical screening: blocks of {coarse.block} were screened first ({cfg.screen} draws each) "
                    f"and only the {info.n_screened} of {grid.n_blocks} blocks inside the relevant ones (or touching "
                    "the RoI's) were screened themselves; the others are irrelevant (0) without their own draws.")
    if cfg.adaptive:
        devs.append(f"Adaptive N: blocks past screening were sampled in rounds of {cfg.min_draws} draws and stopped "
                    f"once |ATE| + {cfg.adaptive_z:g} SE < tau (irrelevant) or |ATE| - {cfg.adaptive_z:g} SE > tau "
                    "with "
                    f"SE <= {cfg.adaptive_se:g} |ATE| (relevant, value known) or {cfg.adaptive_z:g} SE <= "
                    f"{cfg.adaptive_tol:g} (known to that many Dice points), at most N = {cfg.n}: "
                    f"{info.estimation_passes} of {info.estimation_passes_exact} estimation passes (the paper: N "
                    "draws for every block past screening).")
    if n_rois > 1:
        devs.append(f"{n_rois} RoIs explained from one set of forward passes (every perturbed image scored for each "
                    "RoI; a block inside another RoI is perturbed for this one): this map is the one a run of this "
                    "RoI alone with the same seed gives" + (" except that the coarse blocks were screened for all "
                                                            "the RoIs together." if coarse is not None else "."))
    if cfg.contrast >= 0:
        devs.append(f"Only input channel {cfg.contrast} is perturbed (a per-contrast map); the paper replaces every "
                    "channel of a block.")
    if cfg.amp:
        devs.append("Mixed precision (AMP) on CUDA: an opt-in speed mode, not the model's own precision.")
    return devs


def block_stats(cfg: Any, grid: "BlockGrid", roi: np.ndarray, ate: np.ndarray, m0: float, metric: str,
                passed: int, n_screened: int, screening: str, receptive_field: int | None) -> dict[str, Any]:
    nb = grid.n_blocks
    return {"M0": m0, "metric": metric, "n_blocks": nb, "n_blocks_screened_in": int(passed), "screening": screening,
            "n_blocks_screened": int(n_screened),
            "min_ate": float(ate.min()) if nb else 0.0, "max_ate": float(ate.max()) if nb else 0.0,
            **effect_shares(ate), "histogram": histogram(ate, cfg.tau),
            **far_field(grid, roi, ate, far_distance(cfg.far_distance, receptive_field))}


def params(cfg: Any, target: int, pool: Any, metric: str) -> dict[str, Any]:
    return asdict(cfg) | {"target_class": int(target), "pool": pool.describe(), "metric": metric}
