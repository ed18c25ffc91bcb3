"""How good is a map? The papers' evaluation metrics, for any attribution map of any method (Qt-free, N-D).

* :func:`evaluate` -- the **attribution score** (PdCR, Jiang et al. 2026): perturb the ``k`` most salient
  blocks of the map together, with PdCR's own perturbation (replacement crops from a pool, ``draws`` seeded
  draws averaged), and report the drop of the RoI Dice in Dice points; higher = the map found what the model
  relies on. The same call gives the **deletion** curve (blocks perturbed in order of decreasing saliency,
  RoI Dice per step; lower AUC = better map) and the **insertion** curve (from the fully perturbed image,
  blocks restored in the same order; higher AUC = better). Every perturbed image of every curve and draw goes
  through the :class:`~napari_seg_explain.core.engine.Engine` in batches, on the model's device.
* :func:`summary_metrics` -- what the explainers already measured (MiSuRe's Dice explained and perturbation
  ratio, PdCR's shares and ATE range, runtime, forward passes), gathered from an ``Explanation`` into one flat
  dict with the same keys for every method (NaN where a method has no such number).

docs/methods.md ("Evaluation metrics") states exactly what is computed and what we chose where the paper
is silent. The curve machinery is in :mod:`.evaluation_curves`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IncompatibleInputError, UserError
from .evaluation_curves import FILLS, block_saliency, curve_items, fill_images, rank_blocks, trapezoid_auc
from .explainers.common import check_image, check_mask
from .progress import Progress, drive

if TYPE_CHECKING:
    import torch

    from .models import SegmentationModel
    from .perturb.grid import BlockGrid
    from .perturb.pools import TilePool
    from .results import Explanation

#: how the map's values order the blocks: ``high`` = larger value is more salient (saliency, gradients, a
#: MiSuRe mask), ``low`` = more negative is more salient (PdCR: negative ATE = supports the RoI), ``abs`` =
#: larger magnitude, either sign; ``auto`` = ``low`` for a PdCR ``Explanation``, else ``high``
DIRECTIONS = ("auto", "high", "low", "abs")

#: the keys of :func:`summary_metrics` (besides ``method``), each a float, NaN when the method has none
SUMMARY_KEYS = ("roi_dice", "dice_explained", "perturbation_ratio", "positive_share", "negative_share",
                "irrelevant_share", "min_ate", "max_ate", "forward_passes", "runtime_s")


def evaluation(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int,
               explanation_map: "np.ndarray | Explanation", *, label: np.ndarray | None = None,
               pool: "TilePool | None" = None, k: int = 10, block: int | tuple[int, ...] = 8, steps: int = 20,
               draws: int = 3, seed: int = 0, batch_size: int = 0, fill: str = "pool", direction: str = "auto",
               threshold: float = 0.5) -> Generator[Progress, None, dict[str, Any]]:
    """Generator form of :func:`evaluate`: yields :class:`Progress` per forward batch, returns the result dict."""
    import torch

    from .engine import Engine
    from .perturb.grid import BlockGrid
    from .score import RoIScore

    t0 = time.perf_counter()
    amap, direction = _map_and_direction(explanation_map, direction)
    image = check_image(model, image)
    shape = image.shape[1:]
    roi = check_mask(roi, shape, "RoI").astype(bool)
    label = None if label is None else check_mask(label, shape, "label")
    if amap.shape != shape:
        raise IncompatibleInputError(f"the map has shape {amap.shape}, the image {shape}: evaluate a map computed "
                                     "on this image (its spatial shape, without channels)")
    _check_params(k, steps, draws, fill)
    warnings_out: list[str] = []
    grid = BlockGrid(shape, block, roi)
    nb = grid.n_blocks
    if nb == 0:
        raise UserError("no block lies outside the RoI: nothing to perturb (draw a smaller RoI or use smaller blocks)")
    saliency = block_saliency(grid, amap, direction)
    if not np.isfinite(saliency).any():
        raise UserError("the map has no finite value outside the RoI: nothing to rank")
    if k > nb:
        warnings_out.append(f"k = {k} is more than the {nb} blocks outside the RoI: all {nb} are perturbed")
    k_used = min(int(k), nb)
    order = rank_blocks(saliency, seed)
    if fill == "pool" and pool is None:
        from .perturb.pools import pool_from_image_itself

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool = pool_from_image_itself(model, image, grid.sizes)
        warnings_out += [str(c.message) for c in caught]
    n_draws = int(draws) if fill == "pool" else 1  # the other fills are deterministic
    passes0 = model.forward_passes
    engine = Engine(model, batch_size)
    score = RoIScore(roi, target, labels=label, threshold=threshold)
    dev = model.device
    with model.eval_mode():
        with torch.inference_mode():
            raw = torch.as_tensor(image, device=dev)[None]
            x0 = model.normalize(raw)
            m0 = float(score.prepare(model.forward_normalized(x0))[0])
            x0p = grid.pad(x0)
            # one fully perturbed image per draw; every step of every curve mixes it with the original
            gen = torch.Generator().manual_seed(int(seed))
            xfill = fill_images(model, grid, raw, x0, x0p, fill, n_draws, pool, gen)
        ranks = _rank_image(grid, order, dev)
        fractions = [i / steps for i in range(steps + 1)]
        counts = [int(round(f * nb)) for f in fractions]
        items, slots = curve_items(n_draws, counts, nb, k_used)
        lo = torch.as_tensor([it[1] for it in items], device=dev)
        hi = torch.as_tensor([it[2] for it in items], device=dev)
        which = torch.as_tensor([it[0] for it in items], device=dev)
        view = [-1] + [1] * (ranks.ndim - 1)

        def build(start: int, stop: int) -> "torch.Tensor":
            perturbed = (ranks >= lo[start:stop].view(view)) & (ranks < hi[start:stop].view(view))
            return grid.crop(torch.where(perturbed, xfill[which[start:stop]], x0p))

        dice = torch.empty(0)
        if items:
            dice = yield from engine.run(len(items), build, lambda p: score(p)[:, 0], stage="evaluating",
                                         shape=tuple(x0.shape[1:]))
    dice_np = dice.numpy().astype(float)

    def value(slot: int | None) -> float:
        return m0 if slot is None else float(dice_np[slot])

    deletion = np.array([[value(slots["deletion"][d][i]) for i in range(len(counts))] for d in range(n_draws)])
    insertion = np.array([[value(slots["insertion"][d][i]) for i in range(len(counts))] for d in range(n_draws)])
    top_k = np.array([value(slots["top_k"][d]) for d in range(n_draws)])
    del_curve, ins_curve = deletion.mean(axis=0), insertion.mean(axis=0)
    del_auc, ins_auc = trapezoid_auc(fractions, del_curve), trapezoid_auc(fractions, ins_curve)
    return {
        "metric": score.metric, "M0": m0, "target": int(target), "direction": direction, "fill": fill,
        "k": k_used, "block": list(grid.sizes), "n_blocks": nb, "steps": int(steps), "draws": n_draws,
        "seed": int(seed), "threshold": float(threshold),
        "attribution_score": m0 - float(top_k.mean()),
        "attribution_score_per_draw": [m0 - float(v) for v in top_k],
        "dice_top_k_perturbed": float(top_k.mean()),
        "fractions": fractions, "blocks_per_step": counts,
        "deletion_curve": del_curve.tolist(), "insertion_curve": ins_curve.tolist(),
        "deletion_auc": del_auc, "insertion_auc": ins_auc, "insertion_minus_deletion_auc": ins_auc - del_auc,
        "deletion_curves_per_draw": deletion.tolist(), "insertion_curves_per_draw": insertion.tolist(),
        "dice_fully_perturbed": float(deletion[:, -1].mean()),
        "perturbed_images": len(items), "forward_passes": model.forward_passes - passes0,
        "seconds": round(time.perf_counter() - t0, 4), "pool": pool.describe() if fill == "pool" else None,
        "batch": engine.describe(), "warnings": warnings_out,
    }


def evaluate(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int,
             explanation_map: "np.ndarray | Explanation", *, label: np.ndarray | None = None,
             pool: "TilePool | None" = None, k: int = 10, block: int | tuple[int, ...] = 8, steps: int = 20,
             draws: int = 3, seed: int = 0, batch_size: int = 0, fill: str = "pool", direction: str = "auto",
             threshold: float = 0.5, progress=None, cancel=None) -> dict[str, Any]:
    """Attribution score, deletion and insertion curves and their AUCs of one map; a JSON-serialisable dict.

    ``image``: ``(C, *S)`` raw intensities (``S`` 2-D or 3-D as the model); ``roi``: bool ``S``; ``target``: the
    class; ``explanation_map``: float ``S`` (NaN allowed: ignored within a block, an all-NaN block ranks last)
    or an :class:`Explanation` (its ``map``). ``label``: hard Dice vs the label (the paper), else soft Dice vs
    the model's own prediction (as PdCR). ``pool``: replacement crops (default: the image itself outside the
    block, with a warning); ``fill``: ``pool`` | ``zero`` | ``mean`` | ``blur`` (model input space).
    ``k``: blocks perturbed for the attribution score; ``block``: block size (one, or one per axis);
    ``steps``: curve points at fractions 0, 1/steps, ..., 1 of the blocks; ``draws``: pool draws averaged;
    ``direction``: see :data:`DIRECTIONS`. Keys: ``attribution_score`` (Dice points), ``deletion_curve``,
    ``insertion_curve`` (Dice points per fraction), ``deletion_auc``, ``insertion_auc`` (trapezoid over
    fractions in [0, 1], Dice points), ``forward_passes``, ``seconds`` and the parameters used.
    """
    return drive(evaluation(model, image, roi, target, explanation_map, label=label, pool=pool, k=k, block=block,
                            steps=steps, draws=draws, seed=seed, batch_size=batch_size, fill=fill,
                            direction=direction, threshold=threshold), progress, cancel)


def summary_metrics(expl: "Explanation") -> dict[str, Any]:
    """The numbers an explainer already reports, under the same keys for every method (NaN when absent).

    ``roi_dice``: the unperturbed RoI Dice in Dice points (PdCR's M0); ``dice_explained``: MiSuRe's hard Dice of
    the prediction on the masked image vs the original mask, in [0, 1] as the paper; ``perturbation_ratio``:
    MiSuRe's non-zero saliency pixels / object pixels; ``positive_share``, ``negative_share``,
    ``irrelevant_share``: PdCR's % of evaluated blocks; ``min_ate``, ``max_ate``: PdCR's ATE range in Dice
    points; ``forward_passes`` and ``runtime_s`` (wall time) of the run. Plus ``method``.
    """
    s, prov = expl.stats or {}, expl.provenance or {}
    source = {"roi_dice": s.get("M0"), "dice_explained": s.get("dice_explained"),
              "perturbation_ratio": s.get("perturbation_ratio"), "positive_share": s.get("positive_share"),
              "negative_share": s.get("negative_share"), "irrelevant_share": s.get("irrelevant_share"),
              "min_ate": s.get("min_ate"), "max_ate": s.get("max_ate"),
              "forward_passes": s.get("forward_passes", prov.get("forward_passes")),
              "runtime_s": prov.get("wall_time_s")}
    return {"method": expl.method} | {key: _number(source[key]) for key in SUMMARY_KEYS}


def _number(v: Any) -> float:
    try:
        return float(v) if v is not None and not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _map_and_direction(explanation_map: Any, direction: str) -> tuple[np.ndarray, str]:
    if direction not in DIRECTIONS:
        raise UserError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    method = getattr(explanation_map, "method", None)
    amap = explanation_map.map if method is not None else explanation_map
    if direction == "auto":
        direction = "low" if method == "pdcr" else "high"
    try:
        arr = np.asarray(amap, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise UserError(f"the map must be a numeric array: {exc}") from exc
    return arr, direction


def _check_params(k: int, steps: int, draws: int, fill: str) -> None:
    for name, v in (("k", k), ("steps", steps), ("draws", draws)):
        if int(v) != v or int(v) < 1:
            raise UserError(f"evaluation parameter {name} must be an integer >= 1 (got {v})")
    if fill not in FILLS:
        raise UserError(f"fill must be one of {', '.join(FILLS)} (got {fill!r})")


def _rank_image(grid: "BlockGrid", order: np.ndarray, device) -> "torch.Tensor":
    """``(1, 1, *padded)`` long tensor: each pixel's block rank (0 = most salient); n_blocks on RoI blocks."""
    import torch

    nb = grid.n_blocks
    cells = np.full(grid.grid_shape, nb, np.int64)
    rank_of = np.empty(nb, np.int64)
    rank_of[order] = np.arange(nb)
    cells[tuple(grid.coords.T)] = rank_of
    for axis, b in enumerate(grid.sizes):
        cells = np.repeat(cells, b, axis=axis)
    return torch.as_tensor(cells, device=device)[None, None]
